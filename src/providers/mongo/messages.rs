//! What the update messages say: their subjects, the streams that capture them, their payloads
//! as the platform's mappers built them, and which changes call for one (openframe.md §4, §9).

use serde_json::{json, Value};

use super::document::version;

pub const CLIENT_SUBJECT: &str = "machine.all.client-update";

/// The platform's streams that capture the update subjects (openframe.md §4, §9).
pub const TOOL_UPDATE_STREAM: &str = "TOOL_UPDATE";
pub const CLIENT_UPDATE_STREAM: &str = "CLIENT_UPDATE";

/// One update message: where it goes and what it says.
pub struct Message {
    pub subject: String,
    pub payload: Value,
}

impl Message {
    /// The update of the agent `agent_id` whose document holds `spec`.
    pub fn agent(agent_id: &str, spec: &Value) -> Self {
        Self {
            subject: agent_subject(agent_id),
            payload: agent_message(agent_id, spec),
        }
    }

    /// The update of the client configuration whose document holds `spec`.
    pub fn client(spec: &Value) -> Self {
        Self {
            subject: CLIENT_SUBJECT.to_string(),
            payload: client_message(spec),
        }
    }
}

fn agent_subject(agent_id: &str) -> String {
    format!("machine.all.tool.{agent_id}.update")
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Download elements as the platform's mapper sends them: `agentFileName` carries the
/// document's `targetFileName` (early files named it `agentFileName` already), `link` is
/// `linkTemplate` with `{version}` filled in, and `installationType` defaults to STANDARD (the
/// document class's default). Nulls are kept, as Spring's ObjectMapper does.
fn download_elements(configs: Option<&Value>, version: Option<&str>) -> Value {
    let items = configs
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    Value::Array(
        items
            .iter()
            .map(|c| {
                let link = str_field(c, "linkTemplate")
                    .map(|t| t.replace("{version}", version.unwrap_or_default()));
                json!({
                    "os": c.get("os").cloned().unwrap_or(Value::Null),
                    "fileName": c.get("fileName").cloned().unwrap_or(Value::Null),
                    "agentFileName": c.get("targetFileName")
                        .or_else(|| c.get("agentFileName"))
                        .cloned()
                        .unwrap_or(Value::Null),
                    "link": link,
                    "installationType": c.get("installationType")
                        .cloned()
                        .unwrap_or_else(|| json!("STANDARD")),
                    "bundleId": c.get("bundleId").cloned().unwrap_or(Value::Null),
                    "serviceName": c.get("serviceName").cloned().unwrap_or(Value::Null),
                })
            })
            .collect(),
    )
}

/// `machine.all.tool.<agentId>.update`. Assets (with their own versions in their links) are
/// included because an asset version change is itself a reason to publish (§9, later shape).
fn agent_message(agent_id: &str, spec: &Value) -> Value {
    let v = version(spec);
    let assets = spec.get("assets").and_then(Value::as_array).map(|assets| {
        assets
            .iter()
            .map(|a| {
                json!({
                    "assetId": a.get("id").cloned().unwrap_or(Value::Null),
                    "version": a.get("version").cloned().unwrap_or(Value::Null),
                    "executable": a.get("executable").cloned().unwrap_or(Value::Null),
                    "downloadConfigurations":
                        download_elements(a.get("downloadConfigurations"), version(a)),
                })
            })
            .collect::<Vec<_>>()
    });
    json!({
        "toolAgentId": agent_id,
        "version": v,
        "sessionType": spec.get("sessionType").cloned().unwrap_or(Value::Null),
        "downloadConfigurations": download_elements(spec.get("downloadConfigurations"), v),
        "assets": assets,
    })
}

/// `machine.all.client-update`. The document's key is the singular `downloadConfiguration`;
/// the message's is plural. The oldest files used the plural in the document too.
fn client_message(spec: &Value) -> Value {
    let v = version(spec);
    let configs = spec
        .get("downloadConfiguration")
        .or_else(|| spec.get("downloadConfigurations"));
    json!({
        "version": v,
        "downloadConfigurations": download_elements(configs, v),
    })
}

/// Why a write must publish, if it must: a non-release agent whose version changed to a real
/// version, or whose asset changed version (an asset id on both sides with a non-empty version
/// on both, openframe.md §7).
pub fn agent_change(before: &Value, after: &Value) -> Option<String> {
    if after.get("releaseVersion") == Some(&Value::Bool(true)) {
        return None;
    }
    let mut reasons = Vec::new();
    if let Some(new) = version(after) {
        if version(before) != Some(new) {
            reasons.push(format!(
                "version {} → {new}",
                version(before).unwrap_or("(unset)")
            ));
        }
    }
    let assets = |v: &Value| -> Vec<(String, String)> {
        v.get("assets")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|a| {
                        Some((str_field(a, "id")?.to_string(), version(a)?.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let old = assets(before);
    for (id, new) in assets(after) {
        if let Some((_, prev)) = old.iter().find(|(i, _)| *i == id) {
            if *prev != new {
                reasons.push(format!("asset {id} {prev} → {new}"));
            }
        }
    }
    (!reasons.is_empty()).then(|| reasons.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_message_fills_version_only_in_links() {
        let spec = json!({
            "version": "0.2.0", "sessionType": "SERVICE",
            "downloadConfigurations": [{
                "os": "windows",
                "linkTemplate": "https://x/download/{version}/fleet.zip",
                "fileName": "fleet.zip", "targetFileName": "fleet.exe"
            }],
            "assets": [{
                "id": "osqueryd", "version": "0.0.6", "executable": true,
                "downloadConfigurations": [{
                    "os": "macos", "linkTemplate": "https://y/{version}/o.tgz",
                    "fileName": "o.tgz", "targetFileName": "osqueryd"
                }]
            }]
        });
        let m = agent_message("fleetmdm-agent", &spec);
        assert_eq!(m["toolAgentId"], "fleetmdm-agent");
        assert_eq!(m["version"], "0.2.0");
        assert_eq!(
            m["downloadConfigurations"][0],
            json!({
                "os": "windows", "fileName": "fleet.zip", "agentFileName": "fleet.exe",
                "link": "https://x/download/0.2.0/fleet.zip",
                "installationType": "STANDARD", "bundleId": null, "serviceName": null
            })
        );
        assert_eq!(
            m["assets"][0]["downloadConfigurations"][0]["link"],
            "https://y/0.0.6/o.tgz"
        );
        // The stored spec keeps the template.
        assert!(spec["downloadConfigurations"][0]["linkTemplate"]
            .as_str()
            .unwrap()
            .contains("{version}"));
    }

    #[test]
    fn client_message_reads_the_singular_key() {
        let m = client_message(&json!({
            "version": "1.2.3",
            "downloadConfiguration": [{
                "os": "macos", "linkTemplate": "https://r/{version}/c.tgz",
                "fileName": "c.tgz", "targetFileName": "openframe-client"
            }]
        }));
        assert_eq!(m["version"], "1.2.3");
        assert_eq!(
            m["downloadConfigurations"][0]["link"],
            "https://r/1.2.3/c.tgz"
        );
        assert_eq!(
            m["downloadConfigurations"][0]["agentFileName"],
            "openframe-client"
        );
    }

    #[test]
    fn what_counts_as_a_change() {
        let a = |v: &str, asset: Option<&str>| json!({"version": v, "assets": [{"id": "osqueryd", "version": asset}]});
        assert_eq!(agent_change(&a("1", None), &a("1", None)), None);
        assert!(agent_change(&a("1", None), &a("2", None))
            .unwrap()
            .contains("version 1 → 2"));
        // Asset versions count only when both sides have one.
        assert_eq!(agent_change(&a("1", None), &a("1", Some("0.0.2"))), None);
        assert!(agent_change(&a("1", Some("0.0.2")), &a("1", Some("0.0.3")))
            .unwrap()
            .contains("asset osqueryd 0.0.2 → 0.0.3"));
        // No version to announce: nothing to publish.
        assert_eq!(agent_change(&a("1", None), &json!({})), None);
        // Release agents never publish on their own.
        assert_eq!(
            agent_change(
                &json!({"version": "1"}),
                &json!({"version": "2", "releaseVersion": true})
            ),
            None
        );
    }
}
