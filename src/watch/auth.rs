//! Who may call `/v1/*`: bearer tokens per tenant (`[api] token`, `[api] tokens`), compared in
//! constant time, with a scope each; the original's unauthenticated API only as an explicit
//! opt-in (`[api] allow_unauthenticated`). Also the input rules every write obeys (JSON only,
//! bounded size) and one audit line per write.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Shared;
use crate::config::{ApiConfig, ApiScope};

/// Largest request body the API reads (the platform's tool registrations are a few KiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Log target of the audit lines, on by default (`OFCTL_LOG` may still turn it off).
pub const AUDIT_TARGET: &str = "ofctl::audit";

/// The caller of a request that passed [`authorize`]: the tenants it may read (every tenant
/// it may write, it may read).
#[derive(Debug, Clone)]
pub struct Principal {
    pub readable: BTreeSet<String>,
}

#[derive(Deserialize)]
struct TenantParam {
    tenant: Option<String>,
}

/// What one tenant's `[api]` says about the bearer token presented (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Access {
    Granted { token_id: String, scope: ApiScope },
    NoTokenConfigured,
    MissingToken,
    WrongToken,
}

fn access(api: &ApiConfig, bearer: Option<&str>) -> Access {
    if let Some(presented) = bearer {
        // Hashing first makes the comparison independent of both lengths.
        let presented = Sha256::digest(presented.as_bytes());
        for token in &api.tokens {
            let expected = Sha256::digest(token.secret.as_bytes());
            if bool::from(presented.ct_eq(&expected)) {
                return Access::Granted {
                    token_id: token.id.clone(),
                    scope: token.scope,
                };
            }
        }
    }
    if api.allow_unauthenticated {
        return Access::Granted {
            token_id: "anonymous".into(),
            scope: ApiScope::Write,
        };
    }
    match (api.tokens.is_empty(), bearer) {
        (true, _) => Access::NoTokenConfigured,
        (false, None) => Access::MissingToken,
        (false, Some(_)) => Access::WrongToken,
    }
}

fn bearer(request: &Request) -> Option<String> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = json!({"status": "error", "message": message.into()});
    (status, Json(body)).into_response()
}

fn unauthorized(access: &Access) -> Response {
    let (message, challenge) = match access {
        Access::WrongToken => (
            "the bearer token is not valid for this tenant",
            "Bearer realm=\"ofctl\", error=\"invalid_token\"",
        ),
        _ => (
            "authentication required: send `Authorization: Bearer <token>`",
            "Bearer realm=\"ofctl\"",
        ),
    };
    let mut response = error(StatusCode::UNAUTHORIZED, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

fn not_configured(tenant: &str) -> Response {
    error(
        StatusCode::FORBIDDEN,
        format!(
            "the API of tenant `{tenant}` has no token configured, so /v1/* is closed: set `[api] token = \"${{env:OFCTL_API_TOKEN}}\"` in its ofctl.toml and OFCTL_API_TOKEN in the environment, or opt in to the unauthenticated API with `[api] allow_unauthenticated = true` (only behind a NetworkPolicy)"
        ),
    )
}

/// The outcome of [`decide`]: who the caller is (as far as known, for the audit line) and
/// whether the request goes on.
struct Decision {
    token_id: Option<String>,
    /// The tenant the request addresses, when there is exactly one.
    tenant: Option<String>,
    verdict: Result<Principal, Response>,
}

/// Decides a request from each tenant's answer: the tenant it names (or the only one), else
/// every tenant (`/v1/drift`, or a request the handler will reject as ambiguous).
fn decide(per_tenant: &[(String, Access)], named: Option<&str>, write: bool) -> Decision {
    let granted = |a: &Access| matches!(a, Access::Granted { .. });
    let target: Vec<&(String, Access)> = match named {
        Some(id) => match per_tenant.iter().find(|(t, _)| t == id) {
            Some(entry) => vec![entry],
            // An unknown tenant is only named to callers who hold some valid access, so the
            // tenant list in the handler's 404 is never shown to strangers.
            None => per_tenant.iter().filter(|(_, a)| granted(a)).collect(),
        },
        None => per_tenant.iter().collect(),
    };
    let tenant = match (named, target.as_slice()) {
        (Some(id), _) => Some(id.to_string()),
        (None, [(only, _)]) => Some(only.clone()),
        _ => None,
    };
    let token_id = target.iter().find_map(|(_, a)| match a {
        Access::Granted { token_id, .. } => Some(token_id.clone()),
        _ => None,
    });
    let refuse = |response: Response| Decision {
        token_id: token_id.clone(),
        tenant: tenant.clone(),
        verdict: Err(response),
    };
    let readable: BTreeSet<String> = target
        .iter()
        .filter(|(_, a)| granted(a))
        .map(|(t, _)| t.clone())
        .collect();
    if readable.is_empty() {
        return refuse(match target.first() {
            Some((first, _)) if target.iter().all(|(_, a)| *a == Access::NoTokenConfigured) => {
                not_configured(first)
            }
            Some((_, a)) => unauthorized(a),
            None => unauthorized(&Access::MissingToken),
        });
    }
    if write && target.len() == 1 {
        if let Access::Granted {
            token_id: id,
            scope,
        } = &target[0].1
        {
            if *scope < ApiScope::Write {
                return refuse(error(
                    StatusCode::FORBIDDEN,
                    format!(
                        "token `{id}` has the read scope for tenant `{}`; writes need a token with `scope = \"write\"`",
                        target[0].0
                    ),
                ));
            }
        }
    }
    Decision {
        token_id: token_id.clone(),
        tenant: tenant.clone(),
        verdict: Ok(Principal { readable }),
    }
}

/// Middleware for `/v1/*`: authentication, then the input rules, then the handler; writes
/// leave one audit line whatever their outcome.
pub async fn authorize(
    State(shared): State<Arc<Shared>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |c| c.0.to_string());
    let method = request.method().clone();
    let write = !matches!(method, Method::GET | Method::HEAD);
    let path = request.uri().path().to_string();
    let named = Query::<TenantParam>::try_from_uri(request.uri())
        .ok()
        .and_then(|q| q.0.tenant);
    let presented = bearer(&request);
    let per_tenant: Vec<(String, Access)> = {
        let handles = shared.handles.read().await;
        handles
            .iter()
            .map(|(id, handle)| {
                let access = match handle.view().config.api() {
                    Ok(api) => access(&api, presented.as_deref()),
                    // Checked at start; a later config that does not resolve closes the API.
                    Err(_) => Access::NoTokenConfigured,
                };
                (id.clone(), access)
            })
            .collect()
    };
    let decision = decide(&per_tenant, named.as_deref(), write);
    let response = match decision.verdict {
        Err(refused) => refused,
        Ok(principal) => match input_refusal(&request, write) {
            Some(refused) => refused,
            None => {
                request.extensions_mut().insert(principal);
                next.run(request).await
            }
        },
    };
    if write {
        tracing::info!(
            target: AUDIT_TARGET,
            peer = %peer,
            // `token_id`, not `token`: a field named like a secret is masked in every log.
            token_id = %decision.token_id.as_deref().unwrap_or("-"),
            tenant = %decision.tenant.as_deref().unwrap_or("-"),
            "audit: {method} {path} -> {}",
            response.status().as_u16()
        );
    }
    response
}

/// Writes carry JSON of bounded size (the body limit layer also stops a body sent without a
/// length, as it streams).
fn input_refusal(request: &Request, write: bool) -> Option<Response> {
    if !write {
        return None;
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Some(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "the body must be JSON sent with `Content-Type: application/json` (got `{}`)",
                if content_type.is_empty() {
                    "none"
                } else {
                    content_type
                }
            ),
        ));
    }
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    length.is_some_and(|n| n > MAX_BODY_BYTES).then(|| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        )
    })
}

/// Longest release tag `POST /v1/cluster-registrations` accepts.
const MAX_TAG_LEN: usize = 128;

/// A release tag flows into every agent's download link, so it must look like one: letters,
/// digits, `.`, `-`, `_`, `+`, starting with a letter or digit, no `..`, bounded length.
pub fn check_release_tag(tag: &str) -> Result<(), String> {
    let well_formed = !tag.is_empty()
        && tag.len() <= MAX_TAG_LEN
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric())
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
        && !tag.contains("..");
    if well_formed {
        Ok(())
    } else {
        Err(format!(
            "imageTagVersion must be a release tag such as 1.4.2 or v1.4.2-rc.1: at most {MAX_TAG_LEN} letters, digits, `.`, `-`, `_` or `+`, starting with a letter or digit, without `..`"
        ))
    }
}

/// Connectors created through the API must be of a class `[api] connector_classes` allows
/// (default: the Debezium families); `connectors` are (name, spec) pairs.
pub fn check_connector_classes<'a>(
    api: &ApiConfig,
    connectors: impl IntoIterator<Item = (&'a str, &'a serde_json::Value)>,
) -> Result<(), String> {
    for (name, spec) in connectors {
        let class = spec
            .pointer("/config/connector.class")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        if !api.allows_connector_class(class) {
            return Err(format!(
                "connector `{name}`: connector.class `{class}` is not allowed through the API (allowed: {}); add it to `[api] connector_classes` if it should be",
                api.connector_classes.join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiToken;

    fn api(tokens: &[(&str, &str, ApiScope)], open: bool) -> ApiConfig {
        ApiConfig {
            listen: None,
            management_listen: None,
            tokens: tokens
                .iter()
                .map(|(id, secret, scope)| ApiToken {
                    id: id.to_string(),
                    secret: secret.to_string(),
                    scope: *scope,
                })
                .collect(),
            allow_unauthenticated: open,
            connector_classes: Vec::new(),
        }
    }

    const READER: &str = "reader-token-0123456789";
    const WRITER: &str = "writer-token-0123456789";

    #[test]
    fn release_tags_are_bounded_and_plain() {
        for ok in ["1.4.2", "v1.4.2-rc.1", "2025.10.01_build+7"] {
            assert_eq!(check_release_tag(ok), Ok(()), "{ok}");
        }
        let long = "1".repeat(MAX_TAG_LEN + 1);
        for bad in [
            "",
            "../../etc",
            "1.0/evil",
            "1.0 beta",
            ".1",
            "1..2",
            long.as_str(),
            "v1%2F",
        ] {
            assert!(check_release_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn connector_classes_match_exactly_or_by_prefix() {
        let mut a = api(&[], false);
        a.connector_classes = vec![
            crate::config::DEBEZIUM_CONNECTORS.into(),
            "com.example.Sink".into(),
        ];
        let spec = |class: &str| serde_json::json!({"config": {"connector.class": class}});
        let pg = spec("io.debezium.connector.postgresql.PostgresConnector");
        let sink = spec("com.example.Sink");
        let file = spec("org.apache.kafka.connect.file.FileStreamSourceConnector");
        let bare = spec("io.debezium.connector.");
        assert!(check_connector_classes(&a, [("a", &pg), ("b", &sink)]).is_ok());
        let err = check_connector_classes(&a, [("a", &pg), ("f", &file)]).unwrap_err();
        assert!(
            err.contains("connector `f`") && err.contains("FileStream"),
            "{err}"
        );
        assert!(check_connector_classes(&a, [("x", &bare)]).is_err());
        assert!(check_connector_classes(&a, [("n", &serde_json::json!({}))]).is_err());
    }

    #[test]
    fn tokens_grant_their_scope_and_nothing_else() {
        let a = api(
            &[
                ("ci", READER, ApiScope::Read),
                ("jobs", WRITER, ApiScope::Write),
            ],
            false,
        );
        assert_eq!(
            access(&a, Some(WRITER)),
            Access::Granted {
                token_id: "jobs".into(),
                scope: ApiScope::Write
            }
        );
        assert_eq!(
            access(&a, Some("writer-token-01234567890")),
            Access::WrongToken
        );
        assert_eq!(access(&a, None), Access::MissingToken);
        assert_eq!(access(&api(&[], false), None), Access::NoTokenConfigured);
        assert!(matches!(
            access(&api(&[], true), None),
            Access::Granted { token_id, .. } if token_id == "anonymous"
        ));
    }

    #[test]
    fn a_read_token_cannot_write_and_strangers_learn_no_tenant_names() {
        let tenants = vec![
            (
                "a".to_string(),
                Access::Granted {
                    token_id: "ci".into(),
                    scope: ApiScope::Read,
                },
            ),
            ("b".to_string(), Access::WrongToken),
        ];
        let status = |d: Decision| d.verdict.map_err(|e| e.status()).map(|_| ());
        assert_eq!(status(decide(&tenants, Some("a"), false)), Ok(()));
        assert_eq!(
            status(decide(&tenants, Some("a"), true)),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            status(decide(&tenants, Some("b"), false)),
            Err(StatusCode::UNAUTHORIZED)
        );
        let all = decide(&tenants, None, false).verdict.unwrap();
        assert_eq!(all.readable, BTreeSet::from(["a".to_string()]));
        // A refused write still names its token for the audit line.
        assert_eq!(
            decide(&tenants, Some("a"), true).token_id.as_deref(),
            Some("ci")
        );
        let stranger = vec![("a".to_string(), Access::MissingToken)];
        assert_eq!(
            status(decide(&stranger, Some("nope"), false)),
            Err(StatusCode::UNAUTHORIZED)
        );
        let closed = vec![("a".to_string(), Access::NoTokenConfigured)];
        assert_eq!(
            status(decide(&closed, None, true)),
            Err(StatusCode::FORBIDDEN)
        );
    }
}
