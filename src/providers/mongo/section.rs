//! `[mongo]` of the target config: where the platform database is, and the platform's
//! encryption settings for the registration secret.

use serde::Deserialize;

use super::crypto::EncryptionKey;
use crate::config::{ConfigError, TargetConfig};
use crate::kind::System;
use crate::provider::section::{Section, SectionInfo};

/// `[mongo]` of the target config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MongoSection {
    uri: String,
    database: Option<String>,
    /// The platform's `security.encryption.password` and `.salt`, which encrypt the agent
    /// registration secret (openframe.md §12).
    encryption_password: Option<String>,
    encryption_salt: Option<String>,
}

/// `[mongo] uri`: the platform database's server (a secret: it may hold a password).
pub const SECTION: SectionInfo = SectionInfo {
    system: System::Mongo,
    name: "mongo",
    endpoint_key: "uri",
    check: |config| {
        let Some(mongo) = Section::<MongoSection>::read(config, &SECTION)? else {
            return Ok(());
        };
        let fields = &mongo.fields;
        let encryption = [
            (
                "encryption_password",
                &fields.encryption_password,
                "OFCTL_ENCRYPTION_PASSWORD",
            ),
            (
                "encryption_salt",
                &fields.encryption_salt,
                "OFCTL_ENCRYPTION_SALT",
            ),
        ];
        for (key, value, hint) in encryption {
            if let Some(value) = value {
                mongo.refuse_plaintext(key, value, hint)?;
            }
        }
        mongo.refuse_uri_password("uri", &fields.uri)
    },
    endpoint: |config| database_address(config).map(|(uri, _)| uri),
};

/// Where the platform database is: `[mongo] uri`, resolved, and `database` (see
/// [`super::open_database`]).
pub fn database_address(config: &TargetConfig) -> Result<(String, Option<String>), ConfigError> {
    let mongo = Section::<MongoSection>::require(config, &SECTION)?;
    let uri = mongo.resolve_secret("uri", &mongo.fields.uri)?;
    Ok((uri, mongo.fields.database))
}

/// `(password, salt)` for the registration secret, both secret; `None` unless both are set.
fn encryption_settings(
    mongo: &Section<'_, MongoSection>,
) -> Option<Result<(String, String), ConfigError>> {
    let fields = &mongo.fields;
    let (password, salt) = (
        fields.encryption_password.as_ref()?,
        fields.encryption_salt.as_ref()?,
    );
    Some((|| {
        Ok((
            mongo.resolve_secret("encryption_password", password)?,
            mongo.resolve_secret("encryption_salt", salt)?,
        ))
    })())
}

/// `[mongo]` resolved for the provider.
pub(super) struct Settings {
    pub uri: String,
    pub database: Option<String>,
    /// The key that encrypts the registration secret, or why there is none: an error only when
    /// a secret must be created.
    pub encryption: Result<EncryptionKey, String>,
}

impl Settings {
    pub(super) fn from_config(config: &TargetConfig) -> Result<Self, ConfigError> {
        let mongo = Section::<MongoSection>::require(config, &SECTION)?;
        let uri = mongo.resolve_secret("uri", &mongo.fields.uri)?;
        let encryption = match encryption_settings(&mongo) {
            None => Err("creating the registration secret needs `[mongo] encryption_password` and `encryption_salt` (the platform's security.encryption.password and .salt) in the target config".to_string()),
            Some(Err(e)) => Err(e.to_string()),
            Some(Ok((password, salt))) => EncryptionKey::derive(&password, &salt).map_err(|e| e.to_string()),
        };
        Ok(Self {
            uri,
            database: mongo.fields.database,
            encryption,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encryption_settings_resolve_from_the_environment_and_are_secret() {
        std::env::set_var(
            "OFCTL_TEST_CFG_ENC_PW",
            "a-password-for-the-config-test-0001",
        );
        let cfg = TargetConfig::parse(
            "[mongo]\nuri = \"mongodb://h/db\"\nencryption_password = \"${env:OFCTL_TEST_CFG_ENC_PW}\"\nencryption_salt = \"${env:OFCTL_TEST_CFG_ENC_SALT:-0011223344556677}\"\n",
            std::path::Path::new("ofctl.toml"),
        )
        .unwrap();
        let mongo = Section::<MongoSection>::read(&cfg, &SECTION)
            .unwrap()
            .unwrap();
        let (pw, salt) = encryption_settings(&mongo).unwrap().unwrap();
        assert_eq!(pw, "a-password-for-the-config-test-0001");
        assert_eq!(salt, "0011223344556677");
        assert!(!crate::redact::redact(&pw).contains(&pw));
    }
}
