//! The registry: every provider ofctl is built with, and the lookups the loader, the engine
//! and the API make by kind name. The one place that knows all providers.

use std::sync::Arc;

use serde_json::Value;

use crate::config::{ConfigError, TargetConfig};
use crate::kind::{KindInfo, System};
use crate::provider::Provider;
use crate::providers::{connect, kafka, mongo, nats, pinot, tactical};
use crate::resource::Resource;

/// Builds the provider for `system` from the target config (connections open lazily).
pub fn build(system: System, config: &TargetConfig) -> Result<Arc<dyn Provider>, ConfigError> {
    let endpoint = || config.endpoint(system);
    // Requests in flight per system, for reads as for changes (apply holds the same limit).
    let concurrency = config.engine().concurrency;
    let owner = || crate::provider::owner::Owner::from_config(config);
    let tls = || crate::provider::http::Tls::from_config(config);
    match system {
        System::Tactical => build_tactical(config, (None, None)),
        System::Nats => Ok(Arc::new(nats::NatsProvider::new(endpoint()?, owner()?))),
        System::Mongo => Ok(Arc::new(mongo::MongoProvider::new(endpoint()?, config))),
        System::Connect => {
            let provider =
                connect::ConnectProvider::new(&endpoint()?, concurrency, owner()?, &tls()?)
                    .map_err(|e| ConfigError::Value {
                        path: config.path.clone().unwrap_or_default(),
                        key: "connect.url".into(),
                        message: e.message,
                    })?;
            Ok(Arc::new(provider))
        }
        System::Pinot => {
            let provider = pinot::PinotProvider::new(&endpoint()?, concurrency, owner()?, &tls()?)
                .map_err(|e| ConfigError::Value {
                    path: config.path.clone().unwrap_or_default(),
                    key: "pinot.url".into(),
                    message: e.message,
                })?;
            Ok(Arc::new(provider))
        }
        System::Kafka => kafka::KafkaProvider::new(&endpoint()?)
            .map(|p| Arc::new(p) as Arc<dyn Provider>)
            .map_err(|e| ConfigError::Value {
                path: config.path.clone().unwrap_or_default(),
                key: "kafka.brokers".into(),
                message: e.message,
            }),
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
    let url = match config.endpoint(System::Tactical) {
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
    let api_key = match config.tactical_api_key().transpose()? {
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

    #[test]
    fn kinds_named_across_providers_are_registered() {
        for kind in [mongo::tools::CONNECTOR_KIND, mongo::STREAM_KIND] {
            assert!(kind_info(kind).is_some(), "{kind} is not a registered kind");
        }
    }
}
