//! Kafka topics, through librdkafka's admin client (rdkafka).
//!
//! Ownership: Kafka topics carry no metadata, and brokers reject config keys they do not know
//! (InvalidConfig), so there is nowhere to put an ownership marker. Topics are also created by
//! others (Debezium's `topic.creation.*`, producers with auto-create), and deleting one deletes
//! its messages. So ofctl never reports a topic as managed: `--prune` never deletes a topic, and
//! a topic dropped from the manifest is left for a person to delete on purpose.

mod normalize;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic,
    OwnedResourceSpecifier, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use serde::Deserialize;
use serde_json::Value;

use crate::kind::{Compare, Effect, FieldRule, Finding, KindInfo, System, Trigger};
use crate::provider::section::{self, Section, SectionInfo};
use crate::provider::{
    OpAction, Operation, Provider, ProviderError, ReadPass, ReadScope, RequestCount, RequestCounter,
};
use crate::resource::Observed;

pub use normalize::{live_spec, normalize_desired};

/// `[kafka]` of the target config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KafkaSection {
    brokers: String,
}

/// `[kafka] brokers`: the bootstrap servers, comma-separated.
pub const SECTION: SectionInfo = SectionInfo {
    system: System::Kafka,
    name: "kafka",
    endpoint_key: "brokers",
    check: |config| Section::<KafkaSection>::read(config, &SECTION).map(drop),
    endpoint: |config| section::endpoint(config, &SECTION, |s: &KafkaSection| &s.brokers),
};

pub static KINDS: [KindInfo; 1] = [KindInfo {
    kind: "KafkaTopic",
    system: System::Kafka,
    // Only the topic's own overrides are read, so every field on either side counts.
    compare: Compare::Exact,
    field_rules: &[FieldRule {
        path: "/replication_factor",
        trigger: Trigger::AnyChange,
        effect: Effect::Replace,
        reason: "changing the replication factor needs a partition reassignment, which ofctl does not do; recreating the topic loses its messages",
    }],
    sensitive: &[],
    interpolate_spec_file: true,
}];

/// How old the cluster's topic list may be when a read uses it (see [`Cluster`]): a change
/// made elsewhere shows up this much later, next to a watch interval of a minute.
const METADATA_MAX_AGE: Duration = Duration::from_secs(5);
/// How long a metadata request may take (the brokers being unreachable ends in this).
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// Per admin request; the operation timeout lets the controller finish topic creation first.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

pub struct KafkaProvider {
    brokers: String,
    cluster: Arc<Cluster>,
    counter: RequestCounter,
}

/// What every tenant on the same brokers shares: one admin client (and its librdkafka
/// threads), and the cluster's topic list.
///
/// Metadata comes for every topic or for one: librdkafka has no request for a few named ones,
/// and one-topic requests leave a topic object behind in the client that its threads scan
/// for ever (a thousand tenants' topics took a core). So the whole list is fetched, at most
/// once per [`METADATA_MAX_AGE`] for all tenants together (passes waiting meanwhile take the
/// fetch under way), and dropped on any write through this client so a read after a write
/// sees it.
struct Cluster {
    admin: AdminClient<DefaultClientContext>,
    topics: crate::shared::Snapshot<Topics>,
}

type Topics = HashMap<String, TopicInfo>;

/// A topic as the cluster metadata describes it.
struct TopicInfo {
    partitions: usize,
    replication_factor: usize,
}

/// Worth retrying: the cluster was unreachable, busy or electing a controller.
fn is_transient(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::OperationTimedOut
            | C::RequestTimedOut
            | C::NetworkException
            | C::NotController
            | C::LeaderNotAvailable
            | C::ThrottlingQuotaExceeded
    )
}

fn code_error(what: &str, code: RDKafkaErrorCode) -> ProviderError {
    let message = format!("{what}: {code}");
    if is_transient(code) {
        ProviderError::transient(message)
    } else {
        ProviderError::permanent(message)
    }
}

impl KafkaProvider {
    pub fn new(brokers: &str) -> Result<Self, ProviderError> {
        let cluster = crate::shared::get_or_make(brokers, || {
            let admin = ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .set("client.id", "ofctl")
                // With sparse connections (the default) librdkafka connects to the brokers a
                // metadata answer names only when a request needs one, and one of a new
                // client's first two requests then waited ~50 ms (measured against noida-db:
                // 1-8 ms without). An admin client talks to the brokers anyway.
                .set("enable.sparse.connections", "false")
                .create::<AdminClient<DefaultClientContext>>()
                .map_err(|e| {
                    ProviderError::permanent(format!("kafka: cannot create a client: {e}"))
                })?;
            Ok::<_, ProviderError>(Cluster {
                admin,
                topics: Default::default(),
            })
        })?;
        Ok(Self {
            brokers: brokers.to_string(),
            cluster,
            counter: RequestCounter::default(),
        })
    }

    fn options() -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(REQUEST_TIMEOUT))
            .operation_timeout(Some(OPERATION_TIMEOUT))
    }

    /// A whole admin request failed (as opposed to one topic in it).
    fn request_error(&self, what: &str, e: KafkaError) -> ProviderError {
        let what = format!("kafka {what} at {}", self.brokers);
        match e.rdkafka_error_code() {
            Some(code) => code_error(&what, code),
            None => ProviderError::transient(format!("{what}: {e}")),
        }
    }

    /// Partitions and replication of every topic but the internal ones (`__consumer_offsets`,
    /// ...), as fetched for any tenant less than [`METADATA_MAX_AGE`] ago (see [`Cluster`]).
    async fn topics(&self) -> Result<Arc<Topics>, ProviderError> {
        self.cluster
            .topics
            .get(METADATA_MAX_AGE, || self.fetch_topics())
            .await
    }

    async fn fetch_topics(&self) -> Result<Topics, ProviderError> {
        self.counter.read();
        let cluster = Arc::clone(&self.cluster);
        // librdkafka's metadata call blocks its thread until the answer or the timeout.
        let metadata = tokio::task::spawn_blocking(move || {
            cluster.admin.inner().fetch_metadata(None, METADATA_TIMEOUT)
        })
        .await
        .map_err(|e| ProviderError::transient(format!("kafka metadata request aborted: {e}")))?
        .map_err(|e| self.request_error("metadata request", e))?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| !t.name().starts_with("__") && t.error().is_none())
            .map(|t| {
                let partitions = t.partitions();
                // Partition 0's replica count, as `kafka-topics --describe` reports it.
                let replication_factor = partitions.first().map_or(0, |p| p.replicas().len());
                (
                    t.name().to_string(),
                    TopicInfo {
                        partitions: partitions.len(),
                        replication_factor,
                    },
                )
            })
            .collect())
    }

    /// One DescribeConfigs request for `names`: each topic's own overrides.
    async fn overrides(
        &self,
        names: &[&str],
    ) -> Result<HashMap<String, Vec<(String, String)>>, ProviderError> {
        if names.is_empty() {
            return Ok(HashMap::new());
        }
        self.counter.read();
        let specifiers: Vec<ResourceSpecifier<'_>> =
            names.iter().map(|n| ResourceSpecifier::Topic(n)).collect();
        let results = self
            .cluster
            .admin
            .describe_configs(&specifiers, &Self::options())
            .await
            .map_err(|e| self.request_error("describe_configs", e))?;
        let mut out = HashMap::new();
        for result in results {
            let resource = result.map_err(|code| code_error("kafka describe_configs", code))?;
            let OwnedResourceSpecifier::Topic(name) = resource.specifier else {
                continue;
            };
            let entries = resource
                .entries
                .into_iter()
                .filter(|e| {
                    // The topic's own setting (KIP-226 source). Brokers before Kafka 1.1 report
                    // no source; there "not the default" is the best available answer.
                    e.source == ConfigSource::DynamicTopic
                        || (e.source == ConfigSource::Unknown && !e.is_default)
                })
                .filter(|e| !e.is_sensitive)
                .filter_map(|e| Some((e.name, e.value?)))
                .collect();
            out.insert(name, entries);
        }
        Ok(out)
    }

    /// Checks the per-topic result of a create/delete/partitions call.
    fn topic_result(
        what: &str,
        results: Vec<Result<String, (String, RDKafkaErrorCode)>>,
        ok_codes: &[RDKafkaErrorCode],
    ) -> Result<(), ProviderError> {
        for result in results {
            if let Err((topic, code)) = result {
                if !ok_codes.contains(&code) {
                    return Err(code_error(&format!("kafka {what} {topic}"), code));
                }
            }
        }
        Ok(())
    }

    async fn create(&self, name: &str, desired: &Value) -> Result<(), ProviderError> {
        let count = |field: &str| desired.get(field).and_then(Value::as_i64).unwrap_or(1);
        let partitions = i32::try_from(count("partitions")).unwrap_or(i32::MAX);
        let replication = i32::try_from(count("replication_factor")).unwrap_or(i32::MAX);
        let config = normalize::config_of(desired);
        let topic = config.iter().fold(
            NewTopic::new(name, partitions, TopicReplication::Fixed(replication)),
            |t, (k, v)| t.set(k, v),
        );
        self.counter.write();
        let results = self
            .cluster
            .admin
            .create_topics([&topic], &Self::options())
            .await
            .map_err(|e| self.request_error("create_topics", e))?;
        match results.into_iter().find_map(Result::err) {
            None => Ok(()),
            Some((topic, code)) => {
                let mut e = code_error(&format!("kafka create topic {topic}"), code);
                if code == RDKafkaErrorCode::TopicAlreadyExists {
                    // An earlier attempt whose answer was lost made it: the topic as asked for
                    // is what a create wants.
                    if self.exists_as_desired(name, desired).await? {
                        return Ok(());
                    }
                    // Topic deletion finishes asynchronously: right after the delete of a
                    // replace the old topic can still be in the way, which a retry outlives.
                    e.transient = true;
                    e.message
                        .push_str(" (a topic being deleted may still be in the way)");
                }
                Err(e)
            }
        }
    }

    /// Whether topic `name` exists with exactly the normalized `desired` spec, as a plan
    /// would compare them.
    async fn exists_as_desired(&self, name: &str, desired: &Value) -> Result<bool, ProviderError> {
        let names = [name.to_string()];
        let live = self
            .read(
                KINDS[0].kind,
                ReadScope {
                    names: &names,
                    all: false,
                    // As the topic is now, not as an earlier read of this pass saw it.
                    pass: &ReadPass::default(),
                },
            )
            .await?;
        Ok(live
            .iter()
            .any(|o| o.name == name && crate::json::values_equal(&o.spec, desired)))
    }

    async fn update(&self, name: &str, desired: &Value, live: &Value) -> Result<(), ProviderError> {
        let steps = normalize::update_steps(desired, live);
        if let Some(total) = steps.grow_to {
            self.counter.write();
            let results = self
                .cluster
                .admin
                .create_partitions([&NewPartitions::new(name, total)], &Self::options())
                .await
                .map_err(|e| self.request_error("create_partitions", e))?;
            Self::topic_result("create partitions for", results, &[])?;
        }
        if let Some(config) = steps.set_config {
            let alter = config.iter().fold(
                AlterConfig::new(ResourceSpecifier::Topic(name)),
                |a, (k, v)| a.set(k, v),
            );
            self.counter.write();
            let results = self
                .cluster
                .admin
                .alter_configs([&alter], &Self::options())
                .await
                .map_err(|e| self.request_error("alter_configs", e))?;
            for result in results {
                result.map_err(|(_, code)| {
                    code_error(&format!("kafka alter_configs of {name}"), code)
                })?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Provider for KafkaProvider {
    fn system(&self) -> System {
        System::Kafka
    }

    /// One metadata request (all topics) and one DescribeConfigs request (the declared topics
    /// that exist, or every topic with `scope.all`).
    async fn read(
        &self,
        _kind: &str,
        scope: ReadScope<'_>,
    ) -> Result<Vec<Observed>, ProviderError> {
        let topics = self.topics().await?;
        // The list is every tenant's on shared brokers: look the declared names up in it
        // rather than scanning it for them.
        let wanted: Vec<&str> = if scope.all {
            topics.keys().map(String::as_str).collect()
        } else {
            scope
                .names
                .iter()
                .filter_map(|n| topics.get_key_value(n.as_str()).map(|(k, _)| k.as_str()))
                .collect()
        };
        let mut overrides = self.overrides(&wanted).await?;
        Ok(wanted
            .into_iter()
            .map(|name| {
                let info = &topics[name];
                let config = overrides.remove(name).unwrap_or_default();
                Observed {
                    name: name.to_string(),
                    spec: live_spec(info.partitions, info.replication_factor, &config),
                    managed: false,
                    notes: Vec::new(),
                }
            })
            .collect())
    }

    fn normalize_desired(&self, _kind: &str, name: &str, spec: &Value) -> Result<Value, String> {
        normalize_desired(name, spec)
    }

    fn findings(&self, _kind: &str, desired: &Value, live: &Value) -> Vec<Finding> {
        normalize::findings(desired, live)
    }

    async fn apply(&self, op: Operation<'_>) -> Result<(), ProviderError> {
        let empty = Value::Null;
        let desired = op.desired.unwrap_or(&empty);
        let result = async {
            match op.action {
                OpAction::Create => self.create(op.name, desired).await,
                OpAction::Update => {
                    self.update(op.name, desired, op.live.unwrap_or(&empty))
                        .await
                }
                OpAction::Delete => {
                    self.counter.write();
                    let results = self
                        .cluster
                        .admin
                        .delete_topics(&[op.name], &Self::options())
                        .await
                        .map_err(|e| self.request_error("delete_topics", e))?;
                    // Already gone is what a delete wants.
                    Self::topic_result(
                        "delete topic",
                        results,
                        &[RDKafkaErrorCode::UnknownTopicOrPartition],
                    )
                }
            }
        }
        .await;
        // Whatever the answer, the write may have changed the cluster: the next read fetches.
        self.cluster.topics.invalidate().await;
        result
    }

    fn requests(&self) -> RequestCount {
        self.counter.snapshot()
    }
}
