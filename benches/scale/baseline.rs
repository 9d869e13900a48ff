//! The baselines, and the measured floor.
//!
//! Baselines: one read per resource, the way Terraform refreshes its state (every resource
//! read by its own GET) or a shell loop checks each object, serially (Terraform with
//! `-parallelism=1`) or with 10 in flight (Terraform's default `-parallelism=10`, a limit for
//! the whole run, not per system).
//!
//! Each read is what a per-resource client would send: NATS `STREAM.INFO`, a Kafka metadata
//! request for the one topic (no DescribeConfigs, which favours the baseline), Pinot
//! `GET /schemas/{name}` and `GET /tables/{raw}?type=`, Connect `GET /connectors/{name}`, a
//! MongoDB find of one tool agent by `_id`, and Tactical `GET /scripts/{id}/` with the id
//! Terraform would keep in its state (looked up before timing starts). Clients are created
//! inside the timed section, as ofctl's are. Against empty systems (the cold plan's state)
//! every read answers "not found", which costs the same round trip.
//!
//! The floor: a client that sends exactly the lower bound's requests ([`super::lower_bound`]),
//! with the same limit per system as ofctl, all systems at once, and does nothing with the
//! answers but check them. It measures what the round trips alone cost on this machine,
//! where the emulators' 5 ms become more under load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{doc, Document};
use ofctl::providers::mongo::AGENTS_COLLECTION;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use serde_json::Value;

pub enum Read {
    /// NATS `STREAM.INFO` of one stream.
    Stream(String),
    /// One NATS `STREAM.LIST` page from this offset.
    StreamPage(usize),
    /// Kafka metadata of one topic.
    Topic(String),
    /// Kafka metadata of every topic (one request).
    AllTopics,
    /// One Kafka DescribeConfigs request for these topics.
    TopicConfigs(Vec<String>),
    /// MongoDB: one tool agent by `_id`.
    Agent(String),
    /// MongoDB: one find of these tool agents.
    Agents(Vec<String>),
    /// A GET of one object on an emulator (200, or 404 when absent); `tactical` sends the
    /// API key.
    Http { url: String, tactical: bool },
    /// A GET of a list on an emulator.
    List { url: String, tactical: bool },
}

impl Read {
    /// How many objects the read finds when the declared objects exist (`present`) or none
    /// does; `None` for a list, which answers either way.
    fn expected(&self, present: bool) -> Option<usize> {
        let count = match self {
            Read::StreamPage(_) | Read::AllTopics | Read::List { .. } => return None,
            Read::TopicConfigs(names) => names.len(),
            Read::Agents(names) => names.len(),
            Read::Stream(_) | Read::Topic(_) | Read::Agent(_) | Read::Http { .. } => 1,
        };
        Some(if present { count } else { 0 })
    }
}

pub struct Targets<'a> {
    pub nats: &'a str,
    pub kafka: &'a str,
    pub mongo: &'a str,
    pub tactical_api_key: &'a str,
}

/// What a baseline run did.
pub struct Run {
    pub elapsed: Duration,
    /// Reads sent to NATS, Kafka and MongoDB (the emulators count their own).
    pub nats: u64,
    pub kafka: u64,
    pub mongo: u64,
}

struct Clients {
    nats: async_nats::Client,
    kafka: Arc<AdminClient<DefaultClientContext>>,
    agents: mongodb::Collection<Document>,
    http: reqwest::Client,
    api_key: String,
}

/// Reads grouped by system (run at the same time); each system's stages run one after another,
/// the reads of a stage `parallelism` at a time. A baseline is one group of one stage.
pub type Schedule = Vec<Vec<Vec<Read>>>;

/// Runs `schedule`; every object read must exist (`present`) or every one must be absent.
pub async fn run(
    schedule: &Schedule,
    targets: &Targets<'_>,
    parallelism: usize,
    present: bool,
) -> Result<Run, String> {
    let started = Instant::now();
    let clients = Clients {
        nats: async_nats::connect(targets.nats)
            .await
            .map_err(|e| format!("nats: {e}"))?,
        kafka: Arc::new(
            ClientConfig::new()
                .set("bootstrap.servers", targets.kafka)
                // librdkafka's producer-type handles (an admin client is one) default to
                // asking the broker to create a topic their metadata request names.
                .set("allow.auto.create.topics", "false")
                // As ofctl's client (providers/kafka): no ~50 ms wait for the broker connection.
                .set("enable.sparse.connections", "false")
                .create()
                .map_err(|e| format!("kafka: {e}"))?,
        ),
        agents: mongodb::Client::with_uri_str(targets.mongo)
            .await
            .map_err(|e| format!("mongo: {e}"))?
            .default_database()
            .ok_or("the MongoDB URI names no database")?
            .collection(AGENTS_COLLECTION),
        http: reqwest::Client::new(),
        api_key: targets.tactical_api_key.to_string(),
    };
    let clients = &clients;
    let systems = schedule.iter().map(|stages| async move {
        for stage in stages {
            let results: Vec<Result<(), String>> = futures::stream::iter(stage)
                .map(|read| async move {
                    let found = read_one(clients, read).await?;
                    match read.expected(present) {
                        Some(expected) if expected != found => Err(format!(
                            "{}: found {found} objects, expected {expected}",
                            read.describe()
                        )),
                        _ => Ok(()),
                    }
                })
                .buffer_unordered(parallelism.max(1))
                .collect()
                .await;
            results.into_iter().collect::<Result<(), String>>()?;
        }
        Ok::<_, String>(())
    });
    let results = futures::future::join_all(systems).await;
    let elapsed = started.elapsed();
    results.into_iter().collect::<Result<(), String>>()?;
    let reads = || schedule.iter().flatten().flatten();
    let count = |f: fn(&Read) -> bool| reads().filter(|r| f(r)).count() as u64;
    Ok(Run {
        elapsed,
        nats: count(|r| matches!(r, Read::Stream(_) | Read::StreamPage(_))),
        kafka: count(|r| matches!(r, Read::Topic(_) | Read::AllTopics | Read::TopicConfigs(_))),
        mongo: count(|r| matches!(r, Read::Agent(_) | Read::Agents(_))),
    })
}

impl Read {
    fn describe(&self) -> String {
        match self {
            Read::Stream(name) => format!("stream {name}"),
            Read::StreamPage(offset) => format!("streams from {offset}"),
            Read::Topic(name) => format!("topic {name}"),
            Read::AllTopics => "all topics".into(),
            Read::TopicConfigs(names) => format!("configs of {} topics", names.len()),
            Read::Agent(name) => format!("agent {name}"),
            Read::Agents(names) => format!("{} agents", names.len()),
            Read::Http { url, .. } | Read::List { url, .. } => format!("GET {url}"),
        }
    }
}

/// A NATS JetStream API request: 1 when it answers, 0 when it answers "not found" (404).
async fn jetstream(clients: &Clients, subject: String, body: &str) -> Result<usize, String> {
    let msg = clients
        .nats
        .request(subject.clone(), body.to_string().into())
        .await
        .map_err(|e| format!("{subject}: {e}"))?;
    let answer: Value =
        serde_json::from_slice(&msg.payload).map_err(|e| format!("{subject}: {e}"))?;
    match answer.get("error") {
        None => Ok(1),
        Some(e) if e["code"] == 404 => Ok(0),
        Some(e) => Err(format!("{subject}: {e}")),
    }
}

/// Kafka metadata of one topic (1 when it exists), or of all (`None`), from a blocking
/// librdkafka call.
async fn metadata(clients: &Clients, topic: Option<&str>) -> Result<usize, String> {
    let admin = Arc::clone(&clients.kafka);
    let wanted = topic.map(str::to_string);
    let what = topic.unwrap_or("all topics").to_string();
    let metadata = tokio::task::spawn_blocking(move || {
        admin
            .inner()
            .fetch_metadata(wanted.as_deref(), Duration::from_secs(10))
    })
    .await
    .map_err(|e| format!("metadata {what}: {e}"))?
    .map_err(|e| format!("metadata {what}: {e}"))?;
    match (topic, metadata.topics().first()) {
        (Some(_), Some(t)) if t.error().is_none() && !t.partitions().is_empty() => Ok(1),
        _ => Ok(0),
    }
}

/// Sends one read; returns how many of the objects it asked for exist.
async fn read_one(clients: &Clients, read: &Read) -> Result<usize, String> {
    match read {
        Read::Stream(name) => jetstream(clients, format!("$JS.API.STREAM.INFO.{name}"), "").await,
        Read::StreamPage(offset) => {
            let body = format!("{{\"offset\":{offset}}}");
            jetstream(clients, "$JS.API.STREAM.LIST".into(), &body).await
        }
        Read::Topic(name) => metadata(clients, Some(name)).await,
        Read::AllTopics => metadata(clients, None).await,
        Read::TopicConfigs(names) => {
            let specifiers: Vec<_> = names.iter().map(|n| ResourceSpecifier::Topic(n)).collect();
            let results = clients
                .kafka
                .describe_configs(&specifiers, &AdminOptions::new())
                .await
                .map_err(|e| format!("describe_configs: {e}"))?;
            Ok(results.iter().filter(|r| r.is_ok()).count())
        }
        Read::Agent(name) => match clients.agents.find_one(doc! {"_id": name}).await {
            Ok(found) => Ok(usize::from(found.is_some())),
            Err(e) => Err(format!("find agent {name}: {e}")),
        },
        Read::Agents(names) => {
            let found: Vec<Document> = clients
                .agents
                .find(doc! {"_id": {"$in": names}})
                .await
                .map_err(|e| format!("find agents: {e}"))?
                .try_collect()
                .await
                .map_err(|e| format!("find agents: {e}"))?;
            Ok(found.len())
        }
        Read::Http { url, tactical } | Read::List { url, tactical } => {
            let mut request = clients.http.get(url);
            if *tactical {
                request = request.header("x-api-key", &clients.api_key);
            }
            let response = request
                .send()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            let status = response.status();
            let body = response
                .bytes()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            // Parsed, as a real client would.
            let _: Value = serde_json::from_slice(&body).map_err(|e| format!("GET {url}: {e}"))?;
            match status.as_u16() {
                200 => Ok(1),
                404 if matches!(read, Read::Http { .. }) => Ok(0),
                _ => Err(format!("GET {url}: {status}")),
            }
        }
    }
}
