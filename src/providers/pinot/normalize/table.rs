//! Table configs (apis.md §1.3, §1.5): the canonical form of a table config, the names and
//! types it must agree with, and the changes the controller refuses unless forced.

use serde_json::{json, Value};

use super::{as_bool, check_name, strip_defaults, Obj};
use crate::provider::owner::OWNER_KEY;

pub const OFFLINE: &str = "OFFLINE";
pub const REALTIME: &str = "REALTIME";
/// What a single-tenant controller fills into a missing `tenants.broker` / `tenants.server`.
const DEFAULT_TENANT: &str = "DefaultTenant";

/// `devices_REALTIME` → (`devices`, `REALTIME`).
pub fn split_table_name(name: &str) -> Option<(&str, &'static str)> {
    for kind in [OFFLINE, REALTIME] {
        if let Some(raw) = name.strip_suffix(kind).and_then(|r| r.strip_suffix('_')) {
            if !raw.is_empty() {
                return Some((raw, kind));
            }
        }
    }
    None
}

/// `TableNameBuilder.tableNameWithType`: the suffix is added unless it is already there.
fn with_type(raw: &str, kind: &str) -> String {
    let suffix = format!("_{kind}");
    if raw.ends_with(&suffix) {
        raw.to_string()
    } else {
        format!("{raw}{suffix}")
    }
}

/// Scalars as the text a `String` field or a `Map<String, String>` value stores.
fn stringify(v: &mut Value) {
    if v.is_number() || v.is_boolean() {
        *v = Value::String(v.to_string());
    }
}

fn stringify_keys(obj: &mut Obj, keys: &[&str]) {
    for key in keys {
        if let Some(v) = obj.get_mut(*key) {
            stringify(v);
        }
    }
}

fn stringify_map(v: Option<&mut Value>) {
    if let Some(Value::Object(map)) = v {
        map.values_mut().for_each(stringify);
    }
}

fn section<'a>(obj: &'a mut Obj, key: &str) -> Option<&'a mut Obj> {
    obj.get_mut(key).and_then(Value::as_object_mut)
}

/// The controller's always-emitted primitive defaults (server_defaults.json), written once for
/// the provider, which strips them, and the emulator, which adds them.
static SERVER_DEFAULTS: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| {
    serde_json::from_str(include_str!("../server_defaults.json")).expect("server_defaults.json")
});

pub fn server_defaults(sections: &[&str]) -> Vec<(&'static str, Value)> {
    let all: &'static Value = &SERVER_DEFAULTS;
    sections
        .iter()
        .filter_map(|s| all[*s].as_object())
        .flatten()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect()
}

/// Primitive fields of `IndexingConfig`, always printed (1.5.1, plus master's addition).
fn index_defaults() -> Vec<(&'static str, Value)> {
    server_defaults(&["tableIndexConfig", "tableIndexConfigSinceMaster"])
}

fn upsert_defaults() -> Vec<(&'static str, Value)> {
    server_defaults(&["upsertConfig"])
}

/// Primitive fields of the instance-assignment model (`InstanceAssignmentConfig`,
/// `InstanceTagPoolConfig`, `InstanceReplicaGroupPartitionConfig`).
fn assignment_defaults() -> [(&'static str, Vec<(&'static str, Value)>); 2] {
    [
        (
            "tagPoolConfig",
            vec![("poolBased", json!(false)), ("numPools", json!(0))],
        ),
        (
            "replicaGroupPartitionConfig",
            vec![
                ("replicaGroupBased", json!(false)),
                ("numInstances", json!(0)),
                ("numReplicaGroups", json!(0)),
                ("numInstancesPerReplicaGroup", json!(0)),
                ("numPartitions", json!(0)),
                ("numInstancesPerPartition", json!(0)),
                ("minimizeDataMovement", json!(false)),
            ],
        ),
    ]
}

/// The table config in one canonical form (see the module comment).
pub fn canonical_table(spec: &Value) -> Value {
    let Some(obj) = spec.as_object() else {
        return spec.clone();
    };
    let mut out = obj.clone();
    if let Some(Value::String(t)) = out.get_mut("tableType") {
        *t = t.to_ascii_uppercase();
    }
    if let (Some(Value::String(name)), Some(Value::String(kind))) =
        (out.get("tableName"), out.get("tableType"))
    {
        let full = with_type(name, kind);
        out.insert("tableName".into(), json!(full));
    }
    strip_defaults(
        &mut out,
        &[
            ("isDimTable", json!(false)),
            ("isMaterializedView", json!(false)),
        ],
    );

    // `metadata.customConfigs` is a Map<String, String>; ofctl's owner key is not part of the
    // spec. Absent and empty are the same (1.3.0+ adds the empty form).
    if let Some(meta) = section(&mut out, "metadata") {
        if let Some(custom) = section(meta, "customConfigs") {
            custom.remove(OWNER_KEY);
            custom.values_mut().for_each(stringify);
            if custom.is_empty() {
                meta.remove("customConfigs");
            }
        }
    }
    if out
        .get("metadata")
        .is_some_and(|m| m.is_null() || m.as_object().is_some_and(Obj::is_empty))
    {
        out.remove("metadata");
    }

    // A single-tenant controller fills a missing broker/server tenant (§1.5).
    if !out.get("tenants").is_some_and(Value::is_object) {
        out.insert("tenants".into(), json!({}));
    }
    if let Some(tenants) = section(&mut out, "tenants") {
        for role in ["broker", "server"] {
            if !tenants.get(role).is_some_and(Value::is_string) {
                tenants.insert(role.into(), json!(DEFAULT_TENANT));
            }
        }
    }

    if let Some(segments) = section(&mut out, "segmentsConfig") {
        stringify_keys(
            segments,
            &["replication", "replicasPerPartition", "retentionTimeValue"],
        );
        strip_defaults(segments, &[("minimizeDataMovement", json!(false))]);
    }
    if let Some(index) = section(&mut out, "tableIndexConfig") {
        strip_defaults(index, &index_defaults());
        stringify_map(index.get_mut("streamConfigs"));
    }
    if let Some(upsert) = section(&mut out, "upsertConfig") {
        // The deprecated single-column setter; no getter prints it back.
        if let Some(col) = upsert.remove("comparisonColumn").filter(|c| !c.is_null()) {
            upsert
                .entry("comparisonColumns")
                .or_insert_with(|| json!([col]));
        }
        strip_defaults(upsert, &upsert_defaults());
        // `mode` says what the section is for, so it is spelled out rather than stripped: a
        // plan then shows `{"mode":"FULL"}`, not an empty section.
        upsert.entry("mode").or_insert_with(|| json!("FULL"));
    }
    if let Some(dedup) = section(&mut out, "dedupConfig") {
        strip_defaults(
            dedup,
            &[("hashFunction", json!("NONE")), ("metadataTTL", json!(0.0))],
        );
        // Spelled out like upsert `mode`.
        let enabled = dedup.get("dedupEnabled").and_then(as_bool).unwrap_or(true);
        dedup.insert("dedupEnabled".into(), json!(enabled));
    }
    if let Some(ingestion) = section(&mut out, "ingestionConfig") {
        strip_defaults(
            ingestion,
            &[
                ("continueOnError", json!(false)),
                ("rowTimeValueCheck", json!(false)),
                ("segmentTimeValueCheck", json!(true)),
            ],
        );
        for (sub, default, maps) in [
            (
                "streamIngestionConfig",
                ("columnMajorSegmentBuilderEnabled", json!(true)),
                "streamConfigMaps",
            ),
            (
                "batchIngestionConfig",
                ("consistentDataPush", json!(false)),
                "batchConfigMaps",
            ),
        ] {
            if let Some(sub) = section(ingestion, sub) {
                strip_defaults(sub, &[default]);
                if let Some(Value::Array(list)) = sub.get_mut(maps) {
                    list.iter_mut().for_each(|m| stringify_map(Some(m)));
                }
            }
        }
    }
    if let Some(Value::Array(fields)) = out.get_mut("fieldConfigList") {
        for field in fields.iter_mut().filter_map(Value::as_object_mut) {
            // The deprecated single `indexType` is read into `indexTypes`.
            if let Some(t) = field.remove("indexType").filter(|t| !t.is_null()) {
                field.entry("indexTypes").or_insert_with(|| json!([t]));
            }
            strip_defaults(
                field,
                &[
                    ("encodingType", json!("DICTIONARY")),
                    ("indexTypes", json!([])),
                ],
            );
            stringify_map(field.get_mut("properties"));
        }
    }
    if let Some(types) = section(&mut out, "task").and_then(|t| section(t, "taskTypeConfigsMap")) {
        types.values_mut().for_each(|cfg| stringify_map(Some(cfg)));
    }
    if let Some(assignments) = section(&mut out, "instanceAssignmentConfigMap") {
        for cfg in assignments.values_mut().filter_map(Value::as_object_mut) {
            strip_defaults(
                cfg,
                &[
                    (
                        "partitionSelector",
                        json!("INSTANCE_REPLICA_GROUP_PARTITION_SELECTOR"),
                    ),
                    ("minimizeDataMovement", json!(false)),
                ],
            );
            for (part, defaults) in assignment_defaults() {
                if let Some(part) = section(cfg, part) {
                    strip_defaults(part, &defaults);
                }
            }
        }
    }
    Value::Object(out)
}

/// Manifest table config → canonical. `metadata.name` is the table name with its type suffix
/// and must agree with `tableName`/`tableType`, which are filled in when absent.
pub fn normalize_desired_table(name: &str, spec: &Value) -> Result<Value, String> {
    let (raw, kind) = split_table_name(name).ok_or_else(|| {
        format!(
            "metadata.name `{name}` must be the table name with its type suffix, e.g. `{name}_REALTIME` or `{name}_OFFLINE`"
        )
    })?;
    check_name("metadata.name", raw)?;
    let mut obj = spec
        .as_object()
        .cloned()
        .ok_or("a Pinot table config must be a JSON object")?;
    match obj.get("tableType") {
        None | Some(Value::Null) => {
            obj.insert("tableType".into(), json!(kind));
        }
        Some(Value::String(t)) if t.eq_ignore_ascii_case(kind) => {}
        Some(other) => {
            return Err(format!(
                "spec.tableType {other} does not match metadata.name `{name}` (type {kind}); a table's type cannot change: declare a new `{raw}_<TYPE>` resource instead"
            ))
        }
    }
    match obj.get("tableName") {
        None | Some(Value::Null) => {
            obj.insert("tableName".into(), json!(raw));
        }
        Some(Value::String(t)) if with_type(t, kind) == name => {}
        Some(other) => {
            return Err(format!(
                "spec.tableName {other} does not match metadata.name `{name}` (expected `{raw}` or `{name}`)"
            ))
        }
    }
    Ok(canonical_table(&Value::Object(obj)))
}

/// The ownership marker a live table config carries, if any.
pub fn owner_marker(config: &Value) -> Option<&str> {
    config
        .get("metadata")
        .and_then(|m| m.get("customConfigs"))
        .and_then(|c| c.get(OWNER_KEY))
        .and_then(Value::as_str)
}

/// Copies into `desired` the live scalars that are `false` or zero under keys the manifest
/// does not mention: primitive defaults a Pinot release prints that [`canonical_table`] does
/// not know by name. A removed field the user cares about is a section, a list, a string or a
/// non-zero number, so it still shows as a removal.
pub fn adopt_server_zeroes(desired: &mut Value, live: &Value) {
    let (Some(d), Some(l)) = (desired.as_object_mut(), live.as_object()) else {
        return;
    };
    for (key, lv) in l {
        match d.get_mut(key) {
            None => {
                let zero = *lv == Value::Bool(false) || lv.as_f64() == Some(0.0);
                if zero {
                    d.insert(key.clone(), lv.clone());
                }
            }
            Some(dv) if dv.is_object() && lv.is_object() => adopt_server_zeroes(dv, lv),
            Some(_) => {}
        }
    }
}

/// The time column, when each side of a changed upsert `comparisonColumns` (or dedup
/// `dedupTimeColumn`) is either unset or names exactly that column: Pinot then compares by the
/// same column before and after.
fn names_only_the_time_column(
    a: Option<&Value>,
    b: Option<&Value>,
    time_column: Option<Value>,
) -> Option<String> {
    let column = time_column?.as_str()?.to_string();
    let is_time = |v: Option<&Value>| match v {
        None => true,
        Some(Value::String(s)) => *s == column,
        Some(Value::Array(items)) => items.len() == 1 && items[0].as_str() == Some(&column),
        Some(_) => false,
    };
    (is_time(a) && is_time(b)).then_some(column)
}

/// Why Pinot would refuse `desired` as an update of `live` unless forced
/// (`TableConfigUtils.validateBackwardCompatibility`, apis.md §1.3).
pub fn table_incompatibilities(desired: &Value, live: &Value) -> Vec<String> {
    let mut reasons = Vec::new();
    let time_column = |v: &Value| v.pointer("/segmentsConfig/timeColumnName").cloned();
    let time_changed = time_column(desired) != time_column(live);
    let mut check = |section: &str, keys: &[&str], implicit_time_key: &str| {
        // The rule holds while the feature stays enabled; adding or removing it is allowed
        // (Pinot only logs it). `mode: NONE` / `dedupEnabled: false` switch it off.
        let enabled = |v: &Value| {
            v.get("mode").and_then(Value::as_str) != Some("NONE")
                && v.get("dedupEnabled").and_then(as_bool) != Some(false)
        };
        let (Some(d), Some(l)) = (
            desired.get(section).filter(|v| enabled(v)),
            live.get(section).filter(|v| enabled(v)),
        ) else {
            return;
        };
        for key in keys {
            let (a, b) = (d.get(*key), l.get(*key));
            let same = match (a, b) {
                (Some(a), Some(b)) => crate::json::values_equal(a, b),
                (None, None) => true,
                _ => false,
            };
            if !same {
                let mut reason = format!(
                    "{section}.{key} cannot change on an existing table (Pinot: it may lead to data inconsistencies; create a new table instead)"
                );
                if *key == implicit_time_key && !time_changed {
                    if let Some(column) = names_only_the_time_column(a, b, time_column(live)) {
                        reason.push_str(&format!(
                            "; harmless here: `{column}` is already the table's time column, which Pinot uses when {key} is unset, so forcing it changes nothing Pinot does"
                        ));
                    }
                }
                reasons.push(reason);
            }
        }
        if d.get(implicit_time_key).is_none() && l.get(implicit_time_key).is_none() && time_changed
        {
            reasons.push(format!(
                "segmentsConfig.timeColumnName cannot change while it is the implicit {section} time column"
            ));
        }
    };
    check(
        "upsertConfig",
        &[
            "mode",
            "hashFunction",
            "comparisonColumns",
            "dropOutOfOrderRecord",
            "outOfOrderRecordColumn",
            "partialUpsertStrategies",
            "defaultPartialUpsertStrategy",
        ],
        "comparisonColumns",
    );
    check(
        "dedupConfig",
        &["hashFunction", "dedupTimeColumn"],
        "dedupTimeColumn",
    );
    reasons
}

/// The Kafka topics a table consumes (`stream.kafka.topic.name` in its stream configs).
pub fn kafka_topics(table: &Value) -> Vec<String> {
    let mut maps: Vec<&Value> = table
        .pointer("/tableIndexConfig/streamConfigs")
        .into_iter()
        .collect();
    if let Some(list) = table
        .pointer("/ingestionConfig/streamIngestionConfig/streamConfigMaps")
        .and_then(Value::as_array)
    {
        maps.extend(list);
    }
    let mut topics: Vec<String> = maps
        .into_iter()
        .filter(|m| {
            m.get("streamType")
                .and_then(Value::as_str)
                .unwrap_or("kafka")
                == "kafka"
        })
        .filter_map(|m| m.get("stream.kafka.topic.name").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    topics.sort();
    topics.dedup();
    topics
}

#[cfg(test)]
mod tests {
    use super::super::shipped;
    use super::*;

    #[test]
    fn table_names_split_on_the_type_suffix() {
        assert_eq!(
            split_table_name("devices_REALTIME"),
            Some(("devices", REALTIME))
        );
        assert_eq!(split_table_name("logs_OFFLINE"), Some(("logs", OFFLINE)));
        assert_eq!(split_table_name("logs"), None);
        assert_eq!(split_table_name("_OFFLINE"), None);
        assert_eq!(split_table_name("logs_realtime"), None);
    }

    /// What GET /tables/devices?type=realtime returns after ofctl POSTed the shipped file
    /// (apis.md §1.5, Pinot 1.5.1).
    fn devices_as_served() -> Value {
        let mut live = shipped("table-config-devices.json");
        let obj = live.as_object_mut().unwrap();
        obj.insert("tableName".into(), json!("devices_REALTIME"));
        obj.insert("isDimTable".into(), json!(false));
        obj.insert(
            "metadata".into(),
            json!({"customConfigs": {OWNER_KEY: "ofctl/default/default"}}),
        );
        obj["segmentsConfig"]["minimizeDataMovement"] = json!(false);
        let index = obj["tableIndexConfig"].as_object_mut().unwrap();
        for (k, v) in index_defaults() {
            index.entry(k).or_insert(v);
        }
        let rg = &mut obj["instanceAssignmentConfigMap"]["CONSUMING"];
        rg["replicaGroupPartitionConfig"]["numReplicaGroups"] = json!(2);
        rg["replicaGroupPartitionConfig"]["minimizeDataMovement"] = json!(false);
        rg["partitionSelector"] = json!("INSTANCE_REPLICA_GROUP_PARTITION_SELECTOR");
        let upsert = obj["upsertConfig"].as_object_mut().unwrap();
        upsert.remove("comparisonColumn");
        upsert.insert("comparisonColumns".into(), json!(["ingestionTime"]));
        upsert.insert("mode".into(), json!("FULL"));
        for (k, v) in upsert_defaults() {
            upsert.entry(k).or_insert(v);
        }
        for f in obj["fieldConfigList"].as_array_mut().unwrap() {
            f["indexTypes"] = json!([]);
            f["properties"]["maxMultiValueEntries"] = json!("50");
        }
        live
    }

    #[test]
    fn shipped_table_equals_what_get_returns() {
        let desired =
            normalize_desired_table("devices_REALTIME", &shipped("table-config-devices.json"))
                .unwrap();
        let live = devices_as_served();
        assert_eq!(owner_marker(&live), Some("ofctl/default/default"));
        assert_eq!(canonical_table(&live), desired);
        assert_eq!(canonical_table(&desired), desired);
        // The canonical form is what the controller stores, spelled its way.
        assert_eq!(desired["tableName"], "devices_REALTIME");
        assert_eq!(desired["segmentsConfig"]["replication"], "2");
        assert_eq!(
            desired["upsertConfig"],
            json!({"mode": "FULL", "comparisonColumns": ["ingestionTime"], "snapshot": "ENABLE"})
        );
        assert_eq!(
            desired["instanceAssignmentConfigMap"]["CONSUMING"]["replicaGroupPartitionConfig"],
            json!({"replicaGroupBased": true, "numReplicaGroups": 2})
        );
        assert_eq!(
            desired["fieldConfigList"][0]["properties"]["maxMultiValueEntries"],
            "50"
        );
        assert!(desired.get("metadata").is_none());
    }

    #[test]
    fn table_name_and_type_must_agree_with_metadata_name() {
        let spec = shipped("table-config-logs-realtime.json");
        assert!(normalize_desired_table("logs_REALTIME", &spec).is_ok());
        let err = normalize_desired_table("logs", &spec).unwrap_err();
        assert!(err.contains("type suffix"), "{err}");
        let err = normalize_desired_table("logs_OFFLINE", &spec).unwrap_err();
        assert!(
            err.contains("spec.tableType \"REALTIME\" does not match"),
            "{err}"
        );
        let err = normalize_desired_table("events_REALTIME", &spec).unwrap_err();
        assert!(
            err.contains("spec.tableName \"logs\" does not match"),
            "{err}"
        );
        // Absent name and type are filled from metadata.name; a lower-case type is accepted.
        let mut bare = spec.clone();
        bare.as_object_mut().unwrap().remove("tableName");
        bare["tableType"] = json!("realtime");
        let n = normalize_desired_table("logs_REALTIME", &bare).unwrap();
        assert_eq!(
            (n["tableName"].as_str(), n["tableType"].as_str()),
            (Some("logs_REALTIME"), Some("REALTIME"))
        );
    }

    #[test]
    fn unknown_zero_defaults_are_adopted_but_removals_are_not() {
        let desired =
            normalize_desired_table("devices_REALTIME", &shipped("table-config-devices.json"))
                .unwrap();
        let mut live = devices_as_served();
        live["tableIndexConfig"]["someFutureFlag"] = json!(false);
        live["ingestionConfig"] = json!({"continueOnError": false, "segmentTimeValueCheck": true});
        live["tableIndexConfig"]["sortedColumn"] = json!(["machineId"]);
        let live = canonical_table(&live);
        let mut merged = desired.clone();
        adopt_server_zeroes(&mut merged, &live);
        assert_eq!(merged["tableIndexConfig"]["someFutureFlag"], false);
        // A section and a list the manifest does not have remain differences.
        assert!(merged.get("ingestionConfig").is_none());
        assert!(merged["tableIndexConfig"].get("sortedColumn").is_none());
    }

    #[test]
    fn upsert_and_dedup_rules() {
        let base =
            normalize_desired_table("devices_REALTIME", &shipped("table-config-devices.json"))
                .unwrap();
        let mut changed = base.clone();
        changed["upsertConfig"]["comparisonColumns"] = json!(["machineId"]);
        changed["upsertConfig"]["hashFunction"] = json!("MD5");
        assert_eq!(
            table_incompatibilities(&changed, &base),
            vec![
                "upsertConfig.hashFunction cannot change on an existing table (Pinot: it may lead to data inconsistencies; create a new table instead)",
                "upsertConfig.comparisonColumns cannot change on an existing table (Pinot: it may lead to data inconsistencies; create a new table instead)",
            ]
        );
        // Naming the time column that Pinot already compares by is refused all the same (the
        // server demands `force`), and the refusal says that it is harmless.
        let mut implicit = base.clone();
        implicit["upsertConfig"]
            .as_object_mut()
            .unwrap()
            .remove("comparisonColumns");
        let time = base["segmentsConfig"]["timeColumnName"].clone();
        let mut explicit = implicit.clone();
        explicit["upsertConfig"]["comparisonColumns"] = json!([time]);
        let reasons = table_incompatibilities(&explicit, &implicit);
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(
            reasons[0].contains(&format!(
                "harmless here: `{}` is already the table's time column",
                time.as_str().unwrap()
            )),
            "{reasons:?}"
        );
        // Another column is not harmless.
        assert!(!table_incompatibilities(&changed, &base)[1].contains("harmless"));
        // Other upsert settings, and adding or removing the section, are allowed.
        let mut snap = base.clone();
        snap["upsertConfig"]["snapshot"] = json!("DISABLE");
        assert!(table_incompatibilities(&snap, &base).is_empty());
        let mut without = base.clone();
        without.as_object_mut().unwrap().remove("upsertConfig");
        assert!(table_incompatibilities(&without, &base).is_empty());
        assert!(table_incompatibilities(&base, &without).is_empty());
        // The time column is the implicit comparison column when none is named.
        let logs =
            normalize_desired_table("logs_REALTIME", &shipped("table-config-logs-realtime.json"))
                .unwrap();
        let mut moved = logs.clone();
        moved["segmentsConfig"]["timeColumnName"] = json!("ingestDay");
        assert_eq!(
            table_incompatibilities(&moved, &logs),
            vec!["segmentsConfig.timeColumnName cannot change while it is the implicit upsertConfig time column"]
        );
        let mut dedup_a = logs.clone();
        dedup_a["dedupConfig"] = json!({"dedupTimeColumn": "eventTimestamp"});
        let mut dedup_off = dedup_a.clone();
        dedup_off["dedupConfig"] = json!({"dedupEnabled": false});
        assert!(table_incompatibilities(&dedup_off, &dedup_a).is_empty());
        let mut dedup_b = logs.clone();
        dedup_b["dedupConfig"] = json!({"dedupTimeColumn": "ingestDay", "hashFunction": "NONE"});
        assert_eq!(
            table_incompatibilities(&canonical_table(&dedup_b), &dedup_a).len(),
            1
        );
    }

    #[test]
    fn kafka_topics_come_from_stream_configs() {
        let t =
            normalize_desired_table("logs_REALTIME", &shipped("table-config-logs-realtime.json"))
                .unwrap();
        assert_eq!(kafka_topics(&t), vec!["integrated-tool.events.pinot"]);
        let multi = json!({"ingestionConfig": {"streamIngestionConfig": {"streamConfigMaps": [
            {"streamType": "kafka", "stream.kafka.topic.name": "a"},
            {"streamType": "kinesis", "stream.kinesis.topic.name": "k"}
        ]}}});
        assert_eq!(kafka_topics(&multi), vec!["a"]);
    }

    #[test]
    fn stream_credentials_are_sensitive() {
        let info = &crate::providers::pinot::KINDS[1];
        for key in [
            "stream.kafka.consumer.prop.sasl.jaas.config",
            "stream.kafka.sasl.jaas.config",
            "stream.kafka.ssl.truststore.password",
        ] {
            let ptr = format!("/tableIndexConfig/streamConfigs/{key}");
            assert!(info.is_sensitive(&ptr), "{ptr}");
        }
        assert!(!info.is_sensitive("/tableIndexConfig/streamConfigs/stream.kafka.topic.name"));
    }
}
