//! The desired and observed objects the engine compares.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `Kind/name`, unique across a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    pub kind: String,
    pub name: String,
}

impl Address {
    pub fn new(kind: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            name: name.into(),
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        let (kind, name) = text.split_once('/')?;
        (!kind.is_empty() && !name.is_empty()).then(|| Self::new(kind, name))
    }
}

impl Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Address::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("`{text}` is not an address (Kind/name)"))
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// Where a resource was declared, so later errors can point at the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Span {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Annotations ofctl understands on `metadata.annotations`.
pub mod annotations {
    /// `"true"`: a change this resource needs that destroys data (replace) may run.
    pub const ALLOW_REPLACE: &str = "ofctl.openframe.io/allow-replace";
    /// `"true"`: an incompatible change that the target would reject runs with its force flag.
    pub const FORCE: &str = "ofctl.openframe.io/force";
    /// `heal` (default), `report` or `ignore`: what watch mode does about drift.
    pub const DRIFT_POLICY: &str = "ofctl.openframe.io/drift-policy";
}

/// One object the manifest asks for, after loading, interpolation and validation.
#[derive(Debug, Clone)]
pub struct Resource {
    pub address: Address,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub spec: Value,
    pub depends_on: Vec<Address>,
    pub source: Span,
}

impl Resource {
    pub fn annotation_is_true(&self, key: &str) -> bool {
        self.annotations.get(key).is_some_and(|v| v == "true")
    }
}

/// A live object as a provider read it, already normalized.
#[derive(Debug, Clone)]
pub struct Observed {
    pub name: String,
    pub spec: Value,
    /// Carries ofctl's ownership marker, so `--prune` may delete it.
    pub managed: bool,
    /// What the plan should tell about the live object beyond its spec (e.g. a connector task
    /// FAILED). Never compared: health is not desired state.
    pub notes: Vec<String>,
}
