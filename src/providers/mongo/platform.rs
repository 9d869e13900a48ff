//! The platform's rules that its Java services applied in code, as functions of the values:
//! which documents are singletons, what a release agent and the client configuration keep
//! from the live document (and what the plan says about it), what must exist before a write.

use serde_json::Value;

use super::document::{self, version, FOLLOWERS_MARKER, PUBLISH_MARKER, PUBLISH_PENDING};
use super::kinds::{AGENT, CLIENT, CLIENT_ID, RELEASE, RELEASE_NAME, STREAM_KIND, TOOL};
use super::messages::{agent_change, CLIENT_SUBJECT, CLIENT_UPDATE_STREAM, TOOL_UPDATE_STREAM};
use super::tools;
use crate::resource::Address;

/// A release agent's version belongs to the ReleaseVersion, not to its own file.
pub(super) fn is_release_agent(spec: &Value) -> bool {
    spec.get("releaseVersion") == Some(&Value::Bool(true))
}

/// The spec as stored: the client configuration and the release version are single documents
/// with fixed names; an agent's or the client's `id` must be its name; Spring writes no nulls.
pub(super) fn normalize_desired(kind: &str, name: &str, spec: &Value) -> Result<Value, String> {
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

/// The desired spec with what the platform keeps from the live document (a release agent's
/// and the client configuration's stored version, class defaults the files leave out), and
/// the notes the plan prints: each rule applied, and the update message an apply publishes.
pub(super) fn merge_live(kind: &str, desired: &Value, live: &Value) -> (Value, Vec<String>) {
    let mut merged = desired.clone();
    let mut notes = Vec::new();
    match kind {
        AGENT => document::adopt_class_defaults(&mut merged, live, document::AGENT_CLASS_DEFAULTS),
        CLIENT => {
            document::adopt_class_defaults(&mut merged, live, document::CLIENT_CLASS_DEFAULTS)
        }
        _ => {}
    }
    let keep_version = match kind {
        AGENT => is_release_agent(desired),
        CLIENT => version(live).is_some(),
        _ => false,
    };
    if keep_version {
        let stored = version(live);
        let wanted = version(desired);
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
    let announced = (kind == AGENT)
        .then(|| agent_change(live, &merged))
        .flatten();
    if let Some(note) = pending {
        notes.push(note);
    } else if let Some(why) = announced {
        notes.push(format!("{why}: apply publishes one update message"));
    } else if kind == CLIENT && version(live).is_none() && version(&merged).is_some() {
        notes.push(format!(
            "version {}: apply publishes one update to {CLIENT_SUBJECT}",
            version(&merged).unwrap_or_default()
        ));
    } else if kind == RELEASE
        && (live.get(FOLLOWERS_MARKER).is_some() || version(live) != version(desired))
    {
        notes.push(format!(
            "apply sets {CLIENT}/{CLIENT_ID} and every release agent to version {} and publishes each once",
            version(desired).unwrap_or("(unset)")
        ));
    }
    (merged, notes)
}

/// What must exist before a write: the stream that captures its update messages, the release
/// version, an agent's tool.
pub(super) fn dependencies(kind: &str, spec: &Value) -> Vec<Address> {
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

/// Notes for a change to an agent or the client configuration whose stored update message is
/// unpublished.
fn pending_note(live: &Value) -> Option<String> {
    (live.get(PUBLISH_MARKER).and_then(Value::as_str) == Some(PUBLISH_PENDING)).then(|| {
        format!(
            "publish pending: version {} was stored but its update message was never acknowledged; apply publishes it once",
            version(live).unwrap_or("(unset)")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_release_agent_keeps_its_stored_version_and_the_plan_says_so() {
        let live = json!({"releaseVersion": true, "version": "1.2.0"});
        let (merged, notes) = merge_live(
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
        let (merged, notes) = merge_live(AGENT, &json!({"releaseVersion": true}), &live);
        assert_eq!(merged["version"], "1.2.0");
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn notes_announce_publishes_and_pending_ones() {
        let (_, notes) = merge_live(AGENT, &json!({"version": "2"}), &json!({"version": "1"}));
        assert_eq!(notes, ["version 1 → 2: apply publishes one update message"]);
        let pending = json!({"version": "2", "publish": "pending"});
        let (merged, notes) = merge_live(AGENT, &json!({"version": "2"}), &pending);
        assert!(merged.get("publish").is_none());
        assert!(
            notes[0].starts_with("publish pending: version 2"),
            "{notes:?}"
        );
        // The client configuration keeps a stored version; a new one may come from the file.
        let (merged, _) = merge_live(CLIENT, &json!({"version": "5"}), &json!({"version": "4"}));
        assert_eq!(merged["version"], "4");
        let (merged, notes) = merge_live(CLIENT, &json!({"version": "5"}), &json!({}));
        assert_eq!(merged["version"], "5");
        assert!(notes[0].contains(CLIENT_SUBJECT), "{notes:?}");
    }

    #[test]
    fn singletons_are_named() {
        assert!(normalize_desired(CLIENT, "other", &json!({})).is_err());
        assert!(normalize_desired(RELEASE, "prod", &json!({"version": "1"})).is_err());
        assert_eq!(
            normalize_desired(AGENT, "a", &json!({"id": "a", "x": null, "v": "1"})).unwrap(),
            json!({"v": "1"})
        );
    }
}
