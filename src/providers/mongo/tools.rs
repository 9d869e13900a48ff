//! IntegratedTool bodies (openframe.md §6) and the Kafka Connect connectors they carry.
//!
//! A manifest may hold the tool document itself or the register jobs' request body
//! `{"tool": {...}}` (the fixtures' shape, usable as a `specFile`). Connectors inside a tool are
//! planned as `KafkaConnector` resources of their own (see [`connector_resources`]), so what
//! Kafka Connect will run is visible in the plan rather than a side effect of saving a tool.

use serde_json::{json, Map, Value};

use super::document::{strip_nulls, take_id};
use crate::resource::{Address, Resource};

/// The kind the connectors become (written by the Kafka Connect provider).
pub const CONNECTOR_KIND: &str = "KafkaConnector";

/// The tool object inside a spec (the `{"tool": {...}}` request body or the tool itself), and
/// the pointer prefix that leads to it.
fn tool_body(spec: &Value) -> Option<(&Map<String, Value>, &'static str)> {
    let obj = spec.as_object()?;
    match obj.get("tool") {
        Some(Value::Object(inner)) if obj.len() == 1 => Some((inner, "/tool")),
        _ => Some((obj, "")),
    }
}

/// The connector list, from `debeziumConnectors` or the pre-2025-10-22 `debeziumConnector`
/// (a single object, null, or on 2025-10-24 an array). The platform's document has only the
/// plural field, so an old payload silently registered nothing there (openframe.md §1); here
/// the old key is converted, and having both is an error.
fn connectors(tool: &Map<String, Value>) -> Result<Vec<Value>, (String, String)> {
    let new = tool.get("debeziumConnectors").filter(|v| !v.is_null());
    let old = tool.get("debeziumConnector").filter(|v| !v.is_null());
    let (key, value) = match (new, old) {
        (Some(_), Some(_)) => {
            return Err((
                "/debeziumConnector".into(),
                "both `debeziumConnectors` and the old `debeziumConnector` are set; keep only `debeziumConnectors` (an array)".into(),
            ))
        }
        (Some(v), None) => ("debeziumConnectors", v),
        (None, Some(v)) => ("debeziumConnector", v),
        (None, None) => return Ok(Vec::new()),
    };
    let items = match value {
        Value::Array(items) => items.clone(),
        Value::Object(_) => vec![value.clone()],
        _ => {
            return Err((
                format!("/{key}"),
                "must be an array of connectors `{name, config}`".into(),
            ))
        }
    };
    for (i, c) in items.iter().enumerate() {
        let ok = c
            .get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty())
            && c.get("config").is_some_and(Value::is_object);
        if !ok {
            return Err((
                format!("/{key}/{i}"),
                "a connector needs a non-empty `name` and a `config` object".into(),
            ));
        }
    }
    Ok(items)
}

/// The tool document to store: the body without `id` (it is the `_id`), connectors under the
/// plural key, and `enabled` true unless the manifest says otherwise (the platform's
/// controller forced it true on every save).
pub fn normalize_desired(name: &str, spec: &Value) -> Result<Value, String> {
    let mut tool = tool_body(spec)
        .map(|(body, _)| body.clone())
        .ok_or("an IntegratedTool spec must be an object")?;
    take_id(&mut tool, name)?;
    let list = connectors(&tool).map_err(|(ptr, msg)| format!("{ptr}: {msg}"))?;
    if tool
        .shift_remove("debeziumConnector")
        .is_some_and(|v| !v.is_null())
    {
        tool.insert("debeziumConnectors".into(), Value::Array(list));
    }
    tool.entry("enabled").or_insert(Value::Bool(true));
    let mut value = Value::Object(tool);
    strip_nulls(&mut value);
    Ok(value)
}

/// One `KafkaConnector` resource per connector of a tool, named after the connector, with
/// spec `{config}` and a dependency on the tool (a tool is registered before its connectors).
/// Errors are (pointer into the spec, message).
pub fn connector_resources(tool: &Resource) -> Result<Vec<Resource>, (String, String)> {
    let Some((body, prefix)) = tool_body(&tool.spec) else {
        return Ok(Vec::new());
    };
    let items = connectors(body).map_err(|(ptr, msg)| (format!("{prefix}{ptr}"), msg))?;
    Ok(items
        .into_iter()
        .map(|c| Resource {
            address: Address::new(
                CONNECTOR_KIND,
                c["name"].as_str().unwrap_or_default().to_string(),
            ),
            labels: tool.labels.clone(),
            annotations: Default::default(),
            spec: json!({ "config": c["config"].clone() }),
            depends_on: vec![tool.address.clone()],
            source: tool.source.clone(),
        })
        .collect())
}

/// The tool document the platform's register job writes for Tactical RMM (openframe.md §13).
pub const TACTICAL_TOOL_ID: &str = "tactical-rmm";

/// Tactical RMM's API address and key as the Java service read them from its tool document:
/// the first `toolUrls` entry of type API as `url:port`, and `credentials.apiKey.key`. Empty
/// values count as none.
pub fn tactical_access(tool: &Value) -> (Option<String>, Option<String>) {
    let non_empty = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
    };
    let url = tool
        .get("toolUrls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|u| u.get("type").and_then(Value::as_str) == Some("API"))
        .and_then(|u| {
            let base = non_empty(u.get("url"))?;
            Some(match non_empty(u.get("port")) {
                Some(port) => format!("{base}:{port}"),
                None => base,
            })
        });
    let key = non_empty(tool.pointer("/credentials/apiKey/key"));
    (url, key)
}

/// The names of the connectors a stored tool document registers (malformed entries skipped).
pub fn connector_names(tool: &Value) -> Vec<String> {
    tool.get("debeziumConnectors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name")?.as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Span;

    fn tool(spec: Value) -> Resource {
        Resource {
            address: Address::new("IntegratedTool", "tactical-rmm"),
            labels: Default::default(),
            annotations: Default::default(),
            spec,
            depends_on: Vec::new(),
            source: Span::default(),
        }
    }

    #[test]
    fn unwraps_the_request_body_and_keeps_connectors_in_the_document() {
        let spec = json!({"tool": {
            "id": "tactical-rmm", "name": "Tactical RMM", "description": null,
            "debeziumConnectors": [{"name": "c1", "config": {"tasks.max": "1"}}]
        }});
        let n = normalize_desired("tactical-rmm", &spec).unwrap();
        assert_eq!(
            n,
            json!({"name": "Tactical RMM",
                   "debeziumConnectors": [{"name": "c1", "config": {"tasks.max": "1"}}],
                   "enabled": true})
        );
        let r = connector_resources(&tool(spec)).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].address, Address::new("KafkaConnector", "c1"));
        assert_eq!(r[0].spec, json!({"config": {"tasks.max": "1"}}));
        assert_eq!(
            r[0].depends_on,
            vec![Address::new("IntegratedTool", "tactical-rmm")]
        );
    }

    #[test]
    fn converts_the_old_singular_key() {
        let one = json!({"debeziumConnector": {"name": "c", "config": {}}});
        let n = normalize_desired("t", &one).unwrap();
        assert_eq!(
            n["debeziumConnectors"],
            json!([{"name": "c", "config": {}}])
        );
        assert!(n.get("debeziumConnector").is_none());
        assert_eq!(connector_resources(&tool(one)).unwrap().len(), 1);
        let arr = json!({"debeziumConnector": [{"name": "a", "config": {}}, {"name": "b", "config": {}}]});
        assert_eq!(connector_resources(&tool(arr)).unwrap().len(), 2);
        let null = json!({"debeziumConnector": null});
        assert_eq!(
            normalize_desired("t", &null).unwrap(),
            json!({"enabled": true})
        );
        assert!(connector_resources(&tool(null)).unwrap().is_empty());
    }

    #[test]
    fn rejects_ambiguous_or_malformed_connectors() {
        let both = json!({"tool": {"debeziumConnector": {"name": "a", "config": {}},
                                   "debeziumConnectors": []}});
        let (ptr, msg) = connector_resources(&tool(both.clone())).unwrap_err();
        assert_eq!(ptr, "/tool/debeziumConnector");
        assert!(msg.contains("keep only"));
        assert!(normalize_desired("t", &both).is_err());
        let bad = json!({"debeziumConnectors": [{"config": {}}]});
        assert_eq!(
            connector_resources(&tool(bad)).unwrap_err().0,
            "/debeziumConnectors/0"
        );
    }

    #[test]
    fn tactical_access_as_the_java_service_read_it() {
        let tool = json!({
            "toolUrls": [
                {"url": "http://tactical-nginx", "port": "8080", "type": "DASHBOARD"},
                {"url": "http://tactical-nginx", "port": "8000", "type": "API"},
                {"url": "http://other", "port": "1", "type": "API"}
            ],
            "credentials": {"apiKey": {"key": "k-1", "type": "HEADER", "keyName": "X-API-KEY"}}
        });
        assert_eq!(
            tactical_access(&tool),
            (
                Some("http://tactical-nginx:8000".into()),
                Some("k-1".into())
            )
        );
        assert_eq!(
            tactical_access(&json!({"credentials": {"apiKey": {"key": ""}}})),
            (None, None)
        );
    }

    #[test]
    fn names_the_connectors_a_stored_tool_registers() {
        let doc = json!({"debeziumConnectors": [{"name": "a", "config": {}}, {"config": {}}]});
        assert_eq!(connector_names(&doc), vec!["a".to_string()]);
        assert!(connector_names(&json!({})).is_empty());
    }

    #[test]
    fn keeps_an_explicit_disabled_flag() {
        let n = normalize_desired("t", &json!({"enabled": false})).unwrap();
        assert_eq!(n["enabled"], false);
    }
}
