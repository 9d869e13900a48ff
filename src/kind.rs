//! Per-kind facts the engine needs, declared as data by each provider.

use serde::{Deserialize, Serialize};

/// The live system a kind belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    Nats,
    Pinot,
    Connect,
    Kafka,
    Tactical,
    Mongo,
}

impl System {
    pub fn as_str(self) -> &'static str {
        match self {
            System::Nats => "nats",
            System::Pinot => "pinot",
            System::Connect => "connect",
            System::Kafka => "kafka",
            System::Tactical => "tactical",
            System::Mongo => "mongo",
        }
    }
}

impl std::fmt::Display for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a desired spec is compared with the live one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// Every field on either side counts: a live field absent from the manifest is removed.
    Exact,
    /// Only fields the manifest sets count: the server may add its own.
    DesiredSubset,
}

/// When a field rule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Any difference, including adding or removing the field.
    AnyChange,
    /// A change whose old or new value is this string.
    ToOrFrom(&'static str),
    /// A flag the target cannot turn off again.
    TrueToFalse,
    /// Setting or changing the field; removing it is allowed.
    SetOrChanged,
}

/// What a fired rule does to the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The target cannot change it in place: delete and recreate, which loses data.
    Replace,
    /// The target rejects it unless forced.
    Block,
    /// Applying it restarts what runs (e.g. a connector config write restarts its tasks).
    Restarts,
    /// The target changes it in place, but doing so puts data at risk (a Debezium connector
    /// whose `topic.prefix` moves re-snapshots into new topics): an update that needs the same
    /// approval as a replace (`--allow-replace`, or the resource's `allow-replace` annotation).
    DataRisk,
}

#[derive(Debug, Clone, Copy)]
pub struct FieldRule {
    /// JSON pointer into `spec`.
    pub path: &'static str,
    pub trigger: Trigger,
    pub effect: Effect,
    pub reason: &'static str,
}

#[derive(Debug)]
pub struct KindInfo {
    pub kind: &'static str,
    pub system: System,
    pub compare: Compare,
    pub field_rules: &'static [FieldRule],
    /// JSON pointer patterns into `spec` whose values are secret although no key names a
    /// secret (Tactical's `env_vars`); `*` matches one segment. Keys that name a secret
    /// (`password`, `ssl.keystore.password`, `apiKey`, ...) are secret in every kind, see
    /// [`crate::redact::is_secret_key`].
    pub sensitive: &'static [&'static str],
    /// Whether `${...}` in a `specFile:` body are placeholders (Pinot) or data kept verbatim
    /// for another program to resolve (agent arguments).
    pub interpolate_spec_file: bool,
}

impl KindInfo {
    /// True when the value at `pointer` (inside `spec`) is secret: a key on its path names a
    /// secret (so everything under `credentials` is), or a pattern of the kind matches.
    /// Allocation-free for keys without `~`: redaction and diffing ask this for every node.
    pub fn is_sensitive(&self, pointer: &str) -> bool {
        let names_secret = pointer.split('/').skip(1).any(|raw| {
            if raw.contains('~') {
                crate::redact::is_secret_key(&raw.replace("~1", "/").replace("~0", "~"))
            } else {
                crate::redact::is_secret_key(raw)
            }
        });
        // A pattern matches the pointer's first segments (`*` matching any one).
        names_secret
            || self.sensitive.iter().any(|pattern| {
                let mut segments = pointer.split('/').skip(1);
                pattern
                    .split('/')
                    .skip(1)
                    .all(|p| segments.next().is_some_and(|s| p == "*" || p == s))
            })
    }

    /// Replaces every secret value in `spec` with [`crate::redact::MASK`], keeping the shape
    /// (an API response shows that a tool has a password, not what it is).
    pub fn mask_sensitive(&self, spec: &mut serde_json::Value) {
        crate::path::for_each_leaf(spec, &mut |pointer, leaf| {
            if !leaf.is_null() && self.is_sensitive(pointer) {
                *leaf = serde_json::Value::String(crate::redact::MASK.to_string());
            }
        });
    }
}

/// A provider-specific verdict on a change that simple field rules cannot express.
#[derive(Debug, Clone)]
pub struct Finding {
    pub effect: Effect,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: KindInfo = KindInfo {
        kind: "T",
        system: System::Connect,
        compare: Compare::Exact,
        field_rules: &[],
        sensitive: &["/users/*/login"],
        interpolate_spec_file: false,
    };

    #[test]
    fn sensitive_patterns() {
        assert!(INFO.is_sensitive("/credentials"));
        assert!(INFO.is_sensitive("/credentials/apiKey/key"));
        assert!(INFO.is_sensitive("/users/3/password"));
        assert!(INFO.is_sensitive("/users/3/login"));
        assert!(INFO.is_sensitive("/config/aws.secret.access.key"));
        assert!(INFO.is_sensitive("/config/ssl.keystore.password"));
        assert!(INFO.is_sensitive("/config/some.api.token"));
        assert!(INFO.is_sensitive("/config/database.password"));
        assert!(!INFO.is_sensitive("/config/database.user"));
        assert!(!INFO.is_sensitive("/users/3/name"));
        assert!(INFO.is_sensitive("/config/Database.PASSWORD"));
        assert!(INFO.is_sensitive("/x~1y.password"));
        assert!(!INFO.is_sensitive("/config/key.converter"));
        assert!(!INFO.is_sensitive("/users"));
        assert!(!INFO.is_sensitive(""));
    }

    #[test]
    fn masking_keeps_the_shape() {
        let mut spec = serde_json::json!({
            "credentials": {"username": "u", "apiKey": {"key": "k-123456"}, "none": null},
            "config": {"database.password": "pw", "database.user": "app"}
        });
        INFO.mask_sensitive(&mut spec);
        assert_eq!(
            spec,
            serde_json::json!({
                "credentials": {"username": "(sensitive)", "apiKey": {"key": "(sensitive)"}, "none": null},
                "config": {"database.password": "(sensitive)", "database.user": "app"}
            })
        );
    }
}
