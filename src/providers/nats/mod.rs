//! NATS JetStream streams, through the JetStream JSON API (`$JS.API.STREAM.*`).
//!
//! The raw API is used rather than async-nats' typed `Config` so that what is read is exactly
//! what the server sent: a typed round trip would add the client's own defaults and drop fields
//! it does not know, and both would show up as phantom diffs.

mod normalize;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::OnceCell;

use crate::kind::{Compare, Effect, FieldRule, KindInfo, System, Trigger};
use crate::provider::owner::{Owner, OWNER_KEY};
use crate::provider::section::{self, Section, SectionInfo};
use crate::provider::{
    OpAction, Operation, Provider, ProviderError, ReadScope, RequestCount, RequestCounter,
};
use crate::resource::Observed;

pub use normalize::{normalize_desired, normalize_live};

/// `[nats]` of the target config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NatsSection {
    url: String,
}

/// `[nats] url`: the streams' server, and where the Mongo provider publishes.
pub const SECTION: SectionInfo = SectionInfo {
    system: System::Nats,
    name: "nats",
    endpoint_key: "url",
    check: |config| match Section::<NatsSection>::read(config, &SECTION)? {
        Some(nats) => nats.refuse_uri_password("url", &nats.fields.url),
        None => Ok(()),
    },
    endpoint: |config| section::endpoint(config, &SECTION, |s: &NatsSection| &s.url),
};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a request in flight checks that the connection is still up.
const CONNECTION_CHECK: Duration = Duration::from_millis(100);

pub static KINDS: [KindInfo; 1] = [KindInfo {
    kind: "NatsStream",
    system: System::Nats,
    compare: Compare::Exact,
    // apis.md §4.3: what the server refuses to change in place.
    field_rules: &[
        FieldRule {
            path: "/storage",
            trigger: Trigger::AnyChange,
            effect: Effect::Replace,
            reason: "JetStream cannot change the storage type of a stream in place",
        },
        FieldRule {
            path: "/retention",
            trigger: Trigger::ToOrFrom("workqueue"),
            effect: Effect::Replace,
            reason: "JetStream cannot change retention to or from workqueue in place",
        },
        FieldRule {
            path: "/mirror",
            trigger: Trigger::SetOrChanged,
            effect: Effect::Replace,
            reason:
                "JetStream cannot change a stream's mirror configuration (removing it is allowed)",
        },
        FieldRule {
            path: "/allow_msg_counter",
            trigger: Trigger::AnyChange,
            effect: Effect::Replace,
            reason: "JetStream cannot change the message counter setting in place",
        },
        FieldRule {
            path: "/persist_mode",
            trigger: Trigger::AnyChange,
            effect: Effect::Replace,
            reason: "JetStream cannot change the persist mode in place",
        },
        FieldRule {
            path: "/sealed",
            trigger: Trigger::TrueToFalse,
            effect: Effect::Replace,
            reason: "a sealed stream cannot be unsealed",
        },
        FieldRule {
            path: "/deny_delete",
            trigger: Trigger::TrueToFalse,
            effect: Effect::Replace,
            reason: "deny_delete cannot be turned off in place",
        },
        FieldRule {
            path: "/deny_purge",
            trigger: Trigger::TrueToFalse,
            effect: Effect::Replace,
            reason: "deny_purge cannot be turned off in place",
        },
        FieldRule {
            path: "/allow_msg_ttl",
            trigger: Trigger::TrueToFalse,
            effect: Effect::Replace,
            reason: "message TTLs cannot be disabled in place",
        },
        FieldRule {
            path: "/allow_msg_schedules",
            trigger: Trigger::TrueToFalse,
            effect: Effect::Replace,
            reason: "message schedules cannot be disabled in place",
        },
    ],
    sensitive: &[],
    interpolate_spec_file: true,
}];

/// JetStream's error code for a stream that does not exist.
const STREAM_NOT_FOUND: u64 = 10059;

/// Up to this many declared streams are read one STREAM.INFO each; more, or a read for prune
/// or export, list the account (all of it, a page at a time).
const NAMED_READ_LIMIT: usize = 16;

/// JetStream's error object for `subject` as a [`ProviderError`].
fn jetstream_error(subject: &str, err: &Value) -> ProviderError {
    let code = err.get("code").and_then(Value::as_u64).unwrap_or(0);
    let err_code = err.get("err_code").and_then(Value::as_u64).unwrap_or(0);
    let description = err
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("unknown error");
    let message = format!("JetStream rejected {subject}: {description} (err_code {err_code})");
    // 503: JetStream temporarily unavailable (e.g. no meta leader yet).
    if code == 503 {
        ProviderError::transient(message)
    } else {
        ProviderError::permanent(message)
    }
}

pub struct NatsProvider {
    url: String,
    /// Shared with every provider of the process that uses the same URL.
    client: Arc<OnceCell<async_nats::Client>>,
    counter: RequestCounter,
    /// Stream metadata marking what this tenant made (only these are ever pruned).
    owner: Owner,
}

impl NatsProvider {
    pub fn new(url: impl Into<String>, owner: Owner) -> Self {
        let url = url.into();
        let client = crate::shared::lazy(&url);
        Self {
            url,
            client,
            counter: RequestCounter::default(),
            owner,
        }
    }

    async fn client(&self) -> Result<&async_nats::Client, ProviderError> {
        self.client
            .get_or_try_init(|| async {
                crate::provider::nats_client::with_url_credentials(
                    async_nats::ConnectOptions::new(),
                    &self.url,
                )
                .connection_timeout(Duration::from_secs(3))
                .request_timeout(Some(REQUEST_TIMEOUT))
                .connect(self.url.as_str())
                .await
                .map_err(|e| {
                    ProviderError::transient(format!(
                        "cannot connect to NATS at {}: {e}",
                        crate::redact::redact(&self.url)
                    ))
                })
            })
            .await
    }

    /// One JetStream API request; JetStream's own error object becomes a [`ProviderError`].
    async fn api(&self, subject: String, body: Value, write: bool) -> Result<Value, ProviderError> {
        let response = self.request(subject.clone(), body, write).await?;
        match response.get("error") {
            Some(err) => Err(jetstream_error(&subject, err)),
            None => Ok(response),
        }
    }

    /// One JetStream API request, its answer as JetStream gave it (an error object included).
    async fn request(
        &self,
        subject: String,
        body: Value,
        write: bool,
    ) -> Result<Value, ProviderError> {
        let client = self.client().await?;
        if write {
            self.counter.write();
        } else {
            self.counter.read();
        }
        let lost = format!(
            "{subject}: the connection to NATS at {} is lost",
            crate::redact::redact(&self.url)
        );
        // A write that got no answer may still have been carried out by the server.
        let no_answer = |message: String| {
            if write {
                ProviderError::unanswered(message)
            } else {
                ProviderError::transient(message)
            }
        };
        // The client reconnects in the background; while it is down, a request would only wait
        // for its timeout (and be sent later, on reconnect), so fail at once: the engine retries.
        if client.connection_state() != async_nats::connection::State::Connected {
            return Err(ProviderError::transient(format!("{lost}; not sent")));
        }
        // ... and a request in flight when the connection drops stops waiting too.
        let dropped = async {
            loop {
                tokio::time::sleep(CONNECTION_CHECK).await;
                if client.connection_state() != async_nats::connection::State::Connected {
                    break;
                }
            }
        };
        let payload = serde_json::to_vec(&body).unwrap_or_default();
        let request = client.request(subject.clone(), payload.into());
        let msg = tokio::select! {
            answer = request => answer.map_err(|e| {
                use async_nats::RequestErrorKind as K;
                match e.kind() {
                    K::NoResponders => ProviderError::transient(format!(
                        "{subject}: no responders (is JetStream enabled on the server?)"
                    )),
                    K::TimedOut => no_answer(format!("{subject}: timed out")),
                    // async-nats 0.42 reported the two checks it now makes before sending as
                    // `Other`; they stay on that path (same retry and reporting as before).
                    K::InvalidSubject | K::MaxPayloadExceeded | K::Other => {
                        no_answer(format!("{subject}: {e}"))
                    }
                }
            })?,
            () = dropped => return Err(no_answer(lost)),
        };
        let response: Value = serde_json::from_slice(&msg.payload).map_err(|e| {
            ProviderError::permanent(format!("{subject}: unreadable response: {e}"))
        })?;
        Ok(response)
    }

    /// The named streams, one STREAM.INFO each (in parallel): on a server shared by many
    /// tenants, a tenant's read then costs what it declares, not what every tenant declares.
    async fn read_named(&self, names: &[String]) -> Result<Vec<Observed>, ProviderError> {
        let infos = futures::future::try_join_all(names.iter().map(|name| async move {
            let subject = format!("$JS.API.STREAM.INFO.{name}");
            let response = self.request(subject.clone(), json!({}), false).await?;
            match response.get("error") {
                Some(err)
                    if err.get("err_code").and_then(Value::as_u64) == Some(STREAM_NOT_FOUND) =>
                {
                    Ok(None)
                }
                Some(err) => Err(jetstream_error(&subject, err)),
                None => Ok(response.get("config").cloned()),
            }
        }))
        .await?;
        Ok(names
            .iter()
            .zip(infos)
            .filter_map(|(name, config)| Some(self.observed(name, &config?)))
            .collect())
    }

    fn observed(&self, name: &str, config: &Value) -> Observed {
        let (spec, marker) = normalize_live(name, config);
        let (managed, notes) = self.owner.observe(marker.as_deref());
        Observed {
            name: name.to_string(),
            spec,
            managed,
            notes,
        }
    }

    fn wire_config(&self, name: &str, desired: &Value) -> Value {
        let mut config = desired.as_object().cloned().unwrap_or_default();
        let mut metadata: Map<String, Value> = config
            .remove("metadata")
            .and_then(|m| m.as_object().cloned())
            .unwrap_or_default();
        metadata.insert(OWNER_KEY.into(), json!(self.owner.value()));
        config.insert("name".into(), json!(name));
        config.insert("metadata".into(), Value::Object(metadata));
        Value::Object(config)
    }
}

#[async_trait]
impl Provider for NatsProvider {
    fn system(&self) -> System {
        System::Nats
    }

    async fn read(
        &self,
        _kind: &str,
        scope: ReadScope<'_>,
    ) -> Result<Vec<Observed>, ProviderError> {
        if !scope.all && scope.names.len() <= NAMED_READ_LIMIT {
            return self.read_named(scope.names).await;
        }
        // STREAM.LIST returns full stream info in pages, so the whole account is one or a few
        // requests however many streams the manifest names.
        let mut observed = Vec::new();
        let mut offset = 0u64;
        loop {
            let page = self
                .api(
                    "$JS.API.STREAM.LIST".into(),
                    json!({ "offset": offset }),
                    false,
                )
                .await?;
            let streams = page
                .get("streams")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let total = page.get("total").and_then(Value::as_u64).unwrap_or(0);
            for info in &streams {
                let Some(config) = info.get("config") else {
                    continue;
                };
                let Some(name) = config.get("name").and_then(Value::as_str) else {
                    continue;
                };
                observed.push(self.observed(name, config));
            }
            offset += streams.len() as u64;
            if streams.is_empty() || offset >= total {
                break;
            }
        }
        Ok(observed)
    }

    fn normalize_desired(&self, _kind: &str, name: &str, spec: &Value) -> Result<Value, String> {
        normalize_desired(name, spec)
    }

    async fn apply(&self, op: Operation<'_>) -> Result<(), ProviderError> {
        let name = op.name;
        match op.action {
            OpAction::Create | OpAction::Update => {
                let verb = if op.action == OpAction::Create {
                    "CREATE"
                } else {
                    "UPDATE"
                };
                let desired = op.desired.cloned().unwrap_or_else(|| json!({}));
                self.api(
                    format!("$JS.API.STREAM.{verb}.{name}"),
                    self.wire_config(name, &desired),
                    true,
                )
                .await?;
            }
            OpAction::Delete => {
                self.api(format!("$JS.API.STREAM.DELETE.{name}"), json!({}), true)
                    .await?;
            }
        }
        Ok(())
    }

    fn requests(&self) -> RequestCount {
        self.counter.snapshot()
    }
}
