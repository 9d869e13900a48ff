//! The target config (`ofctl.toml`): the generic sections (tenant, engine tuning, watch,
//! jobs, API, ...) parsed here, and the providers' sections (where each live system is and how
//! to reach it) kept for their providers to read.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::{DeserializeOwned, DeserializeSeed, Error as _, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
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

/// The generic sections. Any other top-level key is a provider's section, kept as the file has
/// it: each provider deserializes and checks its own ([`TargetConfig::section`]), and
/// `registry::load_config` refuses a key that is neither (the config layer does not know the
/// providers).
#[derive(Debug, Default, Clone, Deserialize)]
struct RawConfig {
    tenant: Option<String>,
    environment: Option<String>,
    /// Taken out by [`TargetConfig::parse`], which keeps the values resolved in
    /// [`TargetConfig::variables`] instead of both.
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
    redis: Option<UrlSection>,
    #[serde(default)]
    redact: RedactSection,
    #[serde(default)]
    manifest: ManifestSection,
    #[serde(default)]
    tls: TlsSection,
}

/// The top-level keys [`RawConfig`] reads, in its order.
const GENERIC_SECTIONS: [&str; 11] = [
    "tenant",
    "environment",
    "variables",
    "engine",
    "watch",
    "jobs",
    "api",
    "redis",
    "redact",
    "manifest",
    "tls",
];

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
    /// Shared by clones: a tenant's config is held by its loop, its engines and its API view.
    raw: Arc<RawConfig>,
    /// The file's text, where the providers' sections stay until their providers read them:
    /// parsed from it, their errors show the line as the generic sections' do.
    text: Arc<str>,
    /// The provider sections asked for so far, parsed without spans (every pass asks for
    /// some): only those are kept, as the whole file's table costs tens of KB a tenant.
    sections: Arc<std::sync::RwLock<std::collections::BTreeMap<String, Option<toml::Value>>>>,
    pub variables: Variables,
}

impl TargetConfig {
    /// Loads `path`; a missing file at the default location gives an empty config. Checks the
    /// generic sections only: `registry::load_config` checks the providers' too.
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
        let mut raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let raw_variables = std::mem::take(&mut raw.variables);
        let mut config = Self {
            source_digest: crate::json::digest(&Value::String(text.to_string())),
            path: Some(path.to_path_buf()),
            raw: Arc::new(raw),
            text: text.into(),
            sections: Default::default(),
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
        for (name, value) in raw_variables {
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
            config.variables.insert(name, resolved);
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
        if let Some(token) = &self.raw.api.token {
            self.refuse_plaintext("api.token", token, "OFCTL_API_TOKEN")?;
        }
        for (i, t) in self.raw.api.tokens.iter().enumerate() {
            let hint = format!(
                "OFCTL_API_TOKEN_{}",
                t.id.to_ascii_uppercase().replace('-', "_")
            );
            self.refuse_plaintext(&format!("api.tokens[{i}].token"), &t.token, &hint)?;
        }
        if let Some(redis) = &self.raw.redis {
            self.refuse_uri_password("redis.url", &redis.url)?;
        }
        Ok(())
    }

    /// Refuses a credential written in the file: `key` must reference the environment, and
    /// the error shows how, with the variable `hint`.
    pub fn refuse_plaintext(&self, key: &str, value: &str, hint: &str) -> Result<(), ConfigError> {
        if value.contains("${env:") {
            return Ok(());
        }
        Err(ConfigError::PlaintextCredential {
            path: self.path.clone().unwrap_or_default(),
            key: key.to_string(),
            hint: hint.to_string(),
        })
    }

    /// Refuses a URI with a password written in the file (`scheme://user:password@host`).
    pub fn refuse_uri_password(&self, key: &str, uri: &str) -> Result<(), ConfigError> {
        let has_password = uri
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .is_some_and(|(userinfo, _)| userinfo.contains(':'));
        if !has_password {
            return Ok(());
        }
        let hint = format!("OFCTL_{}", key.replace('.', "_").to_ascii_uppercase());
        self.refuse_plaintext(key, uri, &hint)
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

    /// Resolves `value`, the config's `key`: the operator's file, so `${env:...}` reads any
    /// variable. A secret is registered for masking before anything can print it.
    pub fn resolve(&self, key: &str, value: &str, secret: bool) -> Result<String, ConfigError> {
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

    /// The error for `system`'s resources when the config lacks `[section] key`.
    pub fn missing(&self, system: System, section: &'static str, key: &'static str) -> ConfigError {
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

    /// The section `[name]` as `T` with its values unresolved, or `None` when the file has
    /// none. A provider reads its own section so; errors show the line and the key.
    pub fn section<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, ConfigError> {
        let cached = self
            .sections
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned();
        let section = match cached {
            Some(section) => Some(section),
            // A file that does not parse is left to the spanned parse below, for its error.
            None => toml::from_str::<toml::Table>(&self.text)
                .ok()
                .map(|mut table| {
                    let section = table.remove(name);
                    self.sections
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(name.to_string(), section.clone());
                    section
                }),
        };
        match section {
            Some(None) => return Ok(None),
            Some(Some(section)) => {
                if let Ok(t) = section.try_into::<T>() {
                    return Ok(Some(t));
                }
            }
            None => {}
        }
        // The section does not deserialize: parse again with spans, for an error with its line.
        let document = toml::de::DeTable::parse(&self.text).map_err(|e| self.parse_error(e))?;
        let Some(section) = document.get_ref().get(name) else {
            return Ok(None);
        };
        T::deserialize(toml::de::ValueDeserializer::from(section.clone()))
            .map(Some)
            .map_err(|mut e| {
                e.set_input(Some(&self.text));
                self.parse_error(e)
            })
    }

    /// Refuses a top-level key that is neither a generic section nor one of
    /// `provider_sections` (which the registry knows), pointing at its line.
    pub fn check_sections(&self, provider_sections: &[&str]) -> Result<(), ConfigError> {
        let known: Vec<&str> = GENERIC_SECTIONS
            .iter()
            .chain(provider_sections)
            .copied()
            .collect();
        toml::de::Deserializer::parse(&self.text)
            .and_then(|document| document.deserialize_map(KnownKeys(&known)))
            .map_err(|e| self.parse_error(e))
    }

    fn parse_error(&self, error: toml::de::Error) -> ConfigError {
        ConfigError::Parse {
            path: self.path.clone().unwrap_or_default(),
            message: error.to_string(),
        }
    }

    pub fn redis_url(&self) -> Option<Result<String, ConfigError>> {
        let url = self.raw.redis.as_ref()?.url.clone();
        Some(self.resolve("redis.url", &url, false))
    }
}

/// Visits a document's top-level keys and fails on the first one not in the list, with
/// serde's wording; the TOML deserializer adds the key's line.
struct KnownKeys<'a>(&'a [&'a str]);

impl<'de> Visitor<'de> for KnownKeys<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a table")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(KnownKeys(self.0))?.is_some() {
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for KnownKeys<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, key: D) -> Result<(), D::Error> {
        let key = String::deserialize(key)?;
        if self.0.contains(&key.as_str()) {
            return Ok(());
        }
        let expected: Vec<String> = self.0.iter().map(|k| format!("`{k}`")).collect();
        Err(D::Error::custom(format!(
            "unknown field `{key}`, expected one of {}",
            expected.join(", ")
        )))
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
    fn other_sections_are_left_to_their_owners() {
        let text = "tenant = \"acme\"\n[nats]\nurl = \"${env:X}\"\n[typo]\nurl = \"x\"\n";
        let cfg = TargetConfig::parse(text, Path::new("ofctl.toml")).unwrap();
        assert_eq!(cfg.tenant().unwrap(), "acme");
        assert!(cfg.check_sections(&["nats", "typo"]).is_ok());
        let err = cfg.check_sections(&["nats"]).unwrap_err().to_string();
        assert!(
            err.starts_with("ofctl.toml: TOML parse error at line 4, column 2")
                && err.contains("unknown field `typo`, expected one of `tenant`")
                && err.contains("`tls`, `nats`"),
            "{err}"
        );
    }

    #[test]
    fn every_generic_section_is_known() {
        let text = "tenant = \"t\"\nenvironment = \"e\"\n[variables]\n[engine]\n[watch]\n[jobs]\n[api]\n[redis]\nurl = \"redis://127.0.0.1\"\n[redact]\n[manifest]\n[tls]\n";
        let cfg = TargetConfig::parse(text, Path::new("ofctl.toml")).unwrap();
        cfg.check_sections(&[]).unwrap();
    }

    #[test]
    fn a_section_parses_with_the_line_of_its_error() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Nats {
            url: String,
        }
        let cfg =
            TargetConfig::parse("[nats]\nurl = \"${env:U}\"\n", Path::new("ofctl.toml")).unwrap();
        assert_eq!(
            cfg.section::<Nats>("nats").unwrap().unwrap().url,
            "${env:U}"
        );
        assert!(cfg.section::<Nats>("kafka").unwrap().is_none());
        let cfg =
            TargetConfig::parse("[nats]\nurl = \"x\"\nport = 1\n", Path::new("c.toml")).unwrap();
        let err = cfg.section::<Nats>("nats").unwrap_err().to_string();
        assert!(
            err.starts_with("c.toml: TOML parse error at line 3, column 1")
                && err.contains("unknown field `port`, expected `url`"),
            "{err}"
        );
    }
}
