//! The ownership marker a provider writes on what it creates, per tenant and environment, so
//! one tenant's prune never deletes another's objects on a shared system.
//!
//! The marker is the value `ofctl/<tenant>/<environment>` under the key
//! `ofctl.openframe.io/managed-by` (stream metadata, table custom config, connector config).
//! Before markers named the tenant the value was plain `ofctl`: such objects are adopted (a
//! note in the plan; the next write re-marks them) and never pruned.

use crate::config::{ConfigError, TargetConfig};

/// Where the marker lives in each object.
pub const OWNER_KEY: &str = "ofctl.openframe.io/managed-by";
/// The marker every tenant wrote before markers named the tenant.
pub const LEGACY_OWNER: &str = "ofctl";

/// This tenant's and environment's marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner(String);

impl Owner {
    pub fn new(tenant: &str, environment: &str) -> Self {
        Self(format!("ofctl/{tenant}/{environment}"))
    }

    pub fn from_config(config: &TargetConfig) -> Result<Self, ConfigError> {
        Ok(Self::new(&config.tenant()?, &config.environment()?))
    }

    /// The value to write under [`OWNER_KEY`].
    pub fn value(&self) -> &str {
        &self.0
    }

    /// From the marker found on a live object: whether this tenant owns it (so `--prune` may
    /// delete it), and the notes the plan shows (an old-style marker is adopted).
    pub fn observe(&self, found: Option<&str>) -> (bool, Vec<String>) {
        match found {
            Some(v) if v == self.0 => (true, Vec::new()),
            Some(LEGACY_OWNER) => (
                false,
                vec![format!(
                    "carries the old ownership marker `{OWNER_KEY}: {LEGACY_OWNER}` (no tenant): adopted, the next write marks it `{}`; never pruned until then",
                    self.0
                )],
            ),
            _ => (false, Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_tenant_and_environment_own_an_object() {
        let a = Owner::new("a", "prod");
        assert_eq!(a.value(), "ofctl/a/prod");
        assert_eq!(a.observe(Some("ofctl/a/prod")), (true, vec![]));
        assert!(!a.observe(Some("ofctl/b/prod")).0);
        assert!(!a.observe(Some("ofctl/a/staging")).0);
        assert!(!a.observe(None).0);
        let (owned, notes) = a.observe(Some("ofctl"));
        assert!(!owned);
        assert!(notes[0].contains("adopted"), "{notes:?}");
    }
}
