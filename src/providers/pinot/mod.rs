//! Apache Pinot schemas and table configs, through the controller REST API (apis.md §1).
//!
//! Pinot has no bulk read of configs: the controller lists names (`GET /schemas`, `GET /tables`)
//! and returns one config per call. A plan of declared objects therefore GETs exactly those
//! objects (concurrently, a 404 meaning absent). It lists names first when it must see
//! everything (`--prune`), or when the declared objects are more than one round of concurrent
//! GETs ([`PinotProvider::lists_first`]).

mod normalize;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::kind::{Compare, Effect, Finding, KindInfo, System};
use crate::provider::http::{HttpClient, Response, Tls};
use crate::provider::owner::{Owner, OWNER_KEY};
use crate::provider::section::{self, Section, SectionInfo};
use crate::provider::{
    OpAction, Operation, Provider, ProviderError, ReadPass, ReadScope, RequestCount,
};
use crate::resource::{Address, Observed};

pub use normalize::{
    canonical_schema, canonical_table, normalize_desired_schema, normalize_desired_table,
    server_defaults, split_table_name,
};

/// `[pinot]` of the target config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PinotSection {
    url: String,
}

/// `[pinot] url`: the controller.
pub const SECTION: SectionInfo = SectionInfo {
    system: System::Pinot,
    name: "pinot",
    endpoint_key: "url",
    check: |config| Section::<PinotSection>::read(config, &SECTION).map(drop),
    endpoint: |config| section::endpoint(config, &SECTION, |s: &PinotSection| &s.url),
};

pub const SCHEMA: &str = "PinotSchema";
pub const TABLE: &str = "PinotTable";

pub static KINDS: [KindInfo; 2] = [
    KindInfo {
        kind: SCHEMA,
        system: System::Pinot,
        // Schema serialization is fully known (§1.2), so a live column the manifest lacks is a
        // removal, which `findings` refuses unless forced.
        compare: Compare::Exact,
        field_rules: &[],
        sensitive: &[],
        interpolate_spec_file: true,
    },
    KindInfo {
        kind: TABLE,
        system: System::Pinot,
        // Exact after stripping the §1.5 defaults on both sides; see normalize/mod.rs for why.
        compare: Compare::Exact,
        field_rules: &[],
        // Kafka client credentials in `streamConfigs` (`stream.kafka.…sasl.jaas.config`,
        // `…ssl.truststore.password`) and Kinesis keys name a secret: the shared key rule.
        sensitive: &[],
        interpolate_spec_file: true,
    },
];

pub struct PinotProvider {
    http: HttpClient,
    /// Marks a table (in `metadata.customConfigs`) as this tenant's: only these, and the
    /// schemas they use, are ever pruned.
    owner: Owner,
}

/// Percent-encodes a name read from the controller for use as one path segment.
fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl PinotProvider {
    /// A provider sending at most `concurrency` requests at a time (schema and table reads
    /// share the limit).
    pub fn new(
        url: &str,
        concurrency: usize,
        owner: Owner,
        tls: &Tls,
    ) -> Result<Self, ProviderError> {
        Ok(Self {
            http: HttpClient::new(System::Pinot, url, &[], concurrency, tls)?,
            owner,
        })
    }

    /// A GET of a read (see [`HttpClient::get_in`]); 404 is `None`.
    async fn get(&self, pass: &ReadPass, path: &str) -> Result<Arc<Option<Value>>, ProviderError> {
        self.http
            .get_in(pass, path, |response| match response.status {
                200 => Ok(Some(response.body)),
                404 => Ok(None),
                _ => Err(self.http.status_error(&Method::GET, path, &response)),
            })
            .await
    }

    /// `GET /schemas`: every schema name.
    async fn schema_names(&self, pass: &ReadPass) -> Result<Vec<String>, ProviderError> {
        let body = self.get(pass, "/schemas").await?;
        Ok(Option::as_ref(&body)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `GET /tables`: every table's raw name.
    async fn table_names(&self, pass: &ReadPass) -> Result<Vec<String>, ProviderError> {
        let body = self.get(pass, "/tables").await?;
        Ok(Option::as_ref(&body)
            .and_then(|b| b.get("tables"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect())
    }

    /// Whether to list names before GETting `declared` objects: when they need more than one
    /// round of concurrent GETs, the list's one round trip saves the GET (a 404) of every
    /// absent object, which on a first plan is all of them (2,000 resources: 2 requests
    /// instead of 600); when all exist it costs one round trip more.
    fn lists_first(&self, declared: usize) -> bool {
        declared > self.http.concurrency()
    }

    async fn read_schemas(&self, scope: ReadScope<'_>) -> Result<Vec<Observed>, ProviderError> {
        let names = if scope.all {
            self.schema_names(scope.pass).await?
        } else if self.lists_first(scope.names.len()) {
            let existing: BTreeSet<String> =
                self.schema_names(scope.pass).await?.into_iter().collect();
            let mut names = scope.names.to_vec();
            names.retain(|n| existing.contains(n));
            names
        } else {
            scope.names.to_vec()
        };
        // A schema is managed when a managed table uses it (Pinot ties a table to the schema of
        // its raw name, §1.3): schemas have no metadata of their own to carry a marker. Only a
        // prune needs this, so only a full read pays for the table read.
        let managed_raw: BTreeSet<String> = if scope.all {
            self.read_tables(scope)
                .await?
                .into_iter()
                .filter(|t| t.managed)
                .filter_map(|t| split_table_name(&t.name).map(|(raw, _)| raw.to_string()))
                .collect()
        } else {
            BTreeSet::new()
        };
        let schemas: Vec<Option<Observed>> = self
            .http
            .read_each(names.into_iter().map(|name| {
                let managed = managed_raw.contains(&name);
                async move {
                    let body = self
                        .get(scope.pass, &format!("/schemas/{}", segment(&name)))
                        .await?;
                    Ok::<_, ProviderError>(Option::as_ref(&body).map(|schema| Observed {
                        spec: canonical_schema(schema),
                        name,
                        managed,
                        notes: Vec::new(),
                    }))
                }
            }))
            .await?;
        Ok(schemas.into_iter().flatten().collect())
    }

    /// `GET /tables/{raw}[?type=]`: the configs keyed by type, as observed objects.
    async fn read_table(
        &self,
        pass: &ReadPass,
        raw: &str,
        kind: Option<&str>,
    ) -> Result<Vec<Observed>, ProviderError> {
        let mut path = format!("/tables/{}", segment(raw));
        if let Some(kind) = kind {
            path.push_str(&format!("?type={}", kind.to_ascii_lowercase()));
        }
        let body = self.get(pass, &path).await?;
        let Some(configs) = Option::as_ref(&body).and_then(Value::as_object) else {
            return Ok(Vec::new());
        };
        Ok(configs
            .iter()
            .filter(|(k, v)| {
                v.is_object() && (*k == normalize::OFFLINE || *k == normalize::REALTIME)
            })
            .map(|(k, config)| {
                let (managed, notes) = self.owner.observe(normalize::owner_marker(config));
                Observed {
                    name: format!("{raw}_{k}"),
                    managed,
                    spec: canonical_table(config),
                    notes,
                }
            })
            .collect())
    }

    async fn read_tables(&self, scope: ReadScope<'_>) -> Result<Vec<Observed>, ProviderError> {
        // Raw name → the types wanted (`None`: all of them, one GET for a hybrid table).
        // (Owned strings: a borrowed `&'static str` here trips rustc's higher-ranked lifetime
        // check on the `Send` future.)
        let mut wanted: BTreeMap<String, Option<String>> = BTreeMap::new();
        if scope.all {
            for raw in self.table_names(scope.pass).await? {
                wanted.insert(raw, None);
            }
        } else {
            for (raw, kind) in scope.names.iter().filter_map(|n| split_table_name(n)) {
                wanted
                    .entry(raw.to_string())
                    .and_modify(|k| {
                        if k.as_deref() != Some(kind) {
                            *k = None;
                        }
                    })
                    .or_insert_with(|| Some(kind.to_string()));
            }
            if self.lists_first(wanted.len()) {
                let existing: BTreeSet<String> =
                    self.table_names(scope.pass).await?.into_iter().collect();
                wanted.retain(|raw, _| existing.contains(raw));
            }
        }
        let tables: Vec<Vec<Observed>> = self
            .http
            .read_each(wanted.into_iter().map(|(raw, kind)| async move {
                self.read_table(scope.pass, &raw, kind.as_deref()).await
            }))
            .await?;
        Ok(tables
            .into_iter()
            .flatten()
            .filter(|t| scope.all || scope.names.contains(&t.name))
            .collect())
    }

    /// A write whose acceptable answers are 200 and, for a DELETE, 404 (already gone).
    async fn write(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(), ProviderError> {
        let response = self.http.send(method.clone(), path, body).await?;
        match response.status {
            200 => {
                self.warn_unrecognized(&method, path, &response);
                Ok(())
            }
            404 if method == Method::DELETE => Ok(()),
            _ => Err(self.http.status_error(&method, path, &response)),
        }
    }

    /// §1.1: unknown keys are accepted, dropped and echoed back; they would show as a difference
    /// on every plan, so say which ones.
    fn warn_unrecognized(&self, method: &Method, path: &str, response: &Response) {
        let unknown = response.body.get("unrecognizedProperties");
        if let Some(u) = unknown.and_then(Value::as_object).filter(|u| !u.is_empty()) {
            let keys: Vec<&str> = u.keys().map(String::as_str).collect();
            tracing::warn!(
                "pinot {method} {path}: Pinot ignored unknown properties {keys:?}; remove them from the manifest"
            );
        }
    }

    /// The POST that creates `op`'s object. Pinot answers 409 when the name exists: that is
    /// success when the object is exactly what was asked for (an earlier attempt whose answer was
    /// lost created it), and otherwise a conflict that `conflict` explains.
    async fn create(
        &self,
        op: &Operation<'_>,
        path: &str,
        body: &Value,
        conflict: &str,
    ) -> Result<(), ProviderError> {
        let response = self.http.send(Method::POST, path, Some(body)).await?;
        match response.status {
            200 => {
                self.warn_unrecognized(&Method::POST, path, &response);
                Ok(())
            }
            409 if self.exists_as_desired(op).await? => Ok(()),
            409 => Err(ProviderError::permanent(format!(
                "pinot POST {path} returned 409: {} ({conflict})",
                response.message()
            ))),
            _ => Err(self.http.status_error(&Method::POST, path, &response)),
        }
    }

    /// Whether the live object `op` names equals its desired spec, as a plan would compare them
    /// (a table must also carry ofctl's owner marker, or it is someone else's).
    async fn exists_as_desired(&self, op: &Operation<'_>) -> Result<bool, ProviderError> {
        let names = [op.name.to_string()];
        // As the object is now, not as an earlier read of this pass saw it.
        let pass = ReadPass::default();
        let scope = ReadScope {
            names: &names,
            all: false,
            pass: &pass,
        };
        let live = match op.kind {
            SCHEMA => self.read_schemas(scope).await?,
            _ => self.read_tables(scope).await?,
        };
        let (Some(live), Some(desired)) =
            (live.into_iter().find(|o| o.name == op.name), op.desired)
        else {
            return Ok(false);
        };
        let (merged, _) = self.merge_live(op.kind, desired, &live.spec);
        Ok((op.kind == SCHEMA || live.managed) && merged == live.spec)
    }

    async fn apply_schema(&self, op: &Operation<'_>, body: &Value) -> Result<(), ProviderError> {
        let name = segment(op.name);
        match op.action {
            // override=false: an existing schema is a 409, never a silent overwrite of a schema
            // that appeared after the plan was made.
            OpAction::Create => {
                self.create(
                    op,
                    "/schemas?override=false",
                    body,
                    "the schema appeared after planning; re-run plan",
                )
                .await?;
            }
            OpAction::Update => {
                let path = format!("/schemas/{name}?force={}", op.force);
                self.write(Method::PUT, &path, Some(body)).await?;
            }
            OpAction::Delete => {
                // Pinot refuses to delete a schema a REALTIME table uses but not one an OFFLINE
                // table uses (§1.2): check both, so a table is never left without its schema.
                let path = format!("/tables/{name}");
                // As the tables are now, not as this pass's read saw them.
                let tables = self.get(&ReadPass::default(), &path).await?;
                if let Some(tables) = Option::as_ref(&tables) {
                    let users: Vec<String> = tables
                        .as_object()
                        .map(|m| m.keys().map(|k| format!("{}_{k}", op.name)).collect())
                        .unwrap_or_default();
                    if !users.is_empty() {
                        return Err(ProviderError::permanent(format!(
                            "cannot delete schema {}: table(s) {} still use it",
                            op.name,
                            users.join(", ")
                        )));
                    }
                }
                self.write(Method::DELETE, &format!("/schemas/{name}"), None)
                    .await?;
            }
        }
        Ok(())
    }

    async fn apply_table(&self, op: &Operation<'_>, body: &Value) -> Result<(), ProviderError> {
        let (raw, kind) = split_table_name(op.name).ok_or_else(|| {
            ProviderError::permanent(format!("{} is not a table name with type", op.name))
        })?;
        match op.action {
            OpAction::Create => {
                self.create(
                    op,
                    "/tables",
                    &with_owner(body, &self.owner),
                    "the table appeared after planning, or a recent delete has not finished; re-run plan",
                )
                .await?;
            }
            OpAction::Update => {
                let path = format!("/tables/{}?force={}", segment(op.name), op.force);
                self.write(Method::PUT, &path, Some(&with_owner(body, &self.owner)))
                    .await?;
            }
            OpAction::Delete => {
                let path = format!(
                    "/tables/{}?type={}",
                    segment(raw),
                    kind.to_ascii_lowercase()
                );
                self.write(Method::DELETE, &path, None).await?;
            }
        }
        Ok(())
    }
}

/// The config to send: the desired spec plus ofctl's owner marker.
fn with_owner(config: &Value, owner: &Owner) -> Value {
    let mut config = config.clone();
    if let Some(obj) = config.as_object_mut() {
        let meta = obj.entry("metadata").or_insert_with(|| json!({}));
        if !meta.is_object() {
            *meta = json!({});
        }
        let custom = meta
            .as_object_mut()
            .map(|m| m.entry("customConfigs").or_insert_with(|| json!({})));
        if let Some(custom) = custom {
            if !custom.is_object() {
                *custom = json!({});
            }
            custom[OWNER_KEY] = json!(owner.value());
        }
    }
    config
}

#[async_trait]
impl Provider for PinotProvider {
    fn system(&self) -> System {
        System::Pinot
    }

    async fn read(&self, kind: &str, scope: ReadScope<'_>) -> Result<Vec<Observed>, ProviderError> {
        match kind {
            SCHEMA => self.read_schemas(scope).await,
            TABLE => self.read_tables(scope).await,
            other => Err(ProviderError::permanent(format!(
                "pinot has no kind {other}"
            ))),
        }
    }

    fn normalize_desired(&self, kind: &str, name: &str, spec: &Value) -> Result<Value, String> {
        match kind {
            SCHEMA => normalize_desired_schema(name, spec),
            _ => normalize_desired_table(name, spec),
        }
    }

    fn merge_live(&self, kind: &str, desired: &Value, live: &Value) -> (Value, Vec<String>) {
        let mut merged = desired.clone();
        let mut notes = Vec::new();
        if kind == SCHEMA {
            for column in normalize::keep_legacy_boolean_columns(&mut merged, live) {
                notes.push(format!(
                    "column {column} stays STRING: Pinot keeps a legacy STRING column declared BOOLEAN as STRING"
                ));
            }
        } else {
            normalize::adopt_server_zeroes(&mut merged, live);
        }
        (merged, notes)
    }

    fn findings(&self, kind: &str, desired: &Value, live: &Value) -> Vec<Finding> {
        let reasons = match kind {
            SCHEMA => normalize::schema_incompatibilities(desired, live),
            _ => normalize::table_incompatibilities(desired, live),
        };
        reasons
            .into_iter()
            .map(|reason| Finding {
                effect: Effect::Block,
                reason,
            })
            .collect()
    }

    fn dependencies(&self, kind: &str, name: &str, spec: &Value) -> Vec<Address> {
        if kind != TABLE {
            return Vec::new();
        }
        let mut deps = Vec::new();
        if let Some((raw, _)) = split_table_name(name) {
            deps.push(Address::new(SCHEMA, raw));
        }
        deps.extend(
            normalize::kafka_topics(spec)
                .into_iter()
                .map(|t| Address::new("KafkaTopic", t)),
        );
        deps
    }

    async fn apply(&self, op: Operation<'_>) -> Result<(), ProviderError> {
        let empty = json!({});
        let body = op.desired.unwrap_or(&empty);
        match op.kind {
            SCHEMA => self.apply_schema(&op, body).await,
            _ => self.apply_table(&op, body).await,
        }
    }

    fn requests(&self) -> RequestCount {
        self.http.requests()
    }
}
