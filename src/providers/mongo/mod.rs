//! Platform state in MongoDB (openframe.md §6–9, §12): integrated tools, tool agents, the
//! client configuration, the cluster release version and the agent registration secret,
//! written exactly as the platform's Spring Data documents (collection, `_id`, field names,
//! `_class`), with update messages published once per real change over NATS JetStream.
//!
//! Rules the platform applied in code are data here: `merge_live` keeps what the manifest
//! does not decide (a release agent's version, the client version) and says so in the plan;
//! the publish bookkeeping (`publishState`) is hidden from the diff except when an update was
//! written but never published, which shows as `publish: pending` until an apply repairs it.

mod crypto;
mod document;
pub use document::{never_published, publish_attempts, publish_retry_due, ENABLED};
pub use publish::pending_state;
mod publish;
pub mod tools;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, Bson, Document};
use mongodb::options::{ClientOptions, FindOptions};
use mongodb::{Collection, Database};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::OnceCell;

use crate::config::{ConfigError, TargetConfig};
use crate::kind::{Compare, KindInfo, System};
use crate::provider::section::{Section, SectionInfo};
use crate::provider::shared;
use crate::provider::{
    OpAction, Operation, Provider, ProviderError, ReadScope, RequestCount, RequestCounter,
};
use crate::resource::{Address, Observed, Resource};
use crypto::{generate_secret, EncryptionKey};
use document::{PUBLISH_MARKER, PUBLISH_PENDING};
use publish::{agent_message, agent_subject, client_message, CLIENT_SUBJECT};

pub const TOOL: &str = "IntegratedTool";
pub const AGENT: &str = "ToolAgent";
pub const CLIENT: &str = "ClientConfiguration";
pub const RELEASE: &str = "ReleaseVersion";
pub const SECRET: &str = "RegistrationSecret";

/// Collections at the reference commit (openframe.md §6, §7, §8, §12).
pub const TOOLS_COLLECTION: &str = "integrated_tools";
pub const AGENTS_COLLECTION: &str = "integrated_tool_agents";
pub const CLIENT_COLLECTION: &str = "openframe_client_configuration";
pub const RELEASES_COLLECTION: &str = "release_versions";
pub const SECRETS_COLLECTION: &str = "agent_registration_secrets";

// Spring Data's `_class` type hints: the document classes under
// `com.openframe.data.document.{tool,toolagent,clientconfiguration,version,agent}` (openframe.md
// §0). The packages are from the source listing; the class names are an *inference* from the
// collection names and the services that use them (IntegratedToolService,
// IntegratedToolAgentService, OpenFrameClientConfigurationService, ReleaseVersionService,
// AgentRegistrationSecretManagementService). Spring reads a document whatever its `_class`
// when the type is known from the repository, so a wrong guess degrades nothing.
pub const TOOL_CLASS: &str = "com.openframe.data.document.tool.IntegratedTool";
pub const AGENT_CLASS: &str = "com.openframe.data.document.toolagent.IntegratedToolAgent";
pub const CLIENT_CLASS: &str =
    "com.openframe.data.document.clientconfiguration.OpenFrameClientConfiguration";
pub const RELEASE_CLASS: &str = "com.openframe.data.document.version.ReleaseVersion";
pub const SECRET_CLASS: &str = "com.openframe.data.document.agent.AgentRegistrationSecret";

/// The singletons' names: the client configuration's `_id` is always `default` (§8); the
/// release version and the secret have one document each, named in the manifest by convention.
pub const CLIENT_ID: &str = "default";
pub const RELEASE_NAME: &str = "cluster";

/// The platform's streams that capture the update subjects (openframe.md §4, §9).
const TOOL_UPDATE_STREAM: &str = "TOOL_UPDATE";
const CLIENT_UPDATE_STREAM: &str = "CLIENT_UPDATE";

const TIMEOUT: Duration = Duration::from_secs(5);

/// `[mongo]` of the target config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MongoSection {
    uri: String,
    database: Option<String>,
    /// The platform's `security.encryption.password` and `.salt`, which encrypt the agent
    /// registration secret (openframe.md §12).
    encryption_password: Option<String>,
    encryption_salt: Option<String>,
}

/// `[mongo] uri`: the platform database's server (a secret: it may hold a password).
pub const SECTION: SectionInfo = SectionInfo {
    system: System::Mongo,
    name: "mongo",
    endpoint_key: "uri",
    check: |config| {
        let Some(mongo) = Section::<MongoSection>::read(config, &SECTION)? else {
            return Ok(());
        };
        let fields = &mongo.fields;
        let encryption = [
            (
                "encryption_password",
                &fields.encryption_password,
                "OFCTL_ENCRYPTION_PASSWORD",
            ),
            (
                "encryption_salt",
                &fields.encryption_salt,
                "OFCTL_ENCRYPTION_SALT",
            ),
        ];
        for (key, value, hint) in encryption {
            if let Some(value) = value {
                mongo.refuse_plaintext(key, value, hint)?;
            }
        }
        mongo.refuse_uri_password("uri", &fields.uri)
    },
    endpoint: |config| database_address(config).map(|(uri, _)| uri),
};

/// Where the platform database is: `[mongo] uri`, resolved, and `database` (see
/// [`open_database`]).
pub fn database_address(config: &TargetConfig) -> Result<(String, Option<String>), ConfigError> {
    let mongo = Section::<MongoSection>::require(config, &SECTION)?;
    let uri = mongo.resolve_secret("uri", &mongo.fields.uri)?;
    Ok((uri, mongo.fields.database))
}

/// `(password, salt)` for the registration secret, both secret; `None` unless both are set.
fn encryption_settings(
    mongo: &Section<'_, MongoSection>,
) -> Option<Result<(String, String), ConfigError>> {
    let fields = &mongo.fields;
    let (password, salt) = (
        fields.encryption_password.as_ref()?,
        fields.encryption_salt.as_ref()?,
    );
    Some((|| {
        Ok((
            mongo.resolve_secret("encryption_password", password)?,
            mongo.resolve_secret("encryption_salt", salt)?,
        ))
    })())
}

/// Synthetic field on the live ReleaseVersion: documents that follow the release version but
/// do not carry it yet (or whose update is unpublished). The manifest never has it.
const FOLLOWERS_MARKER: &str = "followersPending";

const fn kind(kind: &'static str, interpolate: bool) -> KindInfo {
    KindInfo {
        kind,
        system: System::Mongo,
        // The stored document is the whole manifest body: a field absent from the manifest is
        // removed (the platform's save is a full replace).
        compare: Compare::Exact,
        field_rules: &[],
        // Secrets are named by their keys (a tool's `credentials`, the connector configs'
        // passwords): the key rule every kind shares.
        sensitive: &[],
        interpolate_spec_file: interpolate,
    }
}

pub static KINDS: [KindInfo; 5] = [
    // Tool bodies carry hosts and credentials as placeholders to resolve. Credentials are
    // stored in clear by the platform (§15.7) and must never be printed. Secret values inside
    // the connector list (which diffs whole) are registered by key and masked wherever printed.
    kind(TOOL, true),
    // Agent and client files hold `${client.serverUrl}`-style strings that the device-side
    // client resolves: they are data, stored verbatim (openframe.md, Pitfalls).
    kind(AGENT, false),
    kind(CLIENT, false),
    kind(RELEASE, true),
    kind(SECRET, true),
];

/// The NATS provider's stream kind: publishing needs the platform's streams to exist first.
/// Another provider's kind is named, never imported (the registry test checks the name).
pub const STREAM_KIND: &str = "NatsStream";

/// Extra resources a manifest resource stands for: a tool's connectors (see
/// [`tools::connector_resources`]).
pub fn expand(resource: &Resource) -> Result<Vec<Resource>, (String, String)> {
    if resource.address.kind != TOOL {
        return Ok(Vec::new());
    }
    tools::connector_resources(resource)
}

pub struct MongoProvider {
    uri: String,
    database: Option<String>,
    /// Shared with every provider of the process that uses the same URI and database.
    db: Arc<OnceCell<Database>>,
    /// NATS URL for publishing, or why there is none (only an error when a publish is due).
    nats_url: Result<String, String>,
    /// Shared like `db`, per NATS URL.
    nats: Arc<OnceCell<async_nats::jetstream::Context>>,
    /// The platform's encryption settings, or why they are unusable (only an error when a
    /// registration secret must be created).
    encryption: Result<EncryptionKey, String>,
    counter: RequestCounter,
    /// Retries of an unpublished update before giving up (`[jobs.publish_fallback]
    /// max_attempts`, the platform's maxPublishAttempts).
    max_publish_attempts: i64,
}

/// The driver's server-selection error dumps its whole topology description; an operator
/// needs the address and why it did not answer.
fn server_selection_summary(message: &str) -> Option<String> {
    let after = |key: &str| message.split_once(key).map(|(_, rest)| rest);
    let address = after("Address: ")?.split([',', ' ']).next()?;
    let reason = after("Error: ")
        .map(|rest| rest.split(", labels").next().unwrap_or(rest))
        .map(|r| r.trim_start_matches("Kind: ").trim())
        .unwrap_or("no answer");
    Some(format!(
        "no MongoDB server answered at {address} within {} s ({reason})",
        TIMEOUT.as_secs()
    ))
}

fn transient_or_permanent(what: &str, e: &mongodb::error::Error) -> ProviderError {
    use mongodb::error::ErrorKind as K;
    let message = match &*e.kind {
        K::ServerSelection { message, .. } => server_selection_summary(message)
            .map(|m| format!("{what}: {m}"))
            .unwrap_or_else(|| format!("{what}: {e}")),
        _ => format!("{what}: {e}"),
    };
    match *e.kind {
        K::ServerSelection { .. } | K::Io(_) | K::ConnectionPoolCleared { .. } => {
            ProviderError::transient(message)
        }
        _ if e.contains_label("RetryableWriteError")
            || e.contains_label("TransientTransactionError") =>
        {
            ProviderError::transient(message)
        }
        _ => ProviderError::permanent(message),
    }
}

fn object(value: Option<&Value>) -> Map<String, Value> {
    value
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// The platform database: `[mongo] database`, else the URI's path, else `openframe`.
pub async fn open_database(uri: &str, database: Option<String>) -> Result<Database, ProviderError> {
    let mut options = ClientOptions::parse(uri)
        .await
        .map_err(|e| ProviderError::permanent(format!("invalid [mongo] uri: {e}")))?;
    options.app_name = Some("ofctl".into());
    options.connect_timeout = Some(TIMEOUT);
    options.server_selection_timeout = Some(TIMEOUT);
    let name = database
        .or_else(|| options.default_database.clone())
        .unwrap_or_else(|| "openframe".into());
    let client = mongodb::Client::with_options(options)
        .map_err(|e| transient_or_permanent("cannot create the Mongo client", &e))?;
    Ok(client.database(&name))
}

fn is_release_agent(spec: &Value) -> bool {
    spec.get("releaseVersion") == Some(&Value::Bool(true))
}

impl MongoProvider {
    /// The provider of `[mongo]`, publishing to `nats_url` (`[nats] url`, which the registry
    /// reads: only a publish fails without it).
    pub fn new(
        config: &TargetConfig,
        nats_url: Result<String, ConfigError>,
    ) -> Result<Self, ConfigError> {
        let mongo = Section::<MongoSection>::require(config, &SECTION)?;
        let uri = mongo.resolve_secret("uri", &mongo.fields.uri)?;
        let nats_url = nats_url.map_err(|e| format!("publishing update messages needs NATS: {e}"));
        let encryption = match encryption_settings(&mongo) {
            None => Err("creating the registration secret needs `[mongo] encryption_password` and `encryption_salt` (the platform's security.encryption.password and .salt) in the target config".to_string()),
            Some(Err(e)) => Err(e.to_string()),
            Some(Ok((password, salt))) => EncryptionKey::derive(&password, &salt).map_err(|e| e.to_string()),
        };
        let database = mongo.fields.database;
        let db = shared::lazy(&format!("{uri}#{}", database.as_deref().unwrap_or("")));
        let nats = shared::lazy(nats_url.as_deref().unwrap_or(""));
        Ok(Self {
            uri,
            database,
            db,
            nats_url,
            nats,
            encryption,
            max_publish_attempts: i64::from(config.jobs().publish_fallback.max_attempts),
            counter: RequestCounter::default(),
        })
    }

    async fn db(&self) -> Result<&Database, ProviderError> {
        self.db
            .get_or_try_init(|| open_database(&self.uri, self.database.clone()))
            .await
    }

    async fn collection(&self, name: &str) -> Result<Collection<Document>, ProviderError> {
        Ok(self.db().await?.collection(name))
    }

    async fn find(
        &self,
        collection: &str,
        filter: Document,
        options: Option<FindOptions>,
    ) -> Result<Vec<Document>, ProviderError> {
        let coll = self.collection(collection).await?;
        self.counter.read();
        let what = format!("find in {collection}");
        let cursor = coll
            .find(filter)
            .with_options(options)
            .await
            .map_err(|e| transient_or_permanent(&what, &e))?;
        cursor
            .try_collect()
            .await
            .map_err(|e| transient_or_permanent(&what, &e))
    }

    async fn find_one(
        &self,
        collection: &str,
        id: &Bson,
    ) -> Result<Option<Document>, ProviderError> {
        Ok(self
            .find(collection, doc! {"_id": id.clone()}, None)
            .await?
            .into_iter()
            .next())
    }

    async fn write<F, T>(&self, what: &str, op: F) -> Result<T, ProviderError>
    where
        F: std::future::IntoFuture<Output = mongodb::error::Result<T>>,
    {
        self.counter.write();
        op.await.map_err(|e| {
            let error = transient_or_permanent(what, &e);
            // The connection broke during the write: the server may have carried it out.
            if matches!(*e.kind, mongodb::error::ErrorKind::Io(_)) {
                ProviderError::unanswered(error.message)
            } else {
                error
            }
        })
    }

    async fn insert(&self, collection: &str, doc: Document) -> Result<(), ProviderError> {
        let coll = self.collection(collection).await?;
        self.write(&format!("insert into {collection}"), coll.insert_one(doc))
            .await
            .map(drop)
    }

    async fn replace(&self, collection: &str, doc: Document) -> Result<(), ProviderError> {
        let coll = self.collection(collection).await?;
        let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
        self.write(
            &format!("replace in {collection}"),
            coll.replace_one(doc! {"_id": id}, doc).upsert(true),
        )
        .await
        .map(drop)
    }

    async fn set(
        &self,
        collection: &str,
        id: &Bson,
        fields: Document,
    ) -> Result<(), ProviderError> {
        let coll = self.collection(collection).await?;
        self.write(
            &format!("update in {collection}"),
            coll.update_one(doc! {"_id": id.clone()}, doc! {"$set": fields}),
        )
        .await
        .map(drop)
    }

    /// The first release version document, as the platform reads it
    /// (`findFirstByOrderByCreatedAtAsc`).
    async fn release_document(&self) -> Result<Option<Document>, ProviderError> {
        let options = FindOptions::builder()
            .sort(doc! {"createdAt": 1})
            .limit(1)
            .build();
        Ok(self
            .find(RELEASES_COLLECTION, doc! {}, Some(options))
            .await?
            .into_iter()
            .next())
    }

    async fn stored_release_version(&self) -> Result<Option<String>, ProviderError> {
        Ok(self
            .release_document()
            .await?
            .and_then(|d| d.get_str("version").ok().map(str::to_string)))
    }

    async fn jetstream(&self) -> Result<&async_nats::jetstream::Context, ProviderError> {
        let url = self
            .nats_url
            .as_ref()
            .map_err(|e| ProviderError::permanent(e.clone()))?;
        self.nats
            .get_or_try_init(|| async {
                let options = async_nats::ConnectOptions::new();
                let client = crate::provider::nats_client::with_url_credentials(options, url)
                    .connection_timeout(Duration::from_secs(3))
                    .request_timeout(Some(TIMEOUT))
                    .connect(url.as_str())
                    .await
                    .map_err(|e| {
                        ProviderError::transient(format!(
                            "cannot connect to NATS at {}: {e}",
                            crate::redact::redact(url)
                        ))
                    })?;
                Ok(async_nats::jetstream::new(client))
            })
            .await
    }

    /// True when the last message on `subject` is this very message (a previous run published
    /// it and stopped before recording it).
    async fn already_published(&self, subject: &str, msg_id: &str) -> Result<bool, ProviderError> {
        let js = self.jetstream().await?;
        self.counter.read();
        let Ok(stream) = js.stream_by_subject(subject).await else {
            return Ok(false);
        };
        let Ok(stream) = js.get_stream_no_info(&stream).await else {
            return Ok(false);
        };
        self.counter.read();
        Ok(
            match stream.get_last_raw_message_by_subject(subject).await {
                Ok(m) => m
                    .headers
                    .get(async_nats::header::NATS_MESSAGE_ID)
                    .is_some_and(|v| v.as_str() == msg_id),
                Err(_) => false,
            },
        )
    }

    async fn publish_message(
        &self,
        subject: &str,
        payload: &Value,
        msg_id: &str,
    ) -> Result<(), ProviderError> {
        use async_nats::jetstream::context::PublishErrorKind as K;
        let js = self.jetstream().await?;
        let mut headers = async_nats::HeaderMap::new();
        // The platform sent no id; one here lets JetStream drop a retried duplicate.
        headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
        let body = serde_json::to_vec(payload).unwrap_or_default();
        self.counter.write();
        let map = |e: async_nats::jetstream::context::PublishError| match e.kind() {
            K::StreamNotFound => ProviderError::permanent(format!(
                "no JetStream stream captures {subject} (declare the platform's {} stream)",
                if subject == CLIENT_SUBJECT {
                    CLIENT_UPDATE_STREAM
                } else {
                    TOOL_UPDATE_STREAM
                }
            )),
            _ => ProviderError::transient(format!("publish to {subject}: {e}")),
        };
        js.publish_with_headers(subject.to_string(), headers, body.into())
            .await
            .map_err(map)?
            .await
            .map_err(map)?;
        Ok(())
    }

    /// Pending → publish → published for one document (openframe.md §9 bookkeeping).
    /// `doc` is the document as it will be stored; `current` what is stored now.
    async fn write_and_publish(
        &self,
        collection: &str,
        mut doc: Document,
        current: Option<&Document>,
        subject: &str,
        payload: Value,
    ) -> Result<(), ProviderError> {
        let repairing = current.is_some_and(document::publish_pending);
        let state = publish::pending_state(current);
        let msg_id = publish::message_id(subject, &payload, &state);
        doc.insert(document::PUBLISH_STATE, state);
        let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
        self.replace(collection, doc).await?;
        if !(repairing && self.already_published(subject, &msg_id).await?) {
            self.publish_message(subject, &payload, &msg_id).await?;
        }
        self.set(
            collection,
            &id,
            doc! {"publishState.published": true, "publishState.publishedAt": document::now()},
        )
        .await
    }

    /// Stores an agent or the client configuration: through the publish bookkeeping when a
    /// message is due or the stored one is still pending, else as a plain full replace that
    /// keeps the stored publishState.
    async fn store_followed(
        &self,
        collection: &str,
        doc: Document,
        current: Option<&Document>,
        publish_due: bool,
        subject: &str,
        payload: Value,
    ) -> Result<(), ProviderError> {
        let pending = current.is_some_and(document::publish_pending);
        if publish_due || pending {
            return self
                .write_and_publish(collection, doc, current, subject, payload)
                .await;
        }
        let mut doc = doc;
        if let Some(state) = current.and_then(|c| c.get(document::PUBLISH_STATE)) {
            doc.insert(document::PUBLISH_STATE, state.clone());
        }
        self.replace(collection, doc).await
    }

    // ---------------------------------------------------------------- reads

    async fn read_by_id(
        &self,
        collection: &str,
        scope: ReadScope<'_>,
    ) -> Result<Vec<Observed>, ProviderError> {
        let filter = if scope.all {
            doc! {}
        } else {
            doc! {"_id": {"$in": scope.names.to_vec()}}
        };
        Ok(self
            .find(collection, filter, None)
            .await?
            .iter()
            .filter_map(|d| {
                let gave_up = document::publish_pending(d)
                    && !document::publish_retryable(d, self.max_publish_attempts);
                Some(Observed {
                    name: document::id_string(d)?,
                    spec: document::live_spec(d, self.max_publish_attempts),
                    // Platform documents carry no ownership marker ofctl could add without
                    // changing them, so nothing here is ever pruned.
                    managed: false,
                    notes: gave_up
                        .then(|| {
                            format!(
                                "its update message was never published: gave up after {} retries ([jobs.publish_fallback] max_attempts); its next change publishes again",
                                document::publish_attempts(d)
                            )
                        })
                        .into_iter()
                        .collect(),
                })
            })
            .collect())
    }

    /// The release version plus the documents that follow it and are out of step.
    async fn read_release(&self, scope: ReadScope<'_>) -> Result<Vec<Observed>, ProviderError> {
        let Some(release) = self.release_document().await? else {
            return Ok(Vec::new());
        };
        let version = release.get_str("version").unwrap_or_default().to_string();
        let mut pending = Vec::new();
        let out_of_step = |d: &Document| {
            let v = d.get_str("version").unwrap_or_default();
            if v != version {
                Some(format!(
                    "version {}",
                    if v.is_empty() { "(unset)" } else { v }
                ))
            } else if document::publish_retry_due(d, self.max_publish_attempts) {
                Some("publish pending".to_string())
            } else {
                None
            }
        };
        for d in self
            .find(CLIENT_COLLECTION, doc! {"_id": CLIENT_ID}, None)
            .await?
        {
            if let Some(why) = out_of_step(&d) {
                pending.push(format!("{CLIENT}/{CLIENT_ID}: {why}"));
            }
        }
        for d in self
            .find(AGENTS_COLLECTION, doc! {"releaseVersion": true}, None)
            .await?
        {
            if let (Some(id), Some(why)) = (document::id_string(&d), out_of_step(&d)) {
                pending.push(format!("{AGENT}/{id}: {why}"));
            }
        }
        let mut spec = Map::new();
        spec.insert("version".into(), Value::String(version));
        if !pending.is_empty() {
            spec.insert(
                FOLLOWERS_MARKER.into(),
                Value::Array(pending.into_iter().map(Value::String).collect()),
            );
        }
        let name = scope
            .names
            .first()
            .cloned()
            .unwrap_or_else(|| RELEASE_NAME.to_string());
        Ok(vec![Observed {
            name,
            spec: Value::Object(spec),
            managed: false,
            notes: Vec::new(),
        }])
    }

    // ---------------------------------------------------------------- applies

    async fn apply_tool(&self, op: Operation<'_>) -> Result<(), ProviderError> {
        let doc = document::build(
            Bson::String(op.name.to_string()),
            op.desired.unwrap_or(&Value::Null),
            TOOL_CLASS,
        );
        match op.action {
            // The controller's save is a full replace (openframe.md §6).
            OpAction::Create => self.insert(TOOLS_COLLECTION, doc).await,
            OpAction::Update => self.replace(TOOLS_COLLECTION, doc).await,
            OpAction::Delete => Err(not_deleted(op)),
        }
    }

    async fn apply_agent(&self, op: Operation<'_>) -> Result<(), ProviderError> {
        let id = Bson::String(op.name.to_string());
        let mut content = object(op.desired);
        content.shift_remove(PUBLISH_MARKER);
        let release = is_release_agent(&Value::Object(content.clone()));
        let current = match op.action {
            OpAction::Delete => return Err(not_deleted(op)),
            OpAction::Create => None,
            OpAction::Update => self.find_one(AGENTS_COLLECTION, &id).await?,
        };
        if release {
            // The version of a release agent belongs to ReleaseVersion: keep what is stored
            // now (it may have moved since planning), or start at the stored release version.
            let version = match &current {
                Some(c) => c.get_str("version").ok().map(str::to_string),
                None => self.stored_release_version().await?,
            };
            match version {
                Some(v) => content.insert("version".into(), Value::String(v)),
                None => content.shift_remove("version"),
            };
        }
        let content = Value::Object(content);
        let doc = document::build(id, &content, AGENT_CLASS);
        let Some(current) = current else {
            // A new agent is saved as it is and announces nothing (§7).
            return self.replace(AGENTS_COLLECTION, doc).await;
        };
        let before = document::live_spec(&current, self.max_publish_attempts);
        let due = publish::agent_change(&before, &content).is_some();
        let subject = agent_subject(op.name);
        let payload = agent_message(op.name, &content);
        self.store_followed(
            AGENTS_COLLECTION,
            doc,
            Some(&current),
            due,
            &subject,
            payload,
        )
        .await
    }

    async fn apply_client(&self, op: Operation<'_>) -> Result<(), ProviderError> {
        let id = Bson::String(CLIENT_ID.to_string());
        let mut content = object(op.desired);
        content.shift_remove(PUBLISH_MARKER);
        let current = match op.action {
            OpAction::Delete => return Err(not_deleted(op)),
            OpAction::Create => None,
            OpAction::Update => self.find_one(CLIENT_COLLECTION, &id).await?,
        };
        // The stored version wins (§8); a new document starts at the stored release version.
        let stored = match &current {
            Some(c) => c.get_str("version").ok().map(str::to_string),
            None => self.stored_release_version().await?,
        };
        let before_version = current
            .as_ref()
            .and_then(|c| c.get_str("version").ok())
            .map(str::to_string);
        if let Some(v) = stored.filter(|v| !v.is_empty()) {
            content.insert("version".into(), Value::String(v));
        }
        let content = Value::Object(content);
        let mut doc = document::build(id, &content, CLIENT_CLASS);
        // Spring auditing: createdAt once, updatedAt on every save.
        let created = current
            .as_ref()
            .and_then(|c| c.get(document::CREATED_AT).cloned())
            .unwrap_or_else(document::now);
        doc.insert(document::CREATED_AT, created);
        doc.insert(document::UPDATED_AT, document::now());
        let Some(current) = current else {
            return self.replace(CLIENT_COLLECTION, doc).await;
        };
        let due = publish::version(&content).is_some()
            && publish::version(&content) != before_version.as_deref();
        let payload = client_message(&content);
        self.store_followed(
            CLIENT_COLLECTION,
            doc,
            Some(&current),
            due,
            CLIENT_SUBJECT,
            payload,
        )
        .await
    }

    /// Stores the release version, then brings every follower (the client configuration and
    /// every agent with `releaseVersion: true`) to it, publishing each exactly once. Followers
    /// are read now, not at planning, so agents written earlier in this apply are included
    /// and a follower already repaired by its own change is not published twice.
    async fn apply_release(&self, op: Operation<'_>) -> Result<(), ProviderError> {
        if op.action == OpAction::Delete {
            return Err(not_deleted(op));
        }
        let version = op
            .desired
            .and_then(publish::version)
            .ok_or_else(|| ProviderError::permanent("ReleaseVersion needs spec.version"))?
            .to_string();
        match self.release_document().await? {
            Some(existing) => {
                let id = existing.get("_id").cloned().unwrap_or(Bson::Null);
                if existing.get_str("version").ok() != Some(version.as_str()) {
                    self.set(
                        RELEASES_COLLECTION,
                        &id,
                        doc! {"version": &version, "updatedAt": document::now()},
                    )
                    .await?;
                }
            }
            None => {
                let mut doc = doc! {
                    "_id": ObjectId::new(),
                    "version": &version,
                    "createdAt": document::now(),
                    "updatedAt": document::now(),
                };
                doc.insert(document::CLASS, RELEASE_CLASS);
                self.insert(RELEASES_COLLECTION, doc).await?;
            }
        }
        let followers = [
            (CLIENT_COLLECTION, doc! {"_id": CLIENT_ID}),
            (AGENTS_COLLECTION, doc! {"releaseVersion": true}),
        ];
        for (collection, filter) in followers {
            for current in self.find(collection, filter, None).await? {
                let stored = current.get_str("version").ok();
                if stored == Some(version.as_str())
                    && !document::publish_retry_due(&current, self.max_publish_attempts)
                {
                    continue;
                }
                let mut doc = current.clone();
                doc.insert("version", &version);
                if collection == CLIENT_COLLECTION {
                    doc.insert(document::UPDATED_AT, document::now());
                }
                let content = document::live_spec(&doc, self.max_publish_attempts);
                let (subject, payload) = if collection == CLIENT_COLLECTION {
                    (CLIENT_SUBJECT.to_string(), client_message(&content))
                } else {
                    let id = document::id_string(&doc).unwrap_or_default();
                    (agent_subject(&id), agent_message(&id, &content))
                };
                self.write_and_publish(collection, doc, Some(&current), &subject, payload)
                    .await?;
            }
        }
        Ok(())
    }

    /// Ensures one registration secret exists; never overwrites one (openframe.md §12).
    async fn apply_secret(&self, op: Operation<'_>) -> Result<(), ProviderError> {
        if op.action != OpAction::Create {
            return Err(not_deleted(op));
        }
        if !self
            .find(SECRETS_COLLECTION, doc! {}, None)
            .await?
            .is_empty()
        {
            return Ok(());
        }
        let key = self
            .encryption
            .as_ref()
            .map_err(|e| ProviderError::permanent(e.clone()))?;
        let plaintext = generate_secret();
        let mut doc = doc! {
            "_id": ObjectId::new(),
            "secretKey": key.encrypt(&plaintext),
            "createdAt": document::now(),
            "active": true,
        };
        doc.insert(document::CLASS, SECRET_CLASS);
        self.insert(SECRETS_COLLECTION, doc).await
    }
}

fn not_deleted(op: Operation<'_>) -> ProviderError {
    ProviderError::permanent(format!(
        "{}/{}: ofctl does not {} platform documents of this kind",
        op.kind,
        op.name,
        match op.action {
            OpAction::Delete => "delete",
            _ => "overwrite",
        }
    ))
}

/// Notes for a change to an agent or the client configuration whose stored update message is
/// unpublished.
fn pending_note(live: &Value) -> Option<String> {
    (live.get(PUBLISH_MARKER).and_then(Value::as_str) == Some(PUBLISH_PENDING)).then(|| {
        format!(
            "publish pending: version {} was stored but its update message was never acknowledged; apply publishes it once",
            publish::version(live).unwrap_or("(unset)")
        )
    })
}

#[async_trait]
impl Provider for MongoProvider {
    fn system(&self) -> System {
        System::Mongo
    }

    async fn read(&self, kind: &str, scope: ReadScope<'_>) -> Result<Vec<Observed>, ProviderError> {
        match kind {
            TOOL => self.read_by_id(TOOLS_COLLECTION, scope).await,
            AGENT => self.read_by_id(AGENTS_COLLECTION, scope).await,
            CLIENT => self.read_by_id(CLIENT_COLLECTION, scope).await,
            RELEASE => self.read_release(scope).await,
            SECRET => {
                // Any document means a secret exists (the platform's own test, §12). Its value
                // is never read into a spec.
                let exists = !self
                    .find(
                        SECRETS_COLLECTION,
                        doc! {},
                        Some(
                            FindOptions::builder()
                                .limit(1)
                                .projection(doc! {"_id": 1})
                                .build(),
                        ),
                    )
                    .await?
                    .is_empty();
                Ok(if exists {
                    scope
                        .names
                        .iter()
                        .map(|n| Observed {
                            name: n.clone(),
                            spec: Value::Object(Map::new()),
                            managed: false,
                            notes: Vec::new(),
                        })
                        .collect()
                } else {
                    Vec::new()
                })
            }
            other => Err(ProviderError::permanent(format!(
                "mongo: unknown kind {other}"
            ))),
        }
    }

    fn normalize_desired(&self, kind: &str, name: &str, spec: &Value) -> Result<Value, String> {
        match kind {
            TOOL => tools::normalize_desired(name, spec),
            AGENT | CLIENT => {
                if kind == CLIENT && name != CLIENT_ID {
                    return Err(format!(
                        "the client configuration is the document `{CLIENT_ID}`; name it `{CLIENT_ID}`"
                    ));
                }
                let mut body = spec
                    .as_object()
                    .cloned()
                    .ok_or_else(|| format!("a {kind} spec must be an object"))?;
                document::take_id(&mut body, name)?;
                let mut value = Value::Object(body);
                document::strip_nulls(&mut value);
                Ok(value)
            }
            RELEASE if name != RELEASE_NAME => Err(format!(
                "the release version is a single document; name it `{RELEASE_NAME}`"
            )),
            _ => Ok(spec.clone()),
        }
    }

    fn merge_live(&self, kind: &str, desired: &Value, live: &Value) -> (Value, Vec<String>) {
        let mut merged = desired.clone();
        let mut notes = Vec::new();
        match kind {
            AGENT => {
                document::adopt_class_defaults(&mut merged, live, document::AGENT_CLASS_DEFAULTS)
            }
            CLIENT => {
                document::adopt_class_defaults(&mut merged, live, document::CLIENT_CLASS_DEFAULTS)
            }
            _ => {}
        }
        let keep_version = match kind {
            AGENT => is_release_agent(desired),
            CLIENT => publish::version(live).is_some(),
            _ => false,
        };
        if keep_version {
            let stored = publish::version(live);
            let wanted = publish::version(desired);
            if let Some(obj) = merged.as_object_mut() {
                match stored {
                    Some(v) => obj.insert("version".into(), Value::String(v.into())),
                    None => obj.shift_remove("version"),
                };
            }
            // Said only when the manifest names a version: release files usually carry none.
            if wanted.is_some() && stored != wanted {
                let who = if kind == AGENT {
                    "a release agent"
                } else {
                    "the client configuration"
                };
                notes.push(format!(
                    "{who} keeps its stored version {}; the manifest's version {} is ignored (ReleaseVersion sets it)",
                    stored.unwrap_or("(unset)"),
                    wanted.unwrap_or("(unset)"),
                ));
            }
        }
        let pending = matches!(kind, AGENT | CLIENT)
            .then(|| pending_note(live))
            .flatten();
        let agent_change = (kind == AGENT)
            .then(|| publish::agent_change(live, &merged))
            .flatten();
        if let Some(note) = pending {
            notes.push(note);
        } else if let Some(why) = agent_change {
            notes.push(format!("{why}: apply publishes one update message"));
        } else if kind == CLIENT
            && publish::version(live).is_none()
            && publish::version(&merged).is_some()
        {
            notes.push(format!(
                "version {}: apply publishes one update to {CLIENT_SUBJECT}",
                publish::version(&merged).unwrap_or_default()
            ));
        } else if kind == RELEASE
            && (live.get(FOLLOWERS_MARKER).is_some()
                || publish::version(live) != publish::version(desired))
        {
            notes.push(format!(
                "apply sets {CLIENT}/{CLIENT_ID} and every release agent to version {} and publishes each once",
                publish::version(desired).unwrap_or("(unset)")
            ));
        }
        (merged, notes)
    }

    fn retains(&self, kind: &str, live: &Value) -> Vec<Address> {
        if kind != TOOL {
            return Vec::new();
        }
        tools::connector_names(live)
            .into_iter()
            .map(|n| Address::new(tools::CONNECTOR_KIND, n))
            .collect()
    }

    fn dependencies(&self, kind: &str, _name: &str, spec: &Value) -> Vec<Address> {
        let stream = |s: &str| Address::new(STREAM_KIND, s);
        match kind {
            // The release version is applied first: agents and the client configuration
            // written after it see the version it stored (see apply_agent / apply_client).
            AGENT => {
                let mut deps = vec![
                    stream(TOOL_UPDATE_STREAM),
                    Address::new(RELEASE, RELEASE_NAME),
                ];
                if let Some(tool) = spec.get("toolId").and_then(Value::as_str) {
                    deps.push(Address::new(TOOL, tool));
                }
                deps
            }
            CLIENT => vec![
                stream(CLIENT_UPDATE_STREAM),
                Address::new(RELEASE, RELEASE_NAME),
            ],
            RELEASE => vec![stream(TOOL_UPDATE_STREAM), stream(CLIENT_UPDATE_STREAM)],
            _ => Vec::new(),
        }
    }

    async fn apply(&self, op: Operation<'_>) -> Result<(), ProviderError> {
        match op.kind {
            TOOL => self.apply_tool(op).await,
            AGENT => self.apply_agent(op).await,
            CLIENT => self.apply_client(op).await,
            RELEASE => self.apply_release(op).await,
            SECRET => self.apply_secret(op).await,
            other => Err(ProviderError::permanent(format!(
                "mongo: unknown kind {other}"
            ))),
        }
    }

    fn requests(&self) -> RequestCount {
        self.counter.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn provider() -> MongoProvider {
        let config = TargetConfig::parse(
            "[mongo]\nuri = \"mongodb://127.0.0.1:1/x\"\n",
            std::path::Path::new("ofctl.toml"),
        )
        .unwrap();
        let no_nats = Err(config.missing(System::Nats, "nats", "url"));
        MongoProvider::new(&config, no_nats).unwrap()
    }

    #[test]
    fn encryption_settings_resolve_from_the_environment_and_are_secret() {
        std::env::set_var(
            "OFCTL_TEST_CFG_ENC_PW",
            "a-password-for-the-config-test-0001",
        );
        let cfg = TargetConfig::parse(
            "[mongo]\nuri = \"mongodb://h/db\"\nencryption_password = \"${env:OFCTL_TEST_CFG_ENC_PW}\"\nencryption_salt = \"${env:OFCTL_TEST_CFG_ENC_SALT:-0011223344556677}\"\n",
            std::path::Path::new("ofctl.toml"),
        )
        .unwrap();
        let mongo = Section::<MongoSection>::read(&cfg, &SECTION)
            .unwrap()
            .unwrap();
        let (pw, salt) = encryption_settings(&mongo).unwrap().unwrap();
        assert_eq!(pw, "a-password-for-the-config-test-0001");
        assert_eq!(salt, "0011223344556677");
        assert!(!crate::redact::redact(&pw).contains(&pw));
    }

    #[test]
    fn server_selection_errors_name_the_address_and_the_reason() {
        let raw = "Server selection timeout: No available servers. Topology: { Type: Single, Servers: [ { Address: 127.0.0.1:36415, Type: Unknown, Error: Kind: I/O error: Connection refused (os error 111), labels: {\"SystemOverloadedError\"}, source: None, server response: None } ] }";
        assert_eq!(
            server_selection_summary(raw).unwrap(),
            "no MongoDB server answered at 127.0.0.1:36415 within 5 s (I/O error: Connection refused (os error 111))"
        );
        assert_eq!(server_selection_summary("no topology"), None);
    }

    #[test]
    fn a_release_agent_keeps_its_stored_version_and_the_plan_says_so() {
        let p = provider();
        let live = json!({"releaseVersion": true, "version": "1.2.0"});
        let (merged, notes) = p.merge_live(
            AGENT,
            &json!({"releaseVersion": true, "version": "9.9.9"}),
            &live,
        );
        assert_eq!(merged["version"], "1.2.0");
        assert!(
            notes[0].contains("keeps its stored version 1.2.0"),
            "{notes:?}"
        );
        // A release file without a version: kept silently.
        let (merged, notes) = p.merge_live(AGENT, &json!({"releaseVersion": true}), &live);
        assert_eq!(merged["version"], "1.2.0");
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn notes_announce_publishes_and_pending_ones() {
        let p = provider();
        let (_, notes) = p.merge_live(AGENT, &json!({"version": "2"}), &json!({"version": "1"}));
        assert_eq!(notes, ["version 1 → 2: apply publishes one update message"]);
        let pending = json!({"version": "2", "publish": "pending"});
        let (merged, notes) = p.merge_live(AGENT, &json!({"version": "2"}), &pending);
        assert!(merged.get("publish").is_none());
        assert!(
            notes[0].starts_with("publish pending: version 2"),
            "{notes:?}"
        );
        // The client configuration keeps a stored version; a new one may come from the file.
        let (merged, _) = p.merge_live(CLIENT, &json!({"version": "5"}), &json!({"version": "4"}));
        assert_eq!(merged["version"], "4");
        let (merged, notes) = p.merge_live(CLIENT, &json!({"version": "5"}), &json!({}));
        assert_eq!(merged["version"], "5");
        assert!(notes[0].contains(CLIENT_SUBJECT), "{notes:?}");
    }

    #[test]
    fn singletons_are_named() {
        let p = provider();
        assert!(p.normalize_desired(CLIENT, "other", &json!({})).is_err());
        assert!(p
            .normalize_desired(RELEASE, "prod", &json!({"version": "1"}))
            .is_err());
        assert_eq!(
            p.normalize_desired(AGENT, "a", &json!({"id": "a", "x": null, "v": "1"}))
                .unwrap(),
            json!({"v": "1"})
        );
    }
}
