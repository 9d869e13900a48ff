//! Synthetic manifests of N mixed resources, and what the benchmark needs to know about them
//! (names for the baselines, counts for the lower bound).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

/// How many resources of each kind a manifest of `n` holds. Per 20 resources: 4 streams,
/// 3 topics, 2 connectors, 3 Pinot schemas with their 3 tables, 2 tool agents, 3 scripts.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Mix {
    pub streams: usize,
    pub topics: usize,
    pub connectors: usize,
    /// Pinot schemas; each has one table of the same raw name.
    pub tables: usize,
    pub agents: usize,
    pub scripts: usize,
}

impl Mix {
    pub fn of(n: usize) -> Mix {
        let streams = n / 5;
        let topics = n * 3 / 20;
        let connectors = n / 10;
        let tables = n * 3 / 20;
        let agents = n / 10;
        // Scripts take the remainder, so the total is exactly n.
        let scripts = n - streams - topics - connectors - 2 * tables - agents;
        Mix {
            streams,
            topics,
            connectors,
            tables,
            agents,
            scripts,
        }
    }

    pub fn total(&self) -> usize {
        self.streams + self.topics + self.connectors + 2 * self.tables + self.agents + self.scripts
    }
}

pub fn stream(i: usize) -> String {
    format!("BENCH_{i:05}")
}

pub fn topic(i: usize) -> String {
    format!("bench.topic.{i:05}")
}

pub fn connector(i: usize) -> String {
    format!("bench-pg-{i:05}")
}

/// Pinot schema name, which is also the table's raw name.
pub fn schema(i: usize) -> String {
    format!("bench_{i:05}")
}

/// Every other table is REALTIME (consuming one of the manifest's topics, so it also waits for
/// that topic on apply); the rest are OFFLINE.
pub fn table_type(i: usize, mix: &Mix) -> &'static str {
    if i % 2 == 0 && mix.topics > 0 {
        "REALTIME"
    } else {
        "OFFLINE"
    }
}

pub fn agent(i: usize) -> String {
    format!("bench-agent-{i:05}")
}

pub fn script(i: usize) -> String {
    format!("Bench script {i:05}")
}

/// Where the generated target config points.
pub struct Endpoints<'a> {
    pub nats: &'a str,
    pub kafka: &'a str,
    pub pinot: &'a str,
    pub connect: &'a str,
    pub tactical: &'a str,
    pub mongo: &'a str,
    /// Changes (and provider reads) in flight per live system.
    pub concurrency: usize,
}

/// Makes the name and spec of resource `i` of one kind.
type Make<'a> = &'a dyn Fn(usize) -> (String, Value);

/// Writes `ofctl.toml` and one YAML file per kind into `dir`. Specs are written as JSON flow
/// mappings (valid YAML), which keeps quoting exact whatever the values hold.
pub fn write(dir: &Path, mix: &Mix, endpoints: &Endpoints<'_>) -> std::io::Result<()> {
    let e = endpoints;
    std::fs::write(
        dir.join("ofctl.toml"),
        format!(
            "tenant = \"bench\"\nenvironment = \"bench\"\n\n[engine]\nconcurrency = {}\n\n\
             [nats]\nurl = \"{}\"\n\n[kafka]\nbrokers = \"{}\"\n\n[pinot]\nurl = \"{}\"\n\n\
             [connect]\nurl = \"{}\"\n\n[mongo]\nuri = \"{}\"\n\n[tactical]\nurl = \"{}\"\n\
             api_key = \"${{env:OFCTL_BENCH_TACTICAL_API_KEY}}\"\n\n[variables]\n\
             BENCH_DB_PASSWORD = \"${{env:OFCTL_BENCH_DB_PASSWORD:-bench-only-password}}\"\n",
            e.concurrency, e.nats, e.kafka, e.pinot, e.connect, e.mongo, e.tactical
        ),
    )?;
    let files: [(&str, &str, usize, Make<'_>); 7] = [
        ("streams.yaml", "NatsStream", mix.streams, &|i| {
            (stream(i), stream_spec(i))
        }),
        ("topics.yaml", "KafkaTopic", mix.topics, &|i| {
            (topic(i), topic_spec())
        }),
        ("connectors.yaml", "KafkaConnector", mix.connectors, &|i| {
            (connector(i), connector_spec(i))
        }),
        ("schemas.yaml", "PinotSchema", mix.tables, &|i| {
            (schema(i), schema_spec(i))
        }),
        ("tables.yaml", "PinotTable", mix.tables, &|i| {
            let kind = table_type(i, mix);
            (
                format!("{}_{kind}", schema(i)),
                table_spec(i, kind, mix, e.kafka),
            )
        }),
        ("agents.yaml", "ToolAgent", mix.agents, &|i| {
            (agent(i), agent_spec(i))
        }),
        ("scripts.yaml", "TacticalScript", mix.scripts, &|i| {
            (script(i), script_spec(i))
        }),
    ];
    for (file, kind, count, make) in files {
        let mut text = String::new();
        for i in 0..count {
            let (name, spec) = make(i);
            let _ = write!(
                text,
                "apiVersion: ofctl.openframe.io/v1\nkind: {kind}\nmetadata:\n  name: {}\n  labels: {{app.kubernetes.io/part-of: bench}}\nspec: {spec}\n---\n",
                Value::String(name)
            );
        }
        std::fs::write(dir.join(file), text)?;
    }
    Ok(())
}

fn stream_spec(i: usize) -> Value {
    json!({
        "description": format!("benchmark stream {i}"),
        "subjects": [format!("bench.s{i:05}.>")],
        "storage": "file",
        "retention": "limits",
        "max_msgs_per_subject": 100,
        "discard": "old",
    })
}

fn topic_spec() -> Value {
    json!({
        "partitions": 3,
        "replication_factor": 1,
        "config": {"cleanup.policy": "delete", "retention.ms": "604800000"},
    })
}

/// A Debezium PostgreSQL source shaped like the platform's (desired-state/connect).
fn connector_spec(i: usize) -> Value {
    json!({
        "config": {
            "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
            "tasks.max": "1",
            "database.hostname": format!("db-{i:05}.bench.internal"),
            "database.port": "5432",
            "database.user": "bench",
            "database.password": "${BENCH_DB_PASSWORD}",
            "database.dbname": "bench",
            "topic.prefix": format!("bench_{i:05}"),
            "plugin.name": "pgoutput",
            "slot.name": format!("bench_slot_{i:05}"),
            "publication.name": format!("bench_pub_{i:05}"),
            "table.include.list": "public.events,public.devices",
            "snapshot.mode": "initial",
            "tombstones.on.delete": "false",
            "transforms": "route",
            "transforms.route.type": "io.debezium.transforms.ByLogicalTableRouter",
            "transforms.route.topic.regex": format!("bench_{i:05}\\.public\\.(.*)"),
            "transforms.route.topic.replacement": format!("bench.{i:05}.$1.events"),
        }
    })
}

fn schema_spec(i: usize) -> Value {
    let dim = |name: &str| json!({"name": name, "dataType": "STRING", "singleValueField": true});
    json!({
        "schemaName": schema(i),
        "primaryKeyColumns": ["eventId"],
        "dimensionFieldSpecs": [
            dim("eventId"), dim("tenantId"), dim("deviceId"), dim("hostname"),
            dim("organizationId"), dim("toolType"), dim("eventType"), dim("summary"),
        ],
        "metricFieldSpecs": [{"name": "count", "dataType": "LONG"}],
        "dateTimeFieldSpecs": [{
            "name": "eventTimestamp", "dataType": "LONG",
            "format": "1:MILLISECONDS:EPOCH", "granularity": "1:MILLISECONDS",
        }],
    })
}

fn table_spec(i: usize, kind: &str, mix: &Mix, brokers: &str) -> Value {
    let mut index = json!({
        "loadMode": "MMAP",
        "nullHandlingEnabled": true,
        "invertedIndexColumns": ["tenantId", "deviceId", "eventType"],
        "noDictionaryColumns": ["summary"],
        "rangeIndexColumns": ["eventTimestamp"],
    });
    if kind == "REALTIME" {
        index["streamConfigs"] = json!({
            "streamType": "kafka",
            "stream.kafka.topic.name": topic(i % mix.topics.max(1)),
            "stream.kafka.broker.list": brokers,
            "stream.kafka.consumer.type": "lowlevel",
            "stream.kafka.decoder.class.name": "org.apache.pinot.plugin.stream.kafka.KafkaJSONMessageDecoder",
            "stream.kafka.consumer.prop.auto.offset.reset": "smallest",
            "realtime.segment.flush.threshold.rows": "100000",
        });
    }
    json!({
        "tableName": schema(i),
        "tableType": kind,
        "segmentsConfig": {
            "timeColumnName": "eventTimestamp",
            "timeType": "MILLISECONDS",
            "replication": "1",
            "retentionTimeUnit": "DAYS",
            "retentionTimeValue": "30",
        },
        "tableIndexConfig": index,
        "tenants": {"broker": "DefaultTenant", "server": "DefaultTenant"},
    })
}

/// A tool agent shaped like the platform's (desired-state/mongo/agents).
fn agent_spec(i: usize) -> Value {
    let download = |os: &str, file: &str, target: &str| {
        json!({
            "os": os,
            "linkTemplate": format!("https://example.invalid/bench/{i}/releases/download/{{version}}/{file}"),
            "fileName": file,
            "targetFileName": target,
        })
    };
    json!({
        "id": agent(i),
        "toolId": format!("bench-tool-{i:05}"),
        "version": format!("1.0.{i}"),
        "status": "ENABLED",
        "sessionType": "SERVICE",
        "runCommandArgs": ["--server-url", "https://bench.example.invalid", "--mode", "service"],
        "downloadConfigurations": [
            download("windows", "agent-windows-amd64.zip", "agent.exe"),
            download("macos", "agent-macos-universal.tar.gz", "agent"),
        ],
        "assets": [{
            "id": "helper",
            "version": "0.0.1",
            "source": "GITHUB",
            "downloadConfigurations": [download("windows", "helper-windows.zip", "helper.exe")],
            "executable": true,
        }],
        "allowVersionUpdate": true,
        "allowConfigurationUpdate": true,
    })
}

fn script_spec(i: usize) -> Value {
    let body: String = (0..20)
        .map(|line| format!("Write-Output \"bench script {i} step {line}\"\n"))
        .collect();
    json!({
        "description": format!("benchmark script {i}"),
        "shell": "powershell",
        "category": "Bench",
        "args": ["-Verbose"],
        "default_timeout": 120,
        "supported_platforms": ["windows"],
        "run_as_user": false,
        "script_body": body,
    })
}
