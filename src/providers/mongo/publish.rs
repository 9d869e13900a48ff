//! Update messages and their exactly-once bookkeeping (openframe.md §9, §10).
//!
//! A publish happens once per real change: the document is written with
//! `publishState.published = false` first, then the message is published with a JetStream
//! ack, then `published = true` is recorded. A crash in between leaves a visible pending state
//! that the next run repairs; before publishing again it looks at the last message on the
//! subject, and if that is the very message (same `Nats-Msg-Id`), it only records it.

use mongodb::bson::{doc, Bson, Document};
use serde_json::{json, Value};

use super::document::PUBLISH_STATE;
use crate::json::digest;

pub const CLIENT_SUBJECT: &str = "machine.all.client-update";

pub fn agent_subject(agent_id: &str) -> String {
    format!("machine.all.tool.{agent_id}.update")
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The version a document carries, if any (an empty string counts as none).
pub fn version(v: &Value) -> Option<&str> {
    str_field(v, "version").filter(|s| !s.is_empty())
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
pub fn agent_message(agent_id: &str, spec: &Value) -> Value {
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
pub fn client_message(spec: &Value) -> Value {
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

/// The state written before publishing (the platform's `nonPublished(current)`): a fresh
/// `{published:false, publishedAt:null, attempts:0}` after a completed publish, otherwise the
/// same with `attempts + 1` and `publishedAt` kept.
pub fn pending_state(current: Option<&Document>) -> Document {
    let state = current.and_then(|d| d.get_document(PUBLISH_STATE).ok().map(|s| (d, s)));
    match state {
        Some((d, s)) if s.get_bool("published").ok() == Some(false) => {
            let attempts = super::document::publish_attempts(d);
            let mut next = doc! {
                "published": false,
                "publishedAt": s.get("publishedAt").cloned().unwrap_or(Bson::Null),
            };
            next.insert(
                "attempts",
                i32::try_from(attempts + 1)
                    .map(Bson::Int32)
                    .unwrap_or(Bson::Int64(attempts + 1)),
            );
            next
        }
        _ => doc! {"published": false, "publishedAt": Bson::Null, "attempts": 0},
    }
}

/// Identifies one logical publish: the same subject, payload and pending state (its
/// `publishedAt`, unchanged by retries) give the same id, so JetStream's duplicate window and
/// the repair check both recognise a retry, while the same payload published again after a
/// later change (A → B → A) gets a new id.
pub fn message_id(subject: &str, payload: &Value, state: &Document) -> String {
    let since = state
        .get("publishedAt")
        .map(super::document::to_json)
        .unwrap_or(Value::Null);
    format!(
        "ofctl-{}",
        digest(&json!({"subject": subject, "payload": payload, "since": since}))
    )
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

    #[test]
    fn pending_state_arithmetic() {
        let fresh = pending_state(None);
        assert_eq!(fresh.get_i32("attempts").unwrap(), 0);
        assert!(!fresh.get_bool("published").unwrap());
        let retry = pending_state(Some(&doc! {"publishState": {
        "published": false, "publishedAt": Bson::Null, "attempts": 2}}));
        assert_eq!(retry.get_i32("attempts").unwrap(), 3);
        let after_success = pending_state(Some(&doc! {"publishState": {
        "published": true, "attempts": 4}}));
        assert_eq!(after_success.get_i32("attempts").unwrap(), 0);
    }

    #[test]
    fn message_ids_are_stable_across_retries_only() {
        let p = json!({"version": "1"});
        let s1 = pending_state(None);
        let s2 = pending_state(Some(&doc! {"publishState": s1.clone()}));
        assert_eq!(message_id("s", &p, &s1), message_id("s", &p, &s2));
        let later =
            doc! {"published": false, "publishedAt": mongodb::bson::DateTime::now(), "attempts": 0};
        assert_ne!(message_id("s", &p, &s1), message_id("s", &p, &later));
    }
}
