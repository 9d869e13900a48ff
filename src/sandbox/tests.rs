//! Drives each emulator over real HTTP (port 0) with reqwest.

use std::time::{Duration, Instant};

use reqwest::{header, Client, Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};

use super::*;

const KEY: &str = "test-key";

struct Env {
    sandbox: Sandbox,
    http: Client,
}

async fn env() -> Env {
    env_with(FaultConfig::default()).await
}

async fn env_with(faults: FaultConfig) -> Env {
    let opts = SandboxOptions {
        tactical_api_key: KEY.into(),
        faults,
        ..SandboxOptions::default()
    };
    let sandbox = start(opts).await.expect("sandbox starts");
    let http = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    Env { sandbox, http }
}

struct Reply {
    status: StatusCode,
    headers: header::HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

async fn send(req: RequestBuilder) -> Reply {
    let resp = req.send().await.expect("response");
    let (status, headers) = (resp.status(), resp.headers().clone());
    Reply {
        status,
        headers,
        text: resp.text().await.expect("body"),
    }
}

impl Env {
    fn req(&self, method: Method, base: &str, path: &str, body: Option<Value>) -> RequestBuilder {
        let req = self.http.request(method, format!("{base}{path}"));
        match body {
            Some(b) => req.json(&b),
            None => req,
        }
    }

    async fn pinot(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        send(self.req(method, &self.sandbox.pinot_url, path, body)).await
    }

    async fn connect(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        send(self.req(method, &self.sandbox.connect_url, path, body)).await
    }

    async fn trmm(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let req = self.req(method, &self.sandbox.tactical_url, path, body);
        send(req.header("X-API-KEY", KEY)).await
    }
}

// ---------------------------------------------------------------------------------------------
// Pinot

fn devices_schema() -> Value {
    json!({
        "schemaName": "devices",
        "primaryKeyColumns": ["machineId"],
        "dimensionFieldSpecs": [
            {"name": "tenantId", "dataType": "STRING", "singleValueField": true},
            {"name": "machineId", "dataType": "STRING", "singleValueField": true, "notNull": false},
            {"name": "tags", "dataType": "STRING", "singleValueField": false}
        ],
        "metricFieldSpecs": [{"name": "cpu", "dataType": "DOUBLE", "defaultNullValue": 0}],
        "dateTimeFieldSpecs": [{
            "name": "ingestionTime", "dataType": "LONG",
            "format": "1:MILLISECONDS:EPOCH", "granularity": "1:MILLISECONDS"
        }],
        "owner": "ofctl"
    })
}

fn devices_table() -> Value {
    json!({
        "tableName": "devices",
        "tableType": "realtime",
        "segmentsConfig": {
            "timeColumnName": "ingestionTime", "timeType": "MILLISECONDS",
            "replication": 1, "retentionTimeUnit": "DAYS", "retentionTimeValue": "3650"
        },
        "tableIndexConfig": {
            "loadMode": "MMAP", "nullHandlingEnabled": true, "optimizeDictionary": "true",
            "invertedIndexColumns": ["tenantId", "tags"],
            "streamConfigs": {"streamType": "kafka", "realtime.segment.flush.threshold.rows": 100000}
        },
        "fieldConfigList": [
            {"name": "tags", "encodingType": "DICTIONARY", "properties": {"maxMultiValueEntries": 50}}
        ],
        "routing": {"instanceSelectorType": "strictReplicaGroup"},
        "upsertConfig": {"mode": "FULL", "comparisonColumn": "ingestionTime", "snapshot": "ENABLE"},
        "extra": 1
    })
}

#[tokio::test]
async fn pinot_schema_lifecycle() {
    let e = env().await;
    let r = e
        .pinot(Method::POST, "/schemas", Some(devices_schema()))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json(),
        json!({"unrecognizedProperties": {"$.owner": "ofctl"}, "status": "devices successfully added"})
    );

    let got = e.pinot(Method::GET, "/schemas/devices", None).await.json();
    let keys: Vec<&String> = got.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "schemaName",
            "enableColumnBasedNullHandling",
            "dimensionFieldSpecs",
            "metricFieldSpecs",
            "dateTimeFieldSpecs",
            "primaryKeyColumns"
        ]
    );
    assert_eq!(got["enableColumnBasedNullHandling"], false);
    assert_eq!(
        got["dimensionFieldSpecs"],
        json!([
            {"name": "tenantId", "dataType": "STRING", "fieldType": "DIMENSION"},
            {"name": "machineId", "dataType": "STRING", "fieldType": "DIMENSION"},
            {"name": "tags", "dataType": "STRING", "fieldType": "DIMENSION", "singleValueField": false}
        ])
    );
    // 0 is the metric default null value, so it is not echoed.
    assert_eq!(
        got["metricFieldSpecs"],
        json!([{"name": "cpu", "dataType": "DOUBLE", "fieldType": "METRIC"}])
    );
    assert_eq!(got["dateTimeFieldSpecs"][0]["fieldType"], "DATE_TIME");
    assert_eq!(
        e.pinot(Method::GET, "/schemas", None).await.json(),
        json!(["devices"])
    );
    let info = e.pinot(Method::GET, "/schemas/info", None).await.json();
    assert_eq!(info[0]["numDimensionFields"], 3);

    let r = e
        .pinot(
            Method::POST,
            "/schemas?override=false",
            Some(devices_schema()),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(
        r.json(),
        json!({"code": 409, "error": "Schema: devices already exists"})
    );

    // Dropping a column / changing a type is backward-incompatible unless forced.
    let mut dropped = devices_schema();
    dropped["dimensionFieldSpecs"].as_array_mut().unwrap().pop();
    let r = e
        .pinot(Method::PUT, "/schemas/devices", Some(dropped.clone()))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], 400);
    let msg = r.json()["error"].as_str().unwrap().to_owned();
    assert!(
        msg.starts_with("Backward incompatible schema devices. Only allow adding new columns"),
        "{msg}"
    );
    assert!(msg.contains("Missing columns: [tags]"), "{msg}");
    let mut retyped = devices_schema();
    retyped["metricFieldSpecs"][0]["dataType"] = json!("LONG");
    let r = e.pinot(Method::POST, "/schemas", Some(retyped)).await;
    assert_eq!(
        r.status, 400,
        "override=true POST is an update and runs the same check"
    );
    let mut pk = devices_schema();
    pk["primaryKeyColumns"] = json!(["tenantId"]);
    assert_eq!(
        e.pinot(Method::PUT, "/schemas/devices", Some(pk))
            .await
            .status,
        400
    );

    // Adding a column is allowed; PUT says "added" even on update.
    let mut added = devices_schema();
    added["dimensionFieldSpecs"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "os", "dataType": "STRING"}));
    let r = e.pinot(Method::PUT, "/schemas/devices", Some(added)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["status"], "devices successfully added");
    let r = e
        .pinot(Method::PUT, "/schemas/devices?force=true", Some(dropped))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let r = e
        .pinot(Method::PUT, "/schemas/other", Some(devices_schema()))
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .starts_with("Schema name mismatch"));
    let mut ghost = devices_schema();
    ghost["schemaName"] = json!("ghost");
    let r = e.pinot(Method::PUT, "/schemas/ghost", Some(ghost)).await;
    assert_eq!(
        r.json(),
        json!({"code": 404, "error": "Failed to find schema ghost"})
    );
    let r = e.pinot(Method::GET, "/schemas/ghost", None).await;
    assert_eq!(r.json(), json!({"code": 404, "error": "Schema not found"}));

    let r = e
        .pinot(Method::POST, "/schemas/validate", Some(devices_schema()))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["unrecognizedProperties"],
        json!({"$.owner": "ofctl"})
    );
    assert_eq!(r.json()["dimensionFieldSpecs"][0]["fieldType"], "DIMENSION");

    // Schemas may also arrive as a single-file multipart upload.
    let mut multi = devices_schema();
    multi["schemaName"] = json!("uploaded");
    let body = format!(
        "--XyZ\r\nContent-Disposition: form-data; name=\"schema\"; filename=\"s.json\"\r\n\
         Content-Type: application/json\r\n\r\n{multi}\r\n--XyZ--\r\n"
    );
    let req = e.http.post(format!("{}/schemas", e.sandbox.pinot_url));
    let req = req.header(header::CONTENT_TYPE, "multipart/form-data; boundary=XyZ");
    let r = send(req.body(body)).await;
    assert_eq!(
        r.json()["status"],
        "uploaded successfully added",
        "{}",
        r.text
    );

    let r = send(
        e.http
            .post(format!("{}/schemas", e.sandbox.pinot_url))
            .body("{not json"),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"],
        "Invalid schema config json string: {not json"
    );
    let r = e
        .pinot(
            Method::POST,
            "/schemas",
            Some(json!({"dimensionFieldSpecs": []})),
        )
        .await;
    assert_eq!(
        r.json()["error"],
        "Invalid schema. Reason: 'schemaName' should not be null or empty"
    );

    let r = e.pinot(Method::GET, "/nope", None).await;
    assert_eq!(
        r.json(),
        json!({"code": 404, "error": "HTTP 404 Not Found"})
    );
}

#[tokio::test]
async fn pinot_table_lifecycle() {
    let e = env().await;
    let r = e
        .pinot(Method::POST, "/tables", Some(devices_table()))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"],
        "Failed to find schema for table: devices_REALTIME"
    );

    e.pinot(Method::POST, "/schemas", Some(devices_schema()))
        .await;
    let r = e
        .pinot(Method::POST, "/tables", Some(devices_table()))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json(),
        json!({"unrecognizedProperties": {"$.extra": 1}, "status": "Table devices_REALTIME successfully added"})
    );
    let r = e
        .pinot(Method::POST, "/tables", Some(devices_table()))
        .await;
    assert_eq!(r.status, 409);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .starts_with("Table config for devices_REALTIME already exists"));

    let got = e.pinot(Method::GET, "/tables/devices", None).await.json();
    let cfg = &got["REALTIME"];
    assert_eq!(got.as_object().unwrap().len(), 1);
    assert_eq!(cfg["tableName"], "devices_REALTIME");
    assert_eq!(cfg["tableType"], "REALTIME");
    assert_eq!(cfg["isDimTable"], false);
    assert_eq!(cfg["metadata"], json!({"customConfigs": {}}));
    assert_eq!(
        cfg["tenants"],
        json!({"broker": "DefaultTenant", "server": "DefaultTenant"})
    );
    assert_eq!(cfg["segmentsConfig"]["replication"], "1");
    assert_eq!(cfg["segmentsConfig"]["minimizeDataMovement"], false);
    let index = &cfg["tableIndexConfig"];
    assert_eq!(index["rangeIndexVersion"], 2);
    assert_eq!(index["noDictionarySizeRatioThreshold"], 0.85);
    assert_eq!(index["nullHandlingEnabled"], true);
    assert_eq!(index["optimizeDictionary"], true);
    assert_eq!(index["skipSegmentPreprocess"], false);
    assert_eq!(index["columnMajorSegmentBuilderEnabled"], true);
    assert_eq!(
        index["streamConfigs"]["realtime.segment.flush.threshold.rows"],
        "100000"
    );
    assert_eq!(
        cfg["fieldConfigList"][0]["properties"]["maxMultiValueEntries"],
        "50"
    );
    assert_eq!(cfg["fieldConfigList"][0]["indexTypes"], json!([]));
    let upsert = &cfg["upsertConfig"];
    assert_eq!(upsert["comparisonColumns"], json!(["ingestionTime"]));
    assert_eq!(upsert["hashFunction"], "NONE");
    assert_eq!(upsert["snapshot"], "ENABLE");
    assert_eq!(upsert["metadataTTL"], 0.0);
    assert!(cfg.get("extra").is_none());
    assert_eq!(
        cfg.as_object().unwrap().keys().next_back().unwrap(),
        "isDimTable"
    );

    assert_eq!(
        e.pinot(Method::GET, "/tables", None).await.json(),
        json!({"tables": ["devices"]})
    );
    let r = e.pinot(Method::GET, "/tables?type=realtime", None).await;
    assert_eq!(r.json(), json!({"tables": ["devices_REALTIME"]}));
    assert_eq!(
        e.pinot(Method::GET, "/tables?type=offline", None)
            .await
            .json(),
        json!({"tables": []})
    );
    let r = e
        .pinot(Method::GET, "/tables/devices?type=offline", None)
        .await;
    assert_eq!(
        r.json(),
        json!({"code": 404, "error": "Table devices_OFFLINE does not exist"})
    );

    let r = e
        .pinot(Method::PUT, "/tables/other", Some(devices_table()))
        .await;
    assert_eq!(
        r.json()["error"],
        "Request table other_REALTIME does not match table name in the body devices_REALTIME"
    );
    let mut partial = devices_table();
    partial["upsertConfig"]["mode"] = json!("PARTIAL");
    let r = e
        .pinot(Method::PUT, "/tables/devices", Some(partial.clone()))
        .await;
    assert_eq!(r.status, 400);
    let msg = r.json()["error"].as_str().unwrap().to_owned();
    assert!(msg.contains("Cannot modify [upsertConfig.mode]"), "{msg}");
    let r = e
        .pinot(Method::PUT, "/tables/devices?force=true", Some(partial))
        .await;
    assert_eq!(
        r.json(),
        json!({"unrecognizedProperties": {"$.extra": 1}, "status": "Table config updated for devices"})
    );

    // Validation (schema lookup) precedes the existence check on PUT.
    let mut ghost = devices_table();
    ghost["tableName"] = json!("ghost");
    let r = e
        .pinot(Method::PUT, "/tables/ghost", Some(ghost.clone()))
        .await;
    assert_eq!(r.status, 400);
    let mut ghost_schema = devices_schema();
    ghost_schema["schemaName"] = json!("ghost");
    e.pinot(Method::POST, "/schemas", Some(ghost_schema)).await;
    let r = e.pinot(Method::PUT, "/tables/ghost", Some(ghost)).await;
    assert_eq!(
        r.json(),
        json!({"code": 404, "error": "Table ghost_REALTIME does not exist"})
    );

    let r = e.pinot(Method::DELETE, "/schemas/devices", None).await;
    assert_eq!(r.status, 409);
    assert_eq!(
        r.json()["error"],
        "Cannot delete schema devices, as it is associated with table devices_REALTIME"
    );

    assert_eq!(
        e.pinot(Method::GET, "/tableConfigs", None).await.json(),
        json!(["devices"])
    );
    let tc = e
        .pinot(Method::GET, "/tableConfigs/devices", None)
        .await
        .json();
    assert_eq!(tc["tableName"], "devices");
    assert_eq!(tc["schema"]["schemaName"], "devices");
    assert_eq!(tc["realtime"]["tableName"], "devices_REALTIME");
    assert!(tc.get("offline").is_none());
    assert_eq!(
        e.pinot(Method::GET, "/tableConfigs/zzz", None).await.status,
        500
    );

    let r = e
        .pinot(Method::DELETE, "/tables/devices?type=bogus", None)
        .await;
    assert_eq!(
        r.json(),
        json!({"code": 400, "error": "Illegal table type 'bogus'"})
    );
    let r = e.pinot(Method::DELETE, "/tables/devices", None).await;
    assert_eq!(
        r.json(),
        json!({"status": "Tables: [devices_REALTIME] deleted"})
    );
    let r = e.pinot(Method::DELETE, "/tables/devices", None).await;
    assert_eq!(
        r.json(),
        json!({"code": 404, "error": "Table 'devices' with type null does not exist"})
    );
    let r = e.pinot(Method::DELETE, "/schemas/devices", None).await;
    assert_eq!(r.json(), json!({"status": "Schema devices deleted"}));
}

#[tokio::test]
async fn pinot_offline_validate_and_parse_errors() {
    let e = env().await;
    let mut schema = devices_schema();
    schema["schemaName"] = json!("logs");
    schema.as_object_mut().unwrap().remove("primaryKeyColumns");
    e.pinot(Method::POST, "/schemas", Some(schema)).await;
    let offline = json!({
        "tableName": "logs", "tableType": "OFFLINE",
        "segmentsConfig": {"timeColumnName": "ingestionTime", "replication": "1"},
        "tableIndexConfig": {"loadMode": "MMAP"},
        "ingestionConfig": {"batchIngestionConfig": {"segmentIngestionType": "APPEND"}}
    });
    let r = e
        .pinot(Method::POST, "/tables/validate", Some(offline.clone()))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["unrecognizedProperties"], json!({}));
    assert_eq!(v["OFFLINE"]["tableName"], "logs_OFFLINE");
    // validate does not run the tenant fill (apis.md §1.3)
    assert_eq!(v["OFFLINE"]["tenants"], json!({}));
    assert_eq!(
        v["OFFLINE"]["ingestionConfig"]["segmentTimeValueCheck"],
        true
    );
    assert_eq!(
        v["OFFLINE"]["ingestionConfig"]["batchIngestionConfig"]["consistentDataPush"],
        false
    );
    assert_eq!(
        e.pinot(Method::GET, "/tables", None).await.json(),
        json!({"tables": []})
    );

    let mut upsert = offline.clone();
    upsert["upsertConfig"] = json!({"mode": "FULL"});
    let r = e.pinot(Method::POST, "/tables", Some(upsert)).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("realtime table only"));

    let mut missing = offline.clone();
    missing.as_object_mut().unwrap().remove("segmentsConfig");
    let r = e.pinot(Method::POST, "/tables", Some(missing)).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .ends_with("'segmentsConfig' must be configured"));
    let r = send(
        e.http
            .post(format!("{}/tables", e.sandbox.pinot_url))
            .body("["),
    )
    .await;
    assert_eq!(r.json()["code"], 400);
}

// ---------------------------------------------------------------------------------------------
// Kafka Connect

fn pg_config() -> Value {
    json!({
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "tasks.max": 1,
        "database.hostname": "postgres.local",
        "database.port": 5432,
        "database.user": "trmm",
        "database.password": "s3cret",
        "database.dbname": "tacticalrmm",
        "plugin.name": "pgoutput",
        "topic.prefix": "trmm_taskresult",
        "tombstones.on.delete": false,
        "topic.creation.default.partitions": 10
    })
}

async fn status(e: &Env, name: &str) -> Value {
    e.connect(Method::GET, &format!("/connectors/{name}/status"), None)
        .await
        .json()
}

#[tokio::test]
async fn connect_lifecycle() {
    let e = env().await;
    let root = e.connect(Method::GET, "/", None).await.json();
    assert_eq!(root["version"], "3.9.0");
    let plugins = e
        .connect(Method::GET, "/connector-plugins", None)
        .await
        .json();
    assert_eq!(plugins.as_array().unwrap().len(), 3);

    let r = e
        .connect(
            Method::POST,
            "/connectors",
            Some(json!({"name": " pg ", "config": pg_config()})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.headers[header::LOCATION], "/connectors/pg");
    let info = r.json();
    assert_eq!(info["name"], "pg");
    assert_eq!(info["tasks"], json!([]));
    assert_eq!(info["type"], "source");

    let config = e
        .connect(Method::GET, "/connectors/pg/config", None)
        .await
        .json();
    assert_eq!(config["tasks.max"], "1");
    assert_eq!(config["database.port"], "5432");
    assert_eq!(config["tombstones.on.delete"], "false");
    assert_eq!(
        config["database.password"], "s3cret",
        "GET does not mask secrets"
    );
    assert_eq!(config["name"], "pg");
    assert!(config.as_object().unwrap().values().all(Value::is_string));

    let r = e
        .connect(
            Method::POST,
            "/connectors",
            Some(json!({"name": "pg", "config": pg_config()})),
        )
        .await;
    assert_eq!(
        r.json(),
        json!({"error_code": 409, "message": "Connector pg already exists"})
    );

    let worker = e
        .sandbox
        .connect_url
        .trim_start_matches("http://")
        .to_owned();
    let st = status(&e, "pg").await;
    assert_eq!(
        st,
        json!({
            "name": "pg",
            "connector": {"state": "RUNNING", "worker_id": worker},
            "tasks": [{"id": 0, "state": "RUNNING", "worker_id": worker}],
            "type": "source"
        })
    );

    assert_eq!(
        e.connect(Method::PUT, "/connectors/pg/pause", None)
            .await
            .status,
        202
    );
    let st = status(&e, "pg").await;
    assert_eq!(
        (
            st["connector"]["state"].clone(),
            st["tasks"][0]["state"].clone()
        ),
        (json!("PAUSED"), json!("PAUSED"))
    );
    assert_eq!(
        e.connect(Method::PUT, "/connectors/pg/resume", None)
            .await
            .status,
        202
    );
    assert_eq!(status(&e, "pg").await["tasks"][0]["state"], "RUNNING");

    let r = e.connect(Method::PUT, "/connectors/pg/stop", None).await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::NO_CONTENT, ""));
    let st = status(&e, "pg").await;
    assert_eq!(st["connector"]["state"], "STOPPED");
    assert_eq!(st["tasks"], json!([]));
    assert_eq!(
        e.connect(Method::GET, "/connectors/pg", None).await.json()["tasks"],
        json!([])
    );
    assert_eq!(
        e.connect(Method::GET, "/connectors/pg/tasks", None)
            .await
            .json(),
        json!([])
    );
    e.connect(Method::PUT, "/connectors/pg/resume", None).await;
    let st = status(&e, "pg").await;
    assert_eq!(st["connector"]["state"], "RUNNING");
    assert_eq!(st["tasks"][0]["state"], "RUNNING");
    let tasks = e
        .connect(Method::GET, "/connectors/pg/tasks", None)
        .await
        .json();
    assert_eq!(tasks[0]["id"], json!({"connector": "pg", "task": 0}));

    assert_eq!(
        e.connect(Method::GET, "/connectors", None).await.json(),
        json!(["pg"])
    );
    let expanded = e
        .connect(Method::GET, "/connectors?expand=status&expand=info", None)
        .await
        .json();
    assert_eq!(expanded["pg"]["status"]["connector"]["state"], "RUNNING");
    assert_eq!(
        expanded["pg"]["info"]["tasks"],
        json!([{"connector": "pg", "task": 0}])
    );

    assert_eq!(
        e.connect(Method::DELETE, "/connectors/pg", None)
            .await
            .status,
        204
    );
    let r = e.connect(Method::DELETE, "/connectors/pg", None).await;
    assert_eq!(
        r.json(),
        json!({"error_code": 404, "message": "Connector pg not found"})
    );
    let r = e.connect(Method::GET, "/connectors/pg/status", None).await;
    assert_eq!(r.json()["message"], "No status found for connector pg");
    let r = e.connect(Method::PUT, "/connectors/pg/pause", None).await;
    assert_eq!(r.json()["message"], "Unknown connector pg");
}

#[tokio::test]
async fn connect_restart_semantics() {
    let e = env().await;
    e.connect(Method::PUT, "/connectors/pg/config", Some(pg_config()))
        .await;
    let r = e
        .connect(Method::POST, "/__sandbox/connectors/pg/tasks/0/fail", None)
        .await;
    assert_eq!(r.status, 200);
    let st = status(&e, "pg").await;
    assert_eq!(st["tasks"][0]["state"], "FAILED");
    assert!(st["tasks"][0]["trace"]
        .as_str()
        .unwrap()
        .starts_with("org.apache.kafka.connect.errors.ConnectException"));

    // Legacy restart: connector only, 204, the failed task stays failed.
    let r = e
        .connect(Method::POST, "/connectors/pg/restart", None)
        .await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::NO_CONTENT, ""));
    assert_eq!(status(&e, "pg").await["tasks"][0]["state"], "FAILED");

    let r = e
        .connect(
            Method::POST,
            "/connectors/pg/restart?includeTasks=true&onlyFailed=true",
            None,
        )
        .await;
    assert_eq!(r.status, 202);
    let body = r.json();
    assert_eq!(body["connector"]["state"], "RUNNING");
    assert_eq!(body["tasks"][0]["state"], "RESTARTING");
    assert!(body["tasks"][0].get("trace").is_none());
    tokio::time::sleep(Duration::from_millis(120)).await;
    let st = status(&e, "pg").await;
    assert_eq!(
        st["tasks"][0],
        json!({"id": 0, "state": "RUNNING", "worker_id": st["connector"]["worker_id"]})
    );

    // Nothing failed: still 202 with unchanged states.
    let r = e
        .connect(Method::POST, "/connectors/pg/restart?onlyFailed=true", None)
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(r.json()["connector"]["state"], "RUNNING");

    e.connect(Method::POST, "/__sandbox/connectors/pg/fail", None)
        .await;
    assert_eq!(status(&e, "pg").await["connector"]["state"], "FAILED");
    let r = e
        .connect(
            Method::POST,
            "/connectors/pg/restart?includeTasks=true",
            None,
        )
        .await;
    assert_eq!(r.json()["connector"]["state"], "RESTARTING");
    assert_eq!(r.json()["tasks"][0]["state"], "RESTARTING");
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(status(&e, "pg").await["connector"]["state"], "RUNNING");

    e.connect(Method::POST, "/__sandbox/connectors/pg/tasks/0/fail", None)
        .await;
    assert_eq!(
        e.connect(Method::POST, "/connectors/pg/tasks/0/restart", None)
            .await
            .status,
        204
    );
    assert_eq!(status(&e, "pg").await["tasks"][0]["state"], "RUNNING");
    let r = e
        .connect(Method::POST, "/connectors/pg/tasks/5/restart", None)
        .await;
    assert_eq!(
        r.json(),
        json!({"error_code": 404, "message": "Unknown task: pg-5"})
    );
    let r = e
        .connect(Method::POST, "/connectors/nope/restart", None)
        .await;
    assert_eq!(r.json()["message"], "Unknown connector: nope");
    let r = e
        .connect(Method::GET, "/connectors/pg/tasks/3/status", None)
        .await;
    assert_eq!(r.json()["message"], "No status found for task pg-3");
}

#[tokio::test]
async fn connect_config_upsert_and_validation() {
    let e = env().await;
    let r = e
        .connect(Method::PUT, "/connectors/my/config", Some(pg_config()))
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.headers[header::LOCATION], "/connectors/my");
    e.connect(Method::PUT, "/connectors/my/pause", None).await;
    let r = e
        .connect(Method::PUT, "/connectors/my/config", Some(pg_config()))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["tasks"], json!([{"connector": "my", "task": 0}]));
    assert_eq!(
        status(&e, "my").await["connector"]["state"],
        "PAUSED",
        "target state survives updates"
    );

    let mut named = pg_config();
    named["name"] = json!("other");
    let r = e
        .connect(Method::PUT, "/connectors/my/config", Some(named))
        .await;
    assert_eq!(
        r.json(),
        json!({"error_code": 400, "message": "Connector name configuration (other) doesn't match connector name in the URL (my)"})
    );

    let mut invalid = pg_config();
    let obj = invalid.as_object_mut().unwrap();
    obj.remove("database.hostname");
    obj.insert("topic.prefix".into(), json!("bad prefix!"));
    let r = e
        .connect(Method::PUT, "/connectors/bad/config", Some(invalid))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["message"],
        "Connector configuration is invalid and contains the following 2 error(s):\n\
         The 'database.hostname' value is invalid: A value is required\n\
         The 'topic.prefix' value is invalid: bad prefix! has invalid format (only the underscore, hyphen, dot and alphanumeric characters are allowed)\n\
         You can also find the above list of errors at the endpoint `/connector-plugins/{connectorType}/config/validate`"
    );
    let mysql = json!({"connector.class": "MySqlConnector", "database.hostname": "db", "topic.prefix": "x"});
    let r = e
        .connect(Method::PUT, "/connectors/fleet/config", Some(mysql))
        .await;
    let msg = r.json()["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("following 4 error(s)"), "{msg}");
    assert!(
        msg.contains("'schema.history.internal.kafka.topic'"),
        "{msg}"
    );

    let mut unknown = pg_config();
    unknown["connector.class"] = json!("com.example.Nope");
    let r = e
        .connect(Method::PUT, "/connectors/x/config", Some(unknown))
        .await;
    assert_eq!(r.status, 500);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("Failed to find any class that implements Connector"));
    let r = e
        .connect(Method::PUT, "/connectors/x/config", Some(json!({"a": 1})))
        .await;
    assert_eq!(
        r.json(),
        json!({"error_code": 400, "message": "Connector config {a=1, name=x} contains no connector type"})
    );
    let r = send(
        e.http
            .put(format!("{}/connectors/x/config", e.sandbox.connect_url))
            .body("{oops"),
    )
    .await;
    assert_eq!(
        r.json()["error_code"],
        500,
        "Jackson errors are not WebApplicationExceptions"
    );

    let r = e
        .connect(
            Method::PATCH,
            "/connectors/my/config",
            Some(json!({"plugin.name": null, "slot.name": "s1"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let config = e
        .connect(Method::GET, "/connectors/my/config", None)
        .await
        .json();
    assert!(config.get("plugin.name").is_none());
    assert_eq!(config["slot.name"], "s1");

    let r = e
        .connect(
            Method::PUT,
            "/connector-plugins/PostgresConnector/config/validate",
            Some(pg_config()),
        )
        .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(
        v["name"],
        "io.debezium.connector.postgresql.PostgresConnector"
    );
    // `name` is not injected on this path, so it is the only error.
    assert_eq!(v["error_count"], 1);
    let find = |n: &str| {
        v["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["definition"]["name"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(find("database.password")["value"]["value"], "[hidden]");
    assert_eq!(find("database.password")["definition"]["type"], "PASSWORD");
    assert_eq!(find("name")["definition"]["order"], 1);
    assert_eq!(find("slot.name")["value"]["value"], "debezium");
    let r = e
        .connect(
            Method::PUT,
            "/connector-plugins/MySql/config/validate",
            Some(pg_config()),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("Included connector type"));

    for (state, tasks) in [("paused", json!("PAUSED")), ("STOPPED", Value::Null)] {
        let name = format!("init-{state}");
        let body = json!({"name": name, "config": pg_config(), "initial_state": state});
        assert_eq!(
            e.connect(Method::POST, "/connectors", Some(body))
                .await
                .status,
            201
        );
        let st = status(&e, &name).await;
        assert_eq!(st["connector"]["state"], state.to_uppercase());
        assert_eq!(st["tasks"][0]["state"], tasks);
    }
    let r = e
        .connect(
            Method::POST,
            "/connectors",
            Some(json!({"config": pg_config()})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("String must be non-empty"));
}

#[tokio::test]
async fn connect_rebalance_admin() {
    let e = env().await;
    e.connect(Method::PUT, "/connectors/pg/config", Some(pg_config()))
        .await;
    let r = e
        .connect(Method::POST, "/__sandbox/rebalance?count=2", None)
        .await;
    assert_eq!(r.json(), json!({"pending": 2, "writes_only": false}));
    let r = e.connect(Method::GET, "/connectors/pg", None).await;
    assert_eq!(
        r.json(),
        json!({"error_code": 500, "message": "Request cannot be completed because a rebalance is expected"})
    );
    // Status reads and pause/resume are not affected.
    assert_eq!(
        e.connect(Method::GET, "/connectors/pg/status", None)
            .await
            .status,
        200
    );
    assert_eq!(
        e.connect(Method::PUT, "/connectors/pg/pause", None)
            .await
            .status,
        202
    );
    let r = e
        .connect(Method::PUT, "/connectors/pg/config", Some(pg_config()))
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(
        r.json()["message"],
        "Cannot complete request momentarily due to stale configuration (typically caused by a concurrent config change)"
    );
    assert_eq!(
        e.connect(Method::PUT, "/connectors/pg/config", Some(pg_config()))
            .await
            .status,
        200
    );

    // A stale worker config: reads by name are served, the next forwarded write is refused.
    e.connect(
        Method::POST,
        "/__sandbox/rebalance?count=1&writes_only=true",
        None,
    )
    .await;
    assert_eq!(
        e.connect(Method::GET, "/connectors/pg", None).await.status,
        200
    );
    let r = e
        .connect(Method::PUT, "/connectors/pg/config", Some(pg_config()))
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(
        e.connect(Method::PUT, "/connectors/pg/config", Some(pg_config()))
            .await
            .status,
        200
    );
}

// ---------------------------------------------------------------------------------------------
// Tactical RMM

async fn scripts(e: &Env, query: &str) -> Vec<Value> {
    let r = e
        .trmm(Method::GET, &format!("/scripts/{query}"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json().as_array().unwrap().clone()
}

#[tokio::test]
async fn tactical_auth() {
    let e = env().await;
    let r = send(e.http.get(format!("{}/scripts/", e.sandbox.tactical_url))).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"detail": "Authentication credentials were not provided."})
    );
    assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Token");
    let r = send(
        e.http
            .get(format!("{}/scripts/", e.sandbox.tactical_url))
            .header("X-API-KEY", "wrong"),
    )
    .await;
    assert_eq!(r.json(), json!({"detail": "Invalid token."}));
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn tactical_scripts() {
    let e = env().await;
    let builtins = scripts(&e, "").await;
    assert_eq!(builtins.len(), 3);
    assert!(builtins
        .iter()
        .all(|s| s["script_type"] == "builtin" && s["category"] == "Community"));
    assert!(builtins[0].get("script_body").is_none());

    let body = json!({
        "name": " OpenFrame Client Latest Update ",
        "description": "OpenFrame Client update to latest version",
        "shell": "powershell",
        "category": "OpenFrame",
        "default_timeout": "30",
        "script_body": "param()\n  Write-Output 1  \n",
        "hidden": true,
        "script_type": "builtin"
    });
    let r = e.trmm(Method::POST, "/scripts/", Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json(), json!("OpenFrame Client Latest Update was added!"));

    assert_eq!(
        scripts(&e, "").await.len(),
        3,
        "hidden scripts are excluded by default"
    );
    let all = scripts(&e, "?showHiddenScripts=true").await;
    assert_eq!(all.len(), 4);
    assert_eq!(all[0]["category"], "Community", "ordered by category");
    let mine = scripts(&e, "?showCommunityScripts=false&showHiddenScripts=true").await;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["script_type"], "userdefined");
    assert_eq!(
        scripts(&e, "?showHiddenScripts=True").await.len(),
        3,
        "only the literal \"true\" counts"
    );
    let id = mine[0]["id"].as_u64().unwrap();

    let detail = e
        .trmm(Method::GET, &format!("/scripts/{id}/"), None)
        .await
        .json();
    assert_eq!(detail["name"], "OpenFrame Client Latest Update");
    assert_eq!(
        detail["script_body"], "param()\n  Write-Output 1  \n",
        "script_body is not trimmed"
    );
    assert_eq!(detail["default_timeout"], 30);
    assert_eq!(detail["args"], json!([]));
    assert_eq!(detail["env_vars"], json!([]));
    assert_eq!(detail["supported_platforms"], json!([]));
    assert_eq!(detail["run_as_user"], false);
    assert_eq!(detail["favorite"], false);
    assert_eq!(detail["script_hash"].as_str().unwrap().len(), 64);
    assert!(detail.get("script_type").is_none() && detail.get("guid").is_none());

    let r = e
        .trmm(
            Method::PUT,
            &format!("/scripts/{id}/"),
            Some(json!({"description": "new"})),
        )
        .await;
    assert_eq!(
        r.json(),
        json!("OpenFrame Client Latest Update was edited!")
    );
    let after = e
        .trmm(Method::GET, &format!("/scripts/{id}/"), None)
        .await
        .json();
    assert_eq!(after["description"], "new");
    assert_eq!(
        after["script_body"], detail["script_body"],
        "PUT is partial"
    );

    let r = e
        .trmm(
            Method::POST,
            "/scripts/",
            Some(json!({"name": "x", "shell": "bash", "default_timeout": -1})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"shell": ["\"bash\" is not a valid choice."], "default_timeout": ["Ensure this value is greater than or equal to 0."]})
    );

    let r = e.trmm(Method::POST, "/scripts/", Some(json!({}))).await;
    assert_eq!(r.json(), json!(" was added!"));
    let blank = scripts(&e, "?showCommunityScripts=false").await;
    let blank = blank.iter().find(|s| s["name"] == "").unwrap();
    assert_eq!(
        (
            &blank["description"],
            &blank["shell"],
            &blank["default_timeout"],
            &blank["hidden"]
        ),
        (&json!(""), &json!("powershell"), &json!(90), &json!(false))
    );

    let r = e
        .trmm(Method::DELETE, &format!("/scripts/{id}/"), None)
        .await;
    assert_eq!(
        r.json(),
        json!("OpenFrame Client Latest Update was deleted!")
    );
    let r = e.trmm(Method::GET, &format!("/scripts/{id}/"), None).await;
    assert_eq!(
        (r.status, r.json()),
        (
            StatusCode::NOT_FOUND,
            json!({"detail": "No Script matches the given query."})
        )
    );
}

#[tokio::test]
async fn tactical_builtins_are_read_only() {
    let e = env().await;
    let before = e.trmm(Method::GET, "/scripts/1/", None).await.json();
    let r = e
        .trmm(
            Method::PUT,
            "/scripts/1/",
            Some(json!({"name": "mine", "script_body": "x"})),
        )
        .await;
    assert_eq!(
        (r.status, r.json()),
        (
            StatusCode::BAD_REQUEST,
            json!("Community scripts cannot be edited.")
        )
    );
    let r = e.trmm(Method::DELETE, "/scripts/1/", None).await;
    assert_eq!(
        (r.status, r.json()),
        (
            StatusCode::BAD_REQUEST,
            json!("Community scripts cannot be deleted")
        )
    );
    // favorite is applied, the rest of the body dropped
    let r = e
        .trmm(
            Method::PUT,
            "/scripts/1/",
            Some(json!({"favorite": true, "name": "mine"})),
        )
        .await;
    assert_eq!(r.status, 200);
    let after = e.trmm(Method::GET, "/scripts/1/", None).await.json();
    assert_eq!(after["favorite"], true);
    assert_eq!(after["name"], before["name"]);
    assert_eq!(after["script_body"], before["script_body"]);
}

#[tokio::test]
async fn tactical_routing_quirks() {
    let e = env().await;
    let r = e
        .trmm(Method::GET, "/scripts?showHiddenScripts=true", None)
        .await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.headers[header::LOCATION],
        "/scripts/?showHiddenScripts=true"
    );
    assert_eq!(
        e.trmm(Method::POST, "/scripts", Some(json!({})))
            .await
            .status,
        404
    );
    assert_eq!(
        e.trmm(Method::PUT, "/scripts/1", Some(json!({})))
            .await
            .status,
        404
    );
    let r = send(
        e.http
            .get(format!("{}/scripts/abc/", e.sandbox.tactical_url)),
    )
    .await;
    assert_eq!(r.status, 404, "unmatched URLs 404 before authentication");
    assert!(r.text.contains("<h1>Not Found</h1>"));
    let r = e.trmm(Method::PATCH, "/scripts/1/", Some(json!({}))).await;
    assert_eq!(
        (r.status, r.json()),
        (
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"detail": "Method \"PATCH\" not allowed."})
        )
    );
    let r = e.trmm(Method::GET, "/scripts/999/", None).await;
    assert_eq!(r.status, 404);
}

// ---------------------------------------------------------------------------------------------
// Faults, stats, lifecycle

#[tokio::test]
async fn error_rate_one_uses_each_envelope_and_spares_admin() {
    let e = env_with(FaultConfig {
        error_rate: 1.0,
        ..FaultConfig::default()
    })
    .await;
    let r = e.pinot(Method::GET, "/schemas", None).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["code"], 500);
    let r = e.connect(Method::GET, "/connectors", None).await;
    assert_eq!(
        r.json(),
        json!({"error_code": 500, "message": "Request timed out"})
    );
    let r = e.trmm(Method::GET, "/scripts/", None).await;
    assert_eq!(r.status, 500);
    assert!(r.text.contains("Server Error (500)"));

    let r = e
        .connect(Method::POST, "/__sandbox/rebalance?count=0", None)
        .await;
    assert_eq!(r.status, 200, "admin routes are never faulted");
    let stats = e
        .connect(Method::GET, "/__sandbox/stats", None)
        .await
        .json();
    assert_eq!(
        stats["pinot"],
        json!({"reads": 1, "writes": 0, "faults": 1})
    );
    assert_eq!(
        stats["connect"],
        json!({"reads": 1, "writes": 0, "faults": 1}),
        "admin calls are not counted"
    );
    assert_eq!(e.sandbox.stats.snapshot().tactical.faults, 1);
}

#[tokio::test]
async fn drop_rate_one_closes_the_connection() {
    let e = env_with(FaultConfig {
        drop_rate: 1.0,
        ..FaultConfig::default()
    })
    .await;
    for url in [
        &e.sandbox.pinot_url,
        &e.sandbox.connect_url,
        &e.sandbox.tactical_url,
    ] {
        let err = e
            .http
            .get(format!("{url}/schemas"))
            .send()
            .await
            .expect_err("connection dropped");
        assert!(err.is_request() || err.is_connect(), "{err:?}");
    }
    let r = send(
        e.http
            .get(format!("{}/__sandbox/stats", e.sandbox.pinot_url)),
    )
    .await;
    assert_eq!(r.json()["connect"]["faults"], 1);
}

#[tokio::test]
async fn dropped_writes_are_made_half_the_time_and_reads_can_be_spared() {
    let e = env_with(FaultConfig {
        drop_rate: 1.0,
        writes_only: true,
        seed: Some(11),
        ..FaultConfig::default()
    })
    .await;
    const POSTS: usize = 20;
    for i in 0..POSTS {
        let sent = e
            .req(
                Method::POST,
                &e.sandbox.tactical_url,
                "/scripts/",
                Some(json!({"name": format!("s{i}"), "shell": "shell", "script_body": "x"})),
            )
            .header("X-API-KEY", KEY)
            .send()
            .await;
        assert!(sent.is_err(), "every write is dropped: {sent:?}");
    }
    // Reads are answered; some dropped writes were made (the answer was lost), some not.
    let list = e.trmm(Method::GET, "/scripts/", None).await;
    assert_eq!(list.status, 200);
    let made = list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["script_type"] == "userdefined")
        .count();
    assert!(0 < made && made < POSTS, "{made} of {POSTS} made");
}

#[tokio::test]
async fn rebalance_rate_one_hits_forwarded_writes_only() {
    let e = env_with(FaultConfig {
        rebalance_rate: 1.0,
        seed: Some(7),
        ..FaultConfig::default()
    })
    .await;
    let r = e
        .connect(
            Method::POST,
            "/connectors",
            Some(json!({"name": "pg", "config": pg_config()})),
        )
        .await;
    assert_eq!(r.status, 409);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("Cannot complete request momentarily"));
    assert_eq!(
        e.connect(Method::GET, "/connectors", None).await.status,
        200
    );
    assert_eq!(
        e.connect(Method::PUT, "/connectors/pg/pause", None)
            .await
            .status,
        404
    );
    assert_eq!(
        e.pinot(Method::POST, "/schemas", Some(devices_schema()))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn latency_and_graceful_shutdown() {
    let e = env_with(FaultConfig {
        latency: Duration::from_millis(80),
        ..FaultConfig::default()
    })
    .await;
    let started = Instant::now();
    assert_eq!(
        e.connect(Method::GET, "/connectors", None).await.status,
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(80));
    let stats = e.sandbox.stats.snapshot();
    assert_eq!(
        stats.connect,
        SystemStats {
            reads: 1,
            writes: 0,
            faults: 0
        }
    );

    let url = e.sandbox.pinot_url.clone();
    e.sandbox.shutdown().await.expect("graceful shutdown");
    assert!(e.http.get(format!("{url}/schemas")).send().await.is_err());
}
