//! The registry: every provider ofctl is built with, and the lookups the loader, the engine
//! and the API make by kind name. The one place that knows all providers.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::config::{ConfigError, TargetConfig};
use crate::kind::{KindInfo, System};
use crate::provider::section::SectionInfo;
use crate::provider::Provider;
use crate::providers::{connect, kafka, mongo, nats, pinot, tactical};
use crate::resource::Resource;

/// The sections of `ofctl.toml` the providers own, one per system.
const SECTIONS: [&SectionInfo; 6] = [
    &nats::SECTION,
    &pinot::SECTION,
    &connect::SECTION,
    &tactical::SECTION,
    &kafka::SECTION,
    &mongo::SECTION,
];

fn section(system: System) -> &'static SectionInfo {
    SECTIONS
        .into_iter()
        .find(|s| s.system == system)
        .expect("every system has a section")
}

/// Loads the target config (a missing file at the default location gives an empty one): the
/// generic sections, then every provider's, so that a bad `[kafka]` fails even a manifest
/// without topics. A top-level key that is neither is an error.
pub fn load_config(path: &Path, required: bool) -> Result<TargetConfig, ConfigError> {
    let config = TargetConfig::load(path, required)?;
    check_config(&config)?;
    Ok(config)
}

/// The checks of [`load_config`] that need the providers.
pub fn check_config(config: &TargetConfig) -> Result<(), ConfigError> {
    config.check_sections(&SECTIONS.map(|s| s.name))?;
    SECTIONS.iter().try_for_each(|s| (s.check)(config))
}

/// The address of `system` from its section, resolved: an error when the config does not
/// reach it (no section, or a placeholder that does not resolve).
pub fn endpoint(system: System, config: &TargetConfig) -> Result<String, ConfigError> {
    (section(system).endpoint)(config)
}

/// Builds the provider for `system` from the target config (connections open lazily).
pub fn build(system: System, config: &TargetConfig) -> Result<Arc<dyn Provider>, ConfigError> {
    let endpoint = || endpoint(system, config);
    // Requests in flight per system, for reads as for changes (apply holds the same limit).
    let concurrency = config.engine().concurrency;
    let owner = || crate::provider::owner::Owner::from_config(config);
    let tls = || crate::provider::http::Tls::from_config(config);
    // A provider that refuses its address (a URL that does not parse, say).
    let refused = |e: crate::provider::ProviderError| {
        let section = section(system);
        ConfigError::Value {
            path: config.path.clone().unwrap_or_default(),
            key: format!("{}.{}", section.name, section.endpoint_key),
            message: e.message,
        }
    };
    match system {
        System::Tactical => build_tactical(config, (None, None)),
        System::Nats => Ok(Arc::new(nats::NatsProvider::new(endpoint()?, owner()?))),
        System::Mongo => {
            let nats_url = self::endpoint(System::Nats, config);
            Ok(Arc::new(mongo::MongoProvider::new(config, nats_url)?))
        }
        System::Connect => {
            let provider =
                connect::ConnectProvider::new(&endpoint()?, concurrency, owner()?, &tls()?)
                    .map_err(refused)?;
            Ok(Arc::new(provider))
        }
        System::Pinot => {
            let provider = pinot::PinotProvider::new(&endpoint()?, concurrency, owner()?, &tls()?)
                .map_err(refused)?;
            Ok(Arc::new(provider))
        }
        System::Kafka => kafka::KafkaProvider::new(&endpoint()?)
            .map(|p| Arc::new(p) as Arc<dyn Provider>)
            .map_err(refused),
    }
}

/// Tactical RMM's provider. `[tactical] url` and `api_key` come first; where the config has
/// none (no section, no key, or an empty value) `fallback` supplies it: the `tactical-rmm` tool
/// document's API address and key, which is where the Java service read them
/// ([`mongo::tools::tactical_access`]).
pub fn build_tactical(
    config: &TargetConfig,
    fallback: (Option<String>, Option<String>),
) -> Result<Arc<dyn Provider>, ConfigError> {
    let value_error = |key: &str, message: String| ConfigError::Value {
        path: config.path.clone().unwrap_or_default(),
        key: key.into(),
        message,
    };
    let (fallback_url, fallback_key) = fallback;
    let url = match endpoint(System::Tactical, config) {
        Ok(url) if !url.trim().is_empty() => url,
        configured => match fallback_url {
            Some(url) => url,
            None => {
                return Err(configured.err().unwrap_or_else(|| {
                    value_error(
                        "tactical.url",
                        format!("is empty and the `{}` tool document names no API address; set it, or register the tool", mongo::tools::TACTICAL_TOOL_ID),
                    )
                }))
            }
        },
    };
    let api_key = match tactical::api_key(config)? {
        Some(key) if !key.is_empty() => key,
        _ => fallback_key.ok_or_else(|| {
            value_error(
                "tactical.api_key",
                format!(
                    "is required for Tactical RMM (sent as X-API-KEY) and the `{}` tool document has no credentials.apiKey.key; set `api_key = \"${{env:OFCTL_TACTICAL_API_KEY}}\"`",
                    mongo::tools::TACTICAL_TOOL_ID
                ),
            )
        })?,
    };
    let owner = crate::provider::owner::Owner::from_config(config)?;
    let tls = crate::provider::http::Tls::from_config(config)?;
    let provider =
        tactical::TacticalProvider::new(&url, &api_key, config.engine().concurrency, owner, &tls)
            .map_err(|e| value_error("tactical.api_key", e.message))?;
    Ok(Arc::new(provider))
}

/// Every kind ofctl knows, across providers.
pub fn all_kinds() -> Vec<&'static KindInfo> {
    nats::KINDS
        .iter()
        .chain(&pinot::KINDS)
        .chain(&connect::KINDS)
        .chain(&tactical::KINDS)
        .chain(&kafka::KINDS)
        .chain(&mongo::KINDS)
        .collect()
}

/// Resources a declared resource stands for besides itself (a tool's Kafka Connect
/// connectors), as (pointer into its spec, message) on error. The loader adds them to the
/// manifest like any other, so they are planned, ordered and shown (an identical explicit
/// declaration is merged with them; a different one is an error).
pub fn expand(resource: &Resource) -> Result<Vec<Resource>, (String, String)> {
    mongo::expand(resource)
}

pub fn kind_info(kind: &str) -> Option<&'static KindInfo> {
    all_kinds().into_iter().find(|k| k.kind == kind)
}

/// Checks a loaded spec for what its JSON Schema cannot express (e.g. a name repeated inside
/// a spec file must equal `metadata.name`), as (JSON pointer into the spec, message) pairs.
/// Runs at load time, so `ofctl validate` reports these with the file and line.
pub fn check_spec(kind: &str, name: &str, spec: &Value) -> Vec<(String, String)> {
    match kind {
        connect::KIND => connect::check_spec(name, spec),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> TargetConfig {
        TargetConfig::parse(text, Path::new("ofctl.toml")).unwrap()
    }

    #[test]
    fn rejects_plaintext_credentials() {
        let err = check_config(&parse(
            "[tactical]\nurl = \"http://x\"\napi_key = \"abc\"\n",
        ))
        .unwrap_err();
        assert!(err.to_string().contains("tactical.api_key"), "{err}");
        let err = check_config(&parse("[mongo]\nuri = \"mongodb://u:p@h/db\"\n")).unwrap_err();
        assert!(err.to_string().contains("mongo.uri"), "{err}");
        let err = check_config(&parse(
            "[mongo]\nuri = \"mongodb://h/db\"\nencryption_password = \"p\"\n",
        ))
        .unwrap_err();
        assert!(
            err.to_string().contains("mongo.encryption_password"),
            "{err}"
        );
    }

    #[test]
    fn resolves_endpoints_lazily() {
        let cfg = parse(
            "tenant = \"acme\"\n[nats]\nurl = \"${env:OFCTL_TEST_CFG_NATS:-nats://127.0.0.1:4222}\"\n[variables]\nreplicas = 2\n",
        );
        check_config(&cfg).unwrap();
        assert_eq!(cfg.tenant().unwrap(), "acme");
        assert_eq!(
            endpoint(System::Nats, &cfg).unwrap(),
            "nats://127.0.0.1:4222"
        );
        assert!(endpoint(System::Pinot, &cfg).is_err());
        assert_eq!(cfg.variables.get("replicas"), Some(&serde_json::json!(2)));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = check_config(&parse("[nats]\nurl = \"x\"\nport = 1\n")).unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
        let err = check_config(&parse("[nats]\nurl = \"x\"\n[natz]\n")).unwrap_err();
        assert!(err.to_string().contains("unknown field `natz`"), "{err}");
    }

    #[test]
    fn every_system_has_one_section() {
        for system in all_kinds().into_iter().map(|k| k.system) {
            assert_eq!(SECTIONS.iter().filter(|s| s.system == system).count(), 1);
        }
    }

    #[test]
    fn kinds_named_across_providers_are_registered() {
        for kind in [mongo::tools::CONNECTOR_KIND, mongo::STREAM_KIND] {
            assert!(kind_info(kind).is_some(), "{kind} is not a registered kind");
        }
    }
}
