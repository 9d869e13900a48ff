//! The target config (`ofctl.toml`): where each live system is and how to reach it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::interpolate::Variables;
use crate::kind::System;
use crate::redact;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read target config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: `{key}` holds a credential in clear text; reference the environment instead, e.g. `{key} = \"${{env:{hint}}}\"`")]
    PlaintextCredential {
        path: PathBuf,
        key: String,
        hint: String,
    },
    #[error("{path}: `{key}`: {message}")]
    Value {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("the manifest has {kinds} resources but the target config {path} has no `[{section}] {key}`")]
    Missing {
        path: String,
        kinds: String,
        section: &'static str,
        key: &'static str,
    },
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    tenant: Option<String>,
    environment: Option<String>,
    #[serde(default)]
    variables: toml::Table,
    #[serde(default)]
    engine: EngineConfig,
    #[serde(default)]
    watch: WatchConfig,
    #[serde(default)]
    jobs: JobsConfig,
    #[serde(default)]
    api: ApiSection,
    nats: Option<UrlSection>,
    redis: Option<UrlSection>,
    pinot: Option<UrlSection>,
    connect: Option<UrlSection>,
    tactical: Option<TacticalSection>,
    mongo: Option<MongoSection>,
    kafka: Option<KafkaSection>,
    #[serde(default)]
    redact: RedactSection,
    #[serde(default)]
    manifest: ManifestSection,
    #[serde(default)]
    tls: TlsSection,
}

/// `[redact]`: key names whose values are secret, on top of the built-in rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedactSection {
    #[serde(default)]
    extra_keys: Vec<String>,
}

/// `[manifest]`: what the manifest (PR content) may read besides its own folder.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestSection {
    /// Environment variable names (`NAME`, or a prefix `NAME_*`) `${env:...}` in the manifest
    /// may read, on top of `OFCTL_*`.
    #[serde(default)]
    allowed_env: Vec<String>,
}

/// `[tls]`: trust for the HTTPS systems.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    /// A PEM file of CA certificates trusted on top of the system's (relative paths are from
    /// the config file's folder).
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct UrlSection {
    url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TacticalSection {
    url: String,
    api_key: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct MongoSection {
    uri: String,
    database: Option<String>,
    /// The platform's `security.encryption.password` and `.salt`, which encrypt the agent
    /// registration secret (openframe.md §12).
    encryption_password: Option<String>,
    encryption_salt: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct KafkaSection {
    brokers: String,
}

/// Engine tuning.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Requests in flight per live system (reads and writes), and changes applied at once.
    pub concurrency: usize,
    /// Attempts per change, and per read of a kind, for transient failures.
    pub max_attempts: usize,
    /// First retry delay in milliseconds; doubles each attempt.
    pub retry_base_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            concurrency: 8,
            max_attempts: 5,
            retry_base_ms: 200,
        }
    }
}

/// Default of `[watch] max_deletes` and `ofctl apply --max-deletes`.
pub const DEFAULT_MAX_DELETES: usize = 3;

/// `ofctl watch` behaviour for this target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    /// Reconcile at least this often, to catch out-of-band drift.
    #[serde(with = "crate::duration::text")]
    pub interval: Duration,
    /// Random spread of the interval (0.1 = ±10 %), so replicas and tenants do not align.
    pub jitter: f64,
    /// Quiet time after a file change before reconciling (editors write in bursts).
    #[serde(with = "crate::duration::text")]
    pub debounce: Duration,
    /// Delete managed objects that left the manifest (off: watch never deletes by default).
    pub prune: bool,
    /// Longest a reconcile pass may hold its lock, should the replica die. A pass stops
    /// starting changes at 90 % of it.
    #[serde(with = "crate::duration::text")]
    pub lock_at_most_for: Duration,
    /// Most deletes one pass may make with `prune = true`; a larger prune is refused whole.
    pub max_deletes: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            jitter: 0.1,
            debounce: Duration::from_millis(200),
            prune: false,
            lock_at_most_for: Duration::from_secs(600),
            max_deletes: DEFAULT_MAX_DELETES,
        }
    }
}

/// The HTTP API of `ofctl watch` (`[api]`). Tokens are credentials: only `${env:...}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ApiSection {
    listen: Option<String>,
    management_listen: Option<String>,
    /// One write-scoped token (id `default`); `tokens` adds more, each with its scope.
    token: Option<String>,
    tokens: Vec<ApiTokenSection>,
    allow_unauthenticated: bool,
    connector_classes: Vec<String>,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            listen: None,
            management_listen: None,
            token: None,
            tokens: Vec::new(),
            allow_unauthenticated: false,
            connector_classes: vec![DEBEZIUM_CONNECTORS.to_string()],
        }
    }
}

/// Connector classes the API accepts by default: the Debezium source families.
pub const DEBEZIUM_CONNECTORS: &str = "io.debezium.connector.*";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiTokenSection {
    id: String,
    token: String,
    #[serde(default)]
    scope: ApiScope,
}

/// What a token may do: `read` (GET) or `write` (GET and POST).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiScope {
    Read,
    #[default]
    Write,
}

/// One API token, resolved (the secret is registered for redaction).
#[derive(Clone)]
pub struct ApiToken {
    pub id: String,
    pub secret: String,
    pub scope: ApiScope,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("id", &self.id)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// The `[api]` section, resolved.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: Option<std::net::SocketAddr>,
    pub management_listen: Option<std::net::SocketAddr>,
    /// Empty: no token configured (the API refuses `/v1/*` unless `allow_unauthenticated`).
    pub tokens: Vec<ApiToken>,
    pub allow_unauthenticated: bool,
    /// Exact class names, or prefixes written `prefix.*`.
    pub connector_classes: Vec<String>,
}

impl ApiConfig {
    /// Is `class` one the API may create connectors of?
    pub fn allows_connector_class(&self, class: &str) -> bool {
        self.connector_classes
            .iter()
            .any(|allowed| match allowed.strip_suffix('*') {
                Some(prefix) => class.starts_with(prefix) && class.len() > prefix.len(),
                None => class == allowed,
            })
    }
}

/// When and how often a scheduled job runs, and its lock (ShedLock semantics).
#[derive(Debug, Clone, Copy)]
pub struct JobTiming {
    pub enabled: bool,
    pub interval: Duration,
    pub lock_at_most_for: Duration,
    pub lock_at_least_for: Duration,
}

/// The platform's scheduled jobs (openframe.md §10, §14 give the defaults used here).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    pub connector_health: ConnectorHealthConfig,
    pub api_key_stats: ApiKeyStatsConfig,
    pub publish_fallback: PublishFallbackConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectorHealthConfig {
    pub enabled: bool,
    #[serde(with = "crate::duration::text")]
    pub interval: Duration,
    #[serde(with = "crate::duration::text")]
    pub lock_at_most_for: Duration,
    #[serde(with = "crate::duration::text")]
    pub lock_at_least_for: Duration,
    /// Restarts per failure episode before giving up (and saying so, loudly).
    pub max_restarts: u32,
    /// The wait after the n-th restart is `backoff × n`.
    #[serde(with = "crate::duration::text")]
    pub backoff: Duration,
    /// Healthy this long and the restart count starts again from zero.
    #[serde(with = "crate::duration::text")]
    pub healthy_reset: Duration,
    /// Kafka Connect answered an empty connector list while connectors are expected: treated as
    /// an outage, and asked again after this long (at most half the interval); still empty
    /// then, the connectors are lost and a reconcile pass creates them again.
    #[serde(with = "crate::duration::text")]
    pub outage_recheck: Duration,
}

impl Default for ConnectorHealthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(300),
            lock_at_most_for: Duration::from_secs(300),
            lock_at_least_for: Duration::from_secs(60),
            max_restarts: 5,
            backoff: Duration::from_secs(120),
            healthy_reset: Duration::from_secs(600),
            outage_recheck: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiKeyStatsConfig {
    pub enabled: bool,
    #[serde(with = "crate::duration::text")]
    pub interval: Duration,
    #[serde(with = "crate::duration::text")]
    pub lock_at_most_for: Duration,
    #[serde(with = "crate::duration::text")]
    pub lock_at_least_for: Duration,
}

impl Default for ApiKeyStatsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(300),
            lock_at_most_for: Duration::from_secs(600),
            lock_at_least_for: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublishFallbackConfig {
    pub enabled: bool,
    #[serde(with = "crate::duration::text")]
    pub interval: Duration,
    #[serde(with = "crate::duration::text")]
    pub lock_at_most_for: Duration,
    #[serde(with = "crate::duration::text")]
    pub lock_at_least_for: Duration,
    /// Publish attempts per change before the fallback gives up until the next change.
    pub max_attempts: u32,
}

impl Default for PublishFallbackConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(30),
            lock_at_most_for: Duration::from_secs(300),
            lock_at_least_for: Duration::from_secs(10),
            max_attempts: 5,
        }
    }
}

macro_rules! job_timing {
    ($($t:ty),*) => {$(
        impl $t {
            pub fn timing(&self) -> JobTiming {
                JobTiming {
                    enabled: self.enabled,
                    interval: self.interval,
                    lock_at_most_for: self.lock_at_most_for,
                    lock_at_least_for: self.lock_at_least_for,
                }
            }
        }
    )*};
}
job_timing!(
    ConnectorHealthConfig,
    ApiKeyStatsConfig,
    PublishFallbackConfig
);

/// A loaded target config. Endpoint values may hold placeholders; they are resolved when a
/// system is actually used, so a plan touching only NATS needs no Mongo environment.
#[derive(Debug, Clone, Default)]
pub struct TargetConfig {
    pub path: Option<PathBuf>,
    /// Hash of the file's text, so watch mode rebuilds connections only when it changed.
    pub source_digest: String,
    raw: RawConfig,
    pub variables: Variables,
}

impl TargetConfig {
    /// Loads `path`; a missing file at the default location gives an empty config.
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default())
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut config = Self {
            source_digest: crate::json::digest(&Value::String(text.to_string())),
            path: Some(path.to_path_buf()),
            raw,
            variables: Variables::new(),
        };
        config.check_credentials()?;
        config.check_ranges()?;
        redact::add_secret_keys(config.raw.redact.extra_keys.iter().map(String::as_str));
        for pattern in &config.raw.manifest.allowed_env {
            if !crate::interpolate::valid_env_pattern(pattern) {
                return Err(ConfigError::Value {
                    path: path.to_path_buf(),
                    key: "manifest.allowed_env".into(),
                    message: format!("`{pattern}` is not a variable name or a prefix ending in `*` (e.g. \"FOO\" or \"FOO_*\"); a bare `*` would hand the whole environment to the manifest"),
                });
            }
        }
        let env_only = Variables::operator();
        for (name, value) in &config.raw.variables {
            let json = serde_json::to_value(value).map_err(|e| ConfigError::Value {
                path: path.to_path_buf(),
                key: format!("variables.{name}"),
                message: e.to_string(),
            })?;
            let resolved = env_only
                .resolve_value(&json)
                .map_err(|(_, e)| ConfigError::Value {
                    path: path.to_path_buf(),
                    key: format!("variables.{name}"),
                    message: e.to_string(),
                })?;
            config.variables.insert(name.clone(), resolved);
        }
        config
            .variables
            .allow_env(config.raw.manifest.allowed_env.iter().cloned());
        Ok(config)
    }

    /// Values that parse but would misbehave (a zero interval spins, a NaN jitter panics, a
    /// huge concurrency exhausts sockets) are refused here, naming the key and its range.
    fn check_ranges(&self) -> Result<(), ConfigError> {
        let path = self.path.clone().unwrap_or_default();
        let fail = |key: &str, range: &str, found: String| ConfigError::Value {
            path: path.clone(),
            key: key.to_string(),
            message: format!("must be {range}, not {found}"),
        };
        let secs = Duration::from_secs;
        let duration = |key: &str, value: Duration, min: Duration, max: Duration| {
            if value < min || value > max {
                return Err(fail(
                    key,
                    &format!("between {min:?} and {max:?}"),
                    format!("{value:?}"),
                ));
            }
            Ok(())
        };
        let integer = |key: &str, value: u64, min: u64, max: u64| {
            if value < min || value > max {
                return Err(fail(
                    key,
                    &format!("between {min} and {max}"),
                    value.to_string(),
                ));
            }
            Ok(())
        };
        let engine = &self.raw.engine;
        integer("engine.concurrency", engine.concurrency as u64, 1, 256)?;
        integer("engine.max_attempts", engine.max_attempts as u64, 1, 20)?;
        integer("engine.retry_base_ms", engine.retry_base_ms, 1, 60_000)?;
        let watch = &self.raw.watch;
        duration(
            "watch.interval",
            watch.interval,
            Duration::from_millis(100),
            secs(86_400),
        )?;
        if !watch.jitter.is_finite() || !(0.0..=0.9).contains(&watch.jitter) {
            return Err(fail(
                "watch.jitter",
                "a number between 0 and 0.9",
                watch.jitter.to_string(),
            ));
        }
        duration("watch.debounce", watch.debounce, Duration::ZERO, secs(60))?;
        duration(
            "watch.lock_at_most_for",
            watch.lock_at_most_for,
            secs(1),
            secs(86_400),
        )?;
        integer("watch.max_deletes", watch.max_deletes as u64, 0, 10_000)?;
        let jobs = &self.raw.jobs;
        for (name, timing) in [
            ("connector_health", jobs.connector_health.timing()),
            ("api_key_stats", jobs.api_key_stats.timing()),
            ("publish_fallback", jobs.publish_fallback.timing()),
        ] {
            let key = |field: &str| format!("jobs.{name}.{field}");
            duration(&key("interval"), timing.interval, secs(1), secs(86_400))?;
            duration(
                &key("lock_at_most_for"),
                timing.lock_at_most_for,
                secs(1),
                secs(86_400),
            )?;
            duration(
                &key("lock_at_least_for"),
                timing.lock_at_least_for,
                Duration::ZERO,
                timing.lock_at_most_for,
            )?;
        }
        Ok(())
    }

    fn check_credentials(&self) -> Result<(), ConfigError> {
        let path = self.path.clone().unwrap_or_default();
        let plaintext = |key: &str, value: &str, hint: &str| -> Result<(), ConfigError> {
            if value.contains("${env:") {
                Ok(())
            } else {
                Err(ConfigError::PlaintextCredential {
                    path: path.clone(),
                    key: key.to_string(),
                    hint: hint.to_string(),
                })
            }
        };
        if let Some(api_key) = self
            .raw
            .tactical
            .as_ref()
            .and_then(|t| t.api_key.as_deref())
        {
            plaintext("tactical.api_key", api_key, "OFCTL_TACTICAL_API_KEY")?;
        }
        if let Some(token) = &self.raw.api.token {
            plaintext("api.token", token, "OFCTL_API_TOKEN")?;
        }
        for (i, t) in self.raw.api.tokens.iter().enumerate() {
            let hint = format!(
                "OFCTL_API_TOKEN_{}",
                t.id.to_ascii_uppercase().replace('-', "_")
            );
            plaintext(&format!("api.tokens[{i}].token"), &t.token, &hint)?;
        }
        if let Some(mongo) = &self.raw.mongo {
            let keys = [
                (
                    "mongo.encryption_password",
                    &mongo.encryption_password,
                    "OFCTL_ENCRYPTION_PASSWORD",
                ),
                (
                    "mongo.encryption_salt",
                    &mongo.encryption_salt,
                    "OFCTL_ENCRYPTION_SALT",
                ),
            ];
            for (key, value, hint) in keys {
                if let Some(value) = value {
                    plaintext(key, value, hint)?;
                }
            }
        }
        let uris = [
            ("mongo.uri", self.raw.mongo.as_ref().map(|m| m.uri.as_str())),
            ("redis.url", self.raw.redis.as_ref().map(|r| r.url.as_str())),
            ("nats.url", self.raw.nats.as_ref().map(|n| n.url.as_str())),
        ];
        for (key, uri) in uris {
            if let Some(uri) = uri {
                let has_password = uri
                    .split_once("://")
                    .and_then(|(_, rest)| rest.split_once('@'))
                    .is_some_and(|(userinfo, _)| userinfo.contains(':'));
                if has_password {
                    let hint = format!("OFCTL_{}", key.replace('.', "_").to_ascii_uppercase());
                    plaintext(key, uri, &hint)?;
                }
            }
        }
        Ok(())
    }

    pub fn tenant(&self) -> Result<String, ConfigError> {
        self.resolve(
            "tenant",
            self.raw.tenant.as_deref().unwrap_or("default"),
            false,
        )
    }

    pub fn environment(&self) -> Result<String, ConfigError> {
        self.resolve(
            "environment",
            self.raw.environment.as_deref().unwrap_or("default"),
            false,
        )
    }

    pub fn engine(&self) -> &EngineConfig {
        &self.raw.engine
    }

    pub fn watch(&self) -> &WatchConfig {
        &self.raw.watch
    }

    pub fn jobs(&self) -> &JobsConfig {
        &self.raw.jobs
    }

    /// The `[api]` section with its tokens resolved from the environment. A token that
    /// resolves to an empty string counts as not configured (`${env:OFCTL_API_TOKEN:-}`).
    pub fn api(&self) -> Result<ApiConfig, ConfigError> {
        let api = &self.raw.api;
        let address = |key: &str, value: &Option<String>| -> Result<_, ConfigError> {
            let Some(value) = value else { return Ok(None) };
            let text = self.resolve(key, value, false)?;
            text.parse().map(Some).map_err(|e| ConfigError::Value {
                path: self.path.clone().unwrap_or_default(),
                key: key.to_string(),
                message: format!("`{text}` is not an address such as 0.0.0.0:8095 ({e})"),
            })
        };
        let mut tokens = Vec::new();
        let declared = api
            .token
            .iter()
            .map(|t| ("default", t, ApiScope::Write, "api.token".to_string()))
            .chain(api.tokens.iter().enumerate().map(|(i, t)| {
                (
                    t.id.as_str(),
                    &t.token,
                    t.scope,
                    format!("api.tokens[{i}].token"),
                )
            }));
        for (id, value, scope, key) in declared {
            let secret = self.resolve(&key, value, true)?;
            if secret.is_empty() {
                continue;
            }
            if secret.len() < 16 {
                return Err(ConfigError::Value {
                    path: self.path.clone().unwrap_or_default(),
                    key,
                    message: format!(
                        "the token is {} characters long; use at least 16 (e.g. `openssl rand -hex 32`)",
                        secret.len()
                    ),
                });
            }
            if tokens.iter().any(|t: &ApiToken| t.id == id) {
                return Err(ConfigError::Value {
                    path: self.path.clone().unwrap_or_default(),
                    key,
                    message: format!(
                        "token id `{id}` is used twice; ids name tokens in the audit log"
                    ),
                });
            }
            tokens.push(ApiToken {
                id: id.to_string(),
                secret,
                scope,
            });
        }
        Ok(ApiConfig {
            listen: address("api.listen", &api.listen)?,
            management_listen: address("api.management_listen", &api.management_listen)?,
            tokens,
            allow_unauthenticated: api.allow_unauthenticated,
            connector_classes: api.connector_classes.clone(),
        })
    }

    /// The CA file of `[tls] ca_file`, relative to the config's folder.
    pub fn tls_ca_file(&self) -> Option<PathBuf> {
        let file = self.raw.tls.ca_file.as_ref()?;
        let dir = self.path.as_deref().and_then(Path::parent);
        Some(dir.map_or_else(|| file.clone(), |d| d.join(file)))
    }

    /// Resolves a config value: the operator's file, so `${env:...}` reads any variable.
    fn resolve(&self, key: &str, value: &str, secret: bool) -> Result<String, ConfigError> {
        let resolved = self
            .variables
            .as_operator()
            .resolve_str(value)
            .map_err(|e| ConfigError::Value {
                path: self.path.clone().unwrap_or_default(),
                key: key.to_string(),
                message: e.to_string(),
            })?;
        let text = match resolved {
            Value::String(s) => s,
            other => other.to_string(),
        };
        if secret {
            redact::register(&text);
        }
        redact::register_uri_credentials(&text);
        Ok(text)
    }

    fn missing(&self, system: System, section: &'static str, key: &'static str) -> ConfigError {
        ConfigError::Missing {
            path: self
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(none)".into()),
            kinds: system.to_string(),
            section,
            key,
        }
    }

    /// The endpoint URL (or broker list, or URI) for a system.
    pub fn endpoint(&self, system: System) -> Result<String, ConfigError> {
        let (section, key, value) = match system {
            System::Nats => ("nats", "url", self.raw.nats.as_ref().map(|s| s.url.clone())),
            System::Pinot => (
                "pinot",
                "url",
                self.raw.pinot.as_ref().map(|s| s.url.clone()),
            ),
            System::Connect => (
                "connect",
                "url",
                self.raw.connect.as_ref().map(|s| s.url.clone()),
            ),
            System::Tactical => (
                "tactical",
                "url",
                self.raw.tactical.as_ref().map(|s| s.url.clone()),
            ),
            System::Mongo => (
                "mongo",
                "uri",
                self.raw.mongo.as_ref().map(|s| s.uri.clone()),
            ),
            System::Kafka => (
                "kafka",
                "brokers",
                self.raw.kafka.as_ref().map(|s| s.brokers.clone()),
            ),
        };
        let value = value.ok_or_else(|| self.missing(system, section, key))?;
        self.resolve(&format!("{section}.{key}"), &value, system == System::Mongo)
    }

    pub fn redis_url(&self) -> Option<Result<String, ConfigError>> {
        let url = self.raw.redis.as_ref()?.url.clone();
        Some(self.resolve("redis.url", &url, false))
    }

    pub fn tactical_api_key(&self) -> Option<Result<String, ConfigError>> {
        let key = self.raw.tactical.as_ref()?.api_key.clone()?;
        Some(self.resolve("tactical.api_key", &key, true))
    }

    pub fn mongo_database(&self) -> Option<String> {
        self.raw.mongo.as_ref()?.database.clone()
    }

    /// `(password, salt)` for the registration secret, both secret; `None` unless both are set.
    pub fn mongo_encryption(&self) -> Option<Result<(String, String), ConfigError>> {
        let mongo = self.raw.mongo.as_ref()?;
        let (password, salt) = (
            mongo.encryption_password.as_ref()?,
            mongo.encryption_salt.as_ref()?,
        );
        Some((|| {
            Ok((
                self.resolve("mongo.encryption_password", password, true)?,
                self.resolve("mongo.encryption_salt", salt, true)?,
            ))
        })())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_name_the_key_and_the_range() {
        for (text, key, range) in [
            (
                "[watch]\ninterval = \"0s\"\n",
                "watch.interval",
                "between 100ms and 86400s",
            ),
            (
                "[watch]\njitter = nan\n",
                "watch.jitter",
                "a number between 0 and 0.9",
            ),
            (
                "[watch]\njitter = 1.5\n",
                "watch.jitter",
                "a number between 0 and 0.9",
            ),
            (
                "[engine]\nconcurrency = 100000\n",
                "engine.concurrency",
                "between 1 and 256",
            ),
            (
                "[engine]\nconcurrency = 0\n",
                "engine.concurrency",
                "between 1 and 256",
            ),
            (
                "[watch]\ndebounce = \"2h\"\n",
                "watch.debounce",
                "between 0ns and 60s",
            ),
            (
                "[jobs.api_key_stats]\nlock_at_most_for = \"10s\"\nlock_at_least_for = \"1m\"\n",
                "jobs.api_key_stats.lock_at_least_for",
                "between 0ns and 10s",
            ),
        ] {
            let err = TargetConfig::parse(text, Path::new("ofctl.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("ofctl.toml: `{key}`: must be {range}")),
                "{text}: {err}"
            );
        }
        let ok = TargetConfig::parse(
            "[watch]\ninterval = \"1s\"\njitter = 0.0\nmax_deletes = 0\n",
            Path::new("ofctl.toml"),
        )
        .unwrap();
        assert_eq!(ok.watch().max_deletes, 0);
    }

    #[test]
    fn rejects_plaintext_credentials() {
        let err = TargetConfig::parse(
            "[tactical]\nurl = \"http://x\"\napi_key = \"abc\"\n",
            Path::new("ofctl.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("tactical.api_key"), "{err}");
        let err = TargetConfig::parse(
            "[mongo]\nuri = \"mongodb://u:p@h/db\"\n",
            Path::new("ofctl.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("mongo.uri"), "{err}");
        let err = TargetConfig::parse(
            "[mongo]\nuri = \"mongodb://h/db\"\nencryption_password = \"p\"\n",
            Path::new("ofctl.toml"),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("mongo.encryption_password"),
            "{err}"
        );
    }

    #[test]
    fn encryption_settings_resolve_from_the_environment_and_are_secret() {
        std::env::set_var(
            "OFCTL_TEST_CFG_ENC_PW",
            "a-password-for-the-config-test-0001",
        );
        let cfg = TargetConfig::parse(
            "[mongo]\nuri = \"mongodb://h/db\"\nencryption_password = \"${env:OFCTL_TEST_CFG_ENC_PW}\"\nencryption_salt = \"${env:OFCTL_TEST_CFG_ENC_SALT:-0011223344556677}\"\n",
            Path::new("ofctl.toml"),
        )
        .unwrap();
        let (pw, salt) = cfg.mongo_encryption().unwrap().unwrap();
        assert_eq!(pw, "a-password-for-the-config-test-0001");
        assert_eq!(salt, "0011223344556677");
        assert!(!redact::redact(&pw).contains(&pw));
    }

    #[test]
    fn resolves_endpoints_lazily() {
        let cfg = TargetConfig::parse(
            "tenant = \"acme\"\n[nats]\nurl = \"${env:OFCTL_TEST_CFG_NATS:-nats://127.0.0.1:4222}\"\n[variables]\nreplicas = 2\n",
            Path::new("ofctl.toml"),
        )
        .unwrap();
        assert_eq!(cfg.tenant().unwrap(), "acme");
        assert_eq!(cfg.endpoint(System::Nats).unwrap(), "nats://127.0.0.1:4222");
        assert!(cfg.endpoint(System::Pinot).is_err());
        assert_eq!(cfg.variables.get("replicas"), Some(&serde_json::json!(2)));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = TargetConfig::parse("[nats]\nurl = \"x\"\nport = 1\n", Path::new("c.toml"))
            .unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
    }
}
