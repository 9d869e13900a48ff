//! Apache Pinot schemas and table configs, through the controller REST API (apis.md §1).
//!
//! Pinot has no bulk read of configs: the controller lists names (`GET /schemas`, `GET /tables`)
//! and returns one config per call. A plan of declared objects therefore GETs exactly those
//! objects (concurrently, a 404 meaning absent). It lists names first when it must see
//! everything (`--prune`), or when the declared objects are more than one round of concurrent
//! GETs ([`PinotProvider::lists_first`]).

mod normalize;

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::kind::{Compare, Effect, Finding, KindInfo, System};
use crate::provider::http::{HttpClient, Response, Tls};
use crate::provider::owner::{Owner, OWNER_KEY};
use crate::provider::section::{self, Section, SectionInfo};
use crate::provider::{
    Answer, Answers, Fetched, OpAction, Operation, Provider, ProviderError, ReadPass, ReadScope,
    RequestCount,
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

const SCHEMAS_PATH: &str = "/schemas";
const TABLES_PATH: &str = "/tables";

fn no_such_kind(kind: &str) -> ProviderError {
    ProviderError::permanent(format!("pinot has no kind {kind}"))
}

fn schema_path(name: &str) -> String {
    format!("{SCHEMAS_PATH}/{}", segment(name))
}

/// `GET /tables/{raw}`, or with `?type=` for one type of it.
fn table_path(raw: &str, kind: Option<&str>) -> String {
    let mut path = format!("{TABLES_PATH}/{}", segment(raw));
    if let Some(kind) = kind {
        path.push_str(&format!("?type={}", kind.to_ascii_lowercase()));
    }
    path
}

/// The names a list answer holds: `GET /schemas` answers an array, `GET /tables`
/// `{"tables": [...]}`; 404 holds none.
fn listed(list: &Answer) -> Vec<String> {
    if list.status != 200 {
        return Vec::new();
    }
    let body = list.json();
    body.as_array()
        .or_else(|| body.get("tables").and_then(Value::as_array))
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect()
}

/// The schemas a read GETs: every listed one with `all`, else the declared ones (less those
/// the list lacks, when it was fetched).
fn schemas_covered(names: &[String], all: bool, list: Option<&Answer>) -> Vec<String> {
    match list {
        Some(list) if all => listed(list),
        Some(list) => {
            let existing: BTreeSet<String> = listed(list).into_iter().collect();
            names
                .iter()
                .filter(|n| existing.contains(*n))
                .cloned()
                .collect()
        }
        None => names.to_vec(),
    }
}

/// The tables a read GETs, raw name → the type wanted (`None`: all of them, one GET for a
/// hybrid table): every listed one with `all`, else the declared ones (less those the list
/// lacks, when it was fetched).
fn tables_wanted(
    names: &[String],
    all: bool,
    list: Option<&Answer>,
) -> BTreeMap<String, Option<String>> {
    let mut wanted: BTreeMap<String, Option<String>> = BTreeMap::new();
    if all {
        for raw in list.map(listed).unwrap_or_default() {
            wanted.insert(raw, None);
        }
        return wanted;
    }
    for (raw, kind) in names.iter().filter_map(|n| split_table_name(n)) {
        wanted
            .entry(raw.to_string())
            .and_modify(|k| {
                if k.as_deref() != Some(kind) {
                    *k = None;
                }
            })
            .or_insert_with(|| Some(kind.to_string()));
    }
    if let Some(list) = list {
        let existing: BTreeSet<String> = listed(list).into_iter().collect();
        wanted.retain(|raw, _| existing.contains(raw));
    }
    wanted
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

    /// A GET of a fetch (see [`HttpClient::answer_in`]); 404 is an answer: no such object.
    async fn answer(&self, pass: &ReadPass, path: &str) -> Result<Answer, ProviderError> {
        self.http
            .answer_in(pass, path, |answer| match answer.status {
                200 | 404 => Ok(()),
                _ => Err(self
                    .http
                    .status_error(&Method::GET, path, &answer.response())),
            })
            .await
    }

    /// Whether to list names before GETting `declared` objects: when they need more than one
    /// round of concurrent GETs, the list's one round trip saves the GET (a 404) of every
    /// absent object, which on a first plan is all of them (2,000 resources: 2 requests
    /// instead of 600); when all exist it costs one round trip more.
    fn lists_first(&self, declared: usize) -> bool {
        declared > self.http.concurrency()
    }

    /// The answer of a list (`GET /schemas` or `GET /tables`), when the read needs it.
    async fn list(
        &self,
        pass: &ReadPass,
        path: &str,
        needed: bool,
    ) -> Result<Option<Answer>, ProviderError> {
        Ok(if needed {
            Some(self.answer(pass, path).await?)
        } else {
            None
        })
    }

    /// The GET answers of `paths`, by path.
    async fn answers(
        &self,
        pass: &ReadPass,
        paths: Vec<String>,
    ) -> Result<Vec<(String, Answer)>, ProviderError> {
        self.http
            .read_each(paths.into_iter().map(|path| async move {
                let answer = self.answer(pass, &path).await?;
                Ok::<_, ProviderError>((path, answer))
            }))
            .await
    }

    async fn fetch_schemas(&self, scope: ReadScope<'_>) -> Result<Answers, ProviderError> {
        let mut answers = Answers::new();
        let needed = scope.all || self.lists_first(scope.names.len());
        if let Some(list) = self.list(scope.pass, SCHEMAS_PATH, needed).await? {
            answers.insert(SCHEMAS_PATH.into(), list);
        }
        // A schema is managed when a managed table uses it (Pinot ties a table to the schema
        // of its raw name, §1.3): schemas have no metadata of their own to carry a marker.
        // Only a prune needs this, so only a full read pays for the table read.
        if scope.all {
            answers.extend(self.fetch_tables(scope).await?);
        }
        let names = schemas_covered(scope.names, scope.all, answers.get(SCHEMAS_PATH));
        let paths = names.iter().map(|name| schema_path(name)).collect();
        answers.extend(self.answers(scope.pass, paths).await?);
        Ok(answers)
    }

    fn observe_schemas(&self, names: &[String], all: bool, answers: &Answers) -> Vec<Observed> {
        let managed_raw: BTreeSet<String> = if all {
            self.observe_tables(names, all, answers)
                .into_iter()
                .filter(|t| t.managed)
                .filter_map(|t| split_table_name(&t.name).map(|(raw, _)| raw.to_string()))
                .collect()
        } else {
            BTreeSet::new()
        };
        schemas_covered(names, all, answers.get(SCHEMAS_PATH))
            .into_iter()
            .filter_map(|name| {
                let schema = answers
                    .get(&schema_path(&name))
                    .filter(|a| a.status == 200)?;
                Some(Observed {
                    spec: canonical_schema(&schema.json()),
                    managed: managed_raw.contains(&name),
                    name,
                    notes: Vec::new(),
                })
            })
            .collect()
    }

    async fn fetch_tables(&self, scope: ReadScope<'_>) -> Result<Answers, ProviderError> {
        let mut answers = Answers::new();
        let declared = tables_wanted(scope.names, false, None).len();
        let needed = scope.all || self.lists_first(declared);
        if let Some(list) = self.list(scope.pass, TABLES_PATH, needed).await? {
            answers.insert(TABLES_PATH.into(), list);
        }
        let wanted = tables_wanted(scope.names, scope.all, answers.get(TABLES_PATH));
        let paths = wanted
            .iter()
            .map(|(raw, kind)| table_path(raw, kind.as_deref()))
            .collect();
        answers.extend(self.answers(scope.pass, paths).await?);
        Ok(answers)
    }

    /// `GET /tables/{raw}[?type=]` answers hold the configs keyed by type.
    fn observe_tables(&self, names: &[String], all: bool, answers: &Answers) -> Vec<Observed> {
        let mut observed = Vec::new();
        for (raw, kind) in tables_wanted(names, all, answers.get(TABLES_PATH)) {
            let Some(answer) = answers
                .get(&table_path(&raw, kind.as_deref()))
                .filter(|a| a.status == 200)
            else {
                continue;
            };
            let body = answer.json();
            let Some(configs) = body.as_object() else {
                continue;
            };
            for (k, config) in configs {
                if !(config.is_object() && (k == normalize::OFFLINE || k == normalize::REALTIME)) {
                    continue;
                }
                let name = format!("{raw}_{k}");
                if !all && !names.contains(&name) {
                    continue;
                }
                let (managed, notes) = self.owner.observe(normalize::owner_marker(config));
                observed.push(Observed {
                    name,
                    managed,
                    spec: canonical_table(config),
                    notes,
                });
            }
        }
        observed
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
        let live = self.read(op.kind, scope).await?;
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
                let tables = self.answer(&ReadPass::default(), &path).await?;
                if tables.status == 200 {
                    let users: Vec<String> = tables
                        .json()
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
        self.fetch(kind, scope)
            .await?
            .into_observed(self, kind, scope.names, scope.all)
    }

    async fn fetch(&self, kind: &str, scope: ReadScope<'_>) -> Result<Fetched, ProviderError> {
        Ok(Fetched::Answers(match kind {
            SCHEMA => self.fetch_schemas(scope).await?,
            TABLE => self.fetch_tables(scope).await?,
            other => return Err(no_such_kind(other)),
        }))
    }

    fn observe(
        &self,
        kind: &str,
        names: &[String],
        all: bool,
        answers: &Answers,
    ) -> Result<Vec<Observed>, ProviderError> {
        match kind {
            SCHEMA => Ok(self.observe_schemas(names, all, answers)),
            TABLE => Ok(self.observe_tables(names, all, answers)),
            other => Err(no_such_kind(other)),
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
