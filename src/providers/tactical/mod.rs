//! Tactical RMM scripts, through the REST API at the server root (`/scripts/…`, apis.md §3).
//!
//! Scripts have no unique key but their numeric id, which the manifest cannot know and which
//! `POST` does not even return; ofctl addresses a script by its exact `name`, the way the
//! management service did (openframe.md §13), and refuses to guess when a name is ambiguous.
//! Community (`builtin`) scripts belong to TRMM and are never written.

mod normalize;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use crate::config::{ConfigError, TargetConfig};
use crate::kind::{Compare, KindInfo, System};
use crate::provider::http::{HttpClient, Response, Tls};
use crate::provider::section::{self, Section, SectionInfo};
use crate::provider::{
    OpAction, Operation, Provider, ProviderError, ReadPass, ReadScope, RequestCount,
};
use crate::resource::Observed;

use crate::provider::owner::Owner;
pub use normalize::{normalize_desired, normalize_live};

/// `[tactical]` of the target config. Where it lacks the URL or the key, the platform's tool
/// document may give them (`registry::build_tactical`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TacticalSection {
    url: String,
    api_key: Option<String>,
}

/// `[tactical] url`: the server root of the REST API.
pub const SECTION: SectionInfo = SectionInfo {
    system: System::Tactical,
    name: "tactical",
    endpoint_key: "url",
    check: |config| {
        let Some(tactical) = Section::<TacticalSection>::read(config, &SECTION)? else {
            return Ok(());
        };
        match &tactical.fields.api_key {
            Some(key) => tactical.refuse_plaintext("api_key", key, "OFCTL_TACTICAL_API_KEY"),
            None => Ok(()),
        }
    },
    endpoint: |config| section::endpoint(config, &SECTION, |s: &TacticalSection| &s.url),
};

/// `[tactical] api_key`, resolved (a secret); `None` when the file has none.
pub fn api_key(config: &TargetConfig) -> Result<Option<String>, ConfigError> {
    let Some(tactical) = Section::<TacticalSection>::read(config, &SECTION)? else {
        return Ok(None);
    };
    let key = tactical.fields.api_key.as_deref();
    key.map(|key| tactical.resolve_secret("api_key", key))
        .transpose()
}

pub static KINDS: [KindInfo; 1] = [KindInfo {
    kind: "TacticalScript",
    system: System::Tactical,
    // Normalization fills every default on both sides, so every field counts.
    compare: Compare::Exact,
    // Every script field can be changed in place with a partial PUT.
    field_rules: &[],
    // env_vars exist so that secrets reach a script without showing in its arguments
    // (TRMM 0.15); their values are treated as secret in plans.
    sensitive: &["/env_vars"],
    // A script body is data for the agent's shell: PowerShell's `${env:X}` must stay verbatim.
    interpolate_spec_file: false,
}];

/// The list query: community scripts so a declared builtin name is caught, hidden ones so a
/// managed script someone hid is found rather than created twice (apis.md §3 [EMU]).
const LIST_PATH: &str = "/scripts/?showCommunityScripts=true&showHiddenScripts=true";
/// How old the script list may be when a read uses it (see `TacticalProvider::scripts`): a
/// change made elsewhere shows up this much later, next to a watch interval of a minute.
const LIST_MAX_AGE: Duration = Duration::from_secs(5);

/// What the last read learned about a live script that apply needs and the spec leaves out.
#[derive(Debug, Clone, Copy)]
struct Known {
    id: u64,
    managed: bool,
}

pub struct TacticalProvider {
    http: HttpClient,
    /// name → id and ownership, from the last read (apply always follows a read).
    known: Mutex<HashMap<String, Known>>,
    /// Named in each script's description marker: only this tenant's scripts are pruned.
    owner: Owner,
    /// The script list, shared by every provider with this URL and API key: TRMM lists all
    /// scripts (no filter by name), so tenants sharing one would each read every tenant's.
    scripts: Arc<crate::shared::Snapshot<ScriptList>>,
}

/// One row of `GET /scripts/`, as far as reads need it.
#[derive(Debug)]
struct Listed {
    id: u64,
    builtin: bool,
}

/// `GET /scripts/` by name (names are not unique in TRMM), built once per fetch so that each
/// tenant's read looks its names up instead of walking every tenant's scripts.
type ScriptList = BTreeMap<String, Vec<Listed>>;

impl TacticalProvider {
    /// A provider sending at most `concurrency` requests at a time.
    pub fn new(
        url: &str,
        api_key: &str,
        concurrency: usize,
        owner: Owner,
        tls: &Tls,
    ) -> Result<Self, ProviderError> {
        let list_key = format!(
            "tactical#{url}#{}",
            crate::json::digest(&Value::String(api_key.to_string()))
        );
        Ok(Self {
            scripts: crate::shared::default(&list_key),
            http: HttpClient::new(
                System::Tactical,
                url,
                &[("x-api-key", api_key.to_string())],
                concurrency,
                tls,
            )?,
            owner,
            known: Mutex::new(HashMap::new()),
        })
    }

    /// Sends one request and maps the statuses every script endpoint shares.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response, ProviderError> {
        let response = self.http.send(method.clone(), path, body).await?;
        authorized(&method, path, response)
    }

    /// The script list as read for any tenant on this TRMM less than [`LIST_MAX_AGE`] ago.
    async fn scripts(&self) -> Result<Arc<ScriptList>, ProviderError> {
        self.scripts.get(LIST_MAX_AGE, || self.list()).await
    }

    /// The script list as it is now.
    async fn list(&self) -> Result<ScriptList, ProviderError> {
        let response = self.call(Method::GET, LIST_PATH, None).await?;
        if !response.is_success() {
            return Err(self.http.status_error(&Method::GET, LIST_PATH, &response));
        }
        let rows = response.body.as_array().ok_or_else(|| {
            ProviderError::permanent(format!(
                "tactical GET {LIST_PATH}: expected a JSON array, got {}",
                response.body
            ))
        })?;
        let mut list = ScriptList::new();
        for row in rows {
            let (Some(id), Some(name)) = (
                row.get("id").and_then(Value::as_u64),
                row.get("name").and_then(Value::as_str),
            ) else {
                continue;
            };
            list.entry(name.to_string()).or_default().push(Listed {
                id,
                builtin: row.get("script_type").and_then(Value::as_str) == Some("builtin"),
            });
        }
        Ok(list)
    }

    /// The full script, with its body; `None` when it was deleted since the list was read.
    /// Fetched once in `pass` (see [`HttpClient::get_in`]).
    async fn detail(&self, pass: &ReadPass, id: u64) -> Result<Arc<Option<Value>>, ProviderError> {
        let path = format!("/scripts/{id}/");
        self.http
            .get_in(pass, &path, |response| {
                let response = authorized(&Method::GET, &path, response)?;
                match response.status {
                    200 => Ok(Some(response.body)),
                    404 => Ok(None),
                    _ => Err(self.http.status_error(&Method::GET, &path, &response)),
                }
            })
            .await
    }

    fn known(&self, name: &str) -> Result<Known, ProviderError> {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
            .ok_or_else(|| {
                ProviderError::permanent(format!(
                    "tactical: script `{name}` was not found when live state was read"
                ))
            })
    }

    /// Whether the script `desired` describes exists already, by a fresh list (not the shared
    /// one, which may be 5 s old). Names are not unique in TRMM and the POST returns no id
    /// (apis.md §3), so a create must look first, or it would add a second script: one an
    /// earlier attempt made whose answer never arrived (connection dropped, timeout, a 5xx after
    /// Django committed), or one another replica made for the same tenant since the shared list
    /// was read. A script of that name that differs is an error: ofctl cannot tell it from
    /// someone else's.
    async fn created_earlier(&self, name: &str, desired: &Value) -> Result<bool, ProviderError> {
        let listed = self.list().await?;
        let Some(found) = resolve_declared(&listed, name)? else {
            return Ok(false);
        };
        let script = self.detail(&ReadPass::default(), found.id).await?;
        let Some(script) = Option::as_ref(&script) else {
            return Ok(false);
        };
        if normalize_live(script).0 == *desired {
            return Ok(true);
        }
        Err(ProviderError::permanent(format!(
            "TacticalScript/{name}: script id {} has this name now (made since live state was read: by an earlier attempt whose answer was lost, another replica or a person) but differs from the manifest; re-run plan",
            found.id
        )))
    }

    /// Sends a write and accepts TRMM's 200 with a JSON string (`"<name> was added!"`).
    async fn write(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(), ProviderError> {
        let response = self.call(method.clone(), path, body).await;
        // Whatever the answer, the write may have changed the list: the next read fetches it.
        self.scripts.invalidate().await;
        let response = response?;
        if response.is_success() {
            Ok(())
        } else {
            Err(self.http.status_error(&method, path, &response))
        }
    }
}

/// The script a declared name means: it must resolve to exactly one userdefined script.
fn resolve_declared<'a>(
    list: &'a ScriptList,
    name: &str,
) -> Result<Option<&'a Listed>, ProviderError> {
    let rows = list.get(name).map(Vec::as_slice).unwrap_or(&[]);
    if let Some(builtin) = rows.iter().find(|r| r.builtin) {
        return Err(ProviderError::permanent(format!(
            "TacticalScript/{name}: the name belongs to the community (builtin) script id {}; ofctl never modifies community scripts, so give the manifest's script another name",
            builtin.id
        )));
    }
    match rows {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        many => Err(ProviderError::permanent(format!(
            "TacticalScript/{name}: {} scripts have this name (ids {}); ofctl cannot tell which one the manifest means — delete or rename the extra ones in Tactical RMM",
            many.len(),
            many.iter()
                .map(|r| r.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The statuses every script endpoint shares: a rejected key or a missing permission, which no
/// retry mends.
fn authorized(method: &Method, path: &str, response: Response) -> Result<Response, ProviderError> {
    match response.status {
        401 => Err(ProviderError::permanent(format!(
            "tactical {method} {path}: the API key was rejected (401 {}); check `[tactical] api_key` in the target config",
            response.message()
        ))),
        403 => Err(ProviderError::permanent(format!(
            "tactical {method} {path}: the API key's user lacks a permission (403 {}); reading needs `can_list_scripts`, writing `can_manage_scripts`",
            response.message()
        ))),
        _ => Ok(response),
    }
}

#[async_trait]
impl Provider for TacticalProvider {
    fn system(&self) -> System {
        System::Tactical
    }

    /// One list request (shared for a few seconds with every tenant on this TRMM), then one detail
    /// request per declared script that exists (the list has no `script_body`); with
    /// `scope.all` (`--prune`, export) one per userdefined script.
    async fn read(
        &self,
        _kind: &str,
        scope: ReadScope<'_>,
    ) -> Result<Vec<Observed>, ProviderError> {
        let by_name = self.scripts().await?;
        let mut wanted = Vec::new();
        for name in scope.names {
            if let Some(l) = resolve_declared(&by_name, name)? {
                wanted.push((name.to_string(), l.id));
            }
        }
        if scope.all {
            // Undeclared userdefined scripts with a unique name, complete with their bodies
            // (export writes them out, prune fingerprints them). A name shared by several
            // cannot be addressed, so those are left alone (never pruned).
            for (name, rows) in by_name.iter() {
                if let [l] = rows.as_slice() {
                    if !l.builtin && !scope.names.iter().any(|n| n == name) {
                        wanted.push((name.to_string(), l.id));
                    }
                }
            }
        }
        let details: Vec<(String, u64, Arc<Option<Value>>)> = self
            .http
            .read_each(wanted.into_iter().map(|(name, id)| async move {
                Ok((name, id, self.detail(scope.pass, id).await?))
            }))
            .await?;

        let mut known = HashMap::new();
        let mut observed = Vec::new();
        for (name, id, script) in details {
            let Some(script) = Option::as_ref(&script) else {
                continue;
            };
            let (spec, marker) = normalize_live(script);
            let (managed, notes) = self.owner.observe(marker.as_deref());
            known.insert(name.clone(), Known { id, managed });
            observed.push(Observed {
                name,
                spec,
                managed,
                notes,
            });
        }
        *self.known.lock().unwrap_or_else(|e| e.into_inner()) = known;
        Ok(observed)
    }

    fn normalize_desired(&self, _kind: &str, name: &str, spec: &Value) -> Result<Value, String> {
        // TRMM trims names when it stores them, so such a name would never be found again.
        if name.trim() != name {
            return Err(format!(
                "Tactical RMM trims script names, so `{name}` would be stored as `{}`; remove the surrounding whitespace",
                name.trim()
            ));
        }
        Ok(normalize_desired(spec))
    }

    async fn apply(&self, op: Operation<'_>) -> Result<(), ProviderError> {
        let desired = op.desired.cloned().unwrap_or(Value::Null);
        match op.action {
            OpAction::Create => {
                if self.created_earlier(op.name, &desired).await? {
                    return Ok(());
                }
                let body = Value::Object(normalize::create_body(
                    op.name,
                    &desired,
                    self.owner.value(),
                ));
                self.write(Method::POST, "/scripts/", Some(&body)).await
            }
            OpAction::Update => {
                let known = self.known(op.name)?;
                let live = op.live.cloned().unwrap_or(Value::Null);
                let body = Value::Object(normalize::update_body(
                    &desired,
                    &live,
                    known.managed,
                    self.owner.value(),
                ));
                self.write(Method::PUT, &format!("/scripts/{}/", known.id), Some(&body))
                    .await
            }
            OpAction::Delete => {
                let known = self.known(op.name)?;
                let path = format!("/scripts/{}/", known.id);
                let response = self.call(Method::DELETE, &path, None).await?;
                // Already gone is what a delete wants (a retried delete may see it).
                if response.is_success() || response.status == 404 {
                    Ok(())
                } else {
                    Err(self.http.status_error(&Method::DELETE, &path, &response))
                }
            }
        }
    }

    fn requests(&self) -> RequestCount {
        self.http.requests()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list holding `rows` (id, builtin) under the name `S`.
    fn listed(rows: &[(u64, bool)]) -> ScriptList {
        let rows = rows
            .iter()
            .map(|&(id, builtin)| Listed { id, builtin })
            .collect();
        ScriptList::from([("S".to_string(), rows)])
    }

    #[test]
    fn a_declared_name_must_be_one_userdefined_script() {
        let (a, b, c) = ((7, false), (9, false), (2, true));
        assert!(resolve_declared(&ScriptList::new(), "S").unwrap().is_none());
        assert!(resolve_declared(&listed(&[]), "S").unwrap().is_none());
        assert_eq!(resolve_declared(&listed(&[a]), "S").unwrap().unwrap().id, 7);

        let err = resolve_declared(&listed(&[a, b]), "S").unwrap_err();
        assert!(!err.transient);
        assert!(err.message.contains("ids 7, 9"), "{}", err.message);

        let err = resolve_declared(&listed(&[a, c]), "S").unwrap_err();
        assert!(
            err.message.contains("community (builtin) script id 2"),
            "{}",
            err.message
        );
    }
}
