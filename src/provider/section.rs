//! A provider's own section of the target config (`[nats]`, `[mongo]`, ...).
//!
//! The config parses the generic sections and keeps the others as the file has them. Each
//! provider declares its section's struct (`deny_unknown_fields`, like the generic ones), the
//! check the registry runs when the file loads, and reads its values through [`Section`]:
//! errors name the file and the key (and the line, for what does not parse), and values are
//! resolved (`${env:...}`) one key at a time when the provider needs them, so a plan that
//! touches only NATS needs no Mongo environment.

use serde::de::DeserializeOwned;

use crate::config::{ConfigError, TargetConfig};
use crate::kind::System;

/// What the registry knows of a provider's section.
pub struct SectionInfo {
    pub system: System,
    /// The top-level key; a key that no provider and no generic section claims is an error.
    pub name: &'static str,
    /// The key of the system's address (`url`, `uri`, `brokers`).
    pub endpoint_key: &'static str,
    /// Run when the config loads, whether or not the manifest uses the system: the section
    /// parses (no unknown key, right types) and holds no credential in clear text. Resolves
    /// nothing.
    pub check: fn(&TargetConfig) -> Result<(), ConfigError>,
    /// The system's address, resolved: the value the system's resources cannot do without.
    pub endpoint: fn(&TargetConfig) -> Result<String, ConfigError>,
}

/// The `endpoint` of a section whose address needs nothing but resolving: the field `field`
/// reads from the provider's struct.
pub fn endpoint<T: DeserializeOwned>(
    config: &TargetConfig,
    info: &SectionInfo,
    field: fn(&T) -> &str,
) -> Result<String, ConfigError> {
    let section = Section::<T>::require(config, info)?;
    section.resolve(info.endpoint_key, field(&section.fields))
}

/// A provider's section as the file has it (values unresolved).
pub struct Section<'a, T> {
    config: &'a TargetConfig,
    name: &'static str,
    pub fields: T,
}

impl<'a, T: DeserializeOwned> Section<'a, T> {
    /// The section, or `None` when the file has none.
    pub fn read(config: &'a TargetConfig, info: &SectionInfo) -> Result<Option<Self>, ConfigError> {
        Ok(config.section(info.name)?.map(|fields| Self {
            config,
            name: info.name,
            fields,
        }))
    }

    /// The section, or the error saying that the system's resources need its address.
    pub fn require(config: &'a TargetConfig, info: &SectionInfo) -> Result<Self, ConfigError> {
        Self::read(config, info)?
            .ok_or_else(|| config.missing(info.system, info.name, info.endpoint_key))
    }
}

impl<T> Section<'_, T> {
    /// `value`, this section's `key`, with its placeholders resolved.
    pub fn resolve(&self, key: &str, value: &str) -> Result<String, ConfigError> {
        self.config.resolve(&self.key(key), value, false)
    }

    /// Like [`Section::resolve`], for a secret: registered for masking before anything prints
    /// it.
    pub fn resolve_secret(&self, key: &str, value: &str) -> Result<String, ConfigError> {
        self.config.resolve(&self.key(key), value, true)
    }

    /// Refuses a credential written in the file; the error suggests the variable `hint`.
    pub fn refuse_plaintext(&self, key: &str, value: &str, hint: &str) -> Result<(), ConfigError> {
        self.config.refuse_plaintext(&self.key(key), value, hint)
    }

    /// Refuses a URI with a password written in the file.
    pub fn refuse_uri_password(&self, key: &str, uri: &str) -> Result<(), ConfigError> {
        self.config.refuse_uri_password(&self.key(key), uri)
    }

    /// The config's own name of `key`: `nats.url`.
    fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.name)
    }
}
