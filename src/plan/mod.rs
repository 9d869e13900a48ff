//! Plans: the ordered, classified changes that take live state to the manifest.

pub mod diff;
pub mod render;
pub mod target;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::json::{digest, values_equal};
use crate::kind::{Effect, Finding, KindInfo, Trigger};
use crate::resource::{annotations, Address, Resource, Span};
pub use diff::{DiffOp, FieldDiff};

/// Version of the saved-plan and `--format json` document (schema/plan.schema.json).
pub const FORMAT_VERSION: &str = "1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Replace,
    Delete,
    Noop,
}

impl Action {
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
            Action::Noop => " ",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
            Action::Noop => "noop",
        }
    }
}

/// What a change can cost, worst first when reports sort by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    /// Deletes data or an object.
    Destructive,
    /// Interrupts something running (e.g. a connector restarts on a config write).
    Restarts,
    Safe,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub address: Address,
    pub action: Action,
    pub risk: Risk,
    /// Why the change is classified this way (e.g. "storage cannot change in place").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// Platform rules that shaped the desired state (e.g. "release agent keeps version 1.2"),
    /// and remarks on the live object that are not compared (e.g. "task 0 is FAILED").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Set when the change is refused, with how to allow it. A plan with a refused change is
    /// not applied at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
    /// The target's force flag will be sent (an incompatible change the user allowed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diff: Vec<FieldDiff>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Address>,
    /// Hash of the desired spec this change was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_digest: Option<String>,
    /// Hash of the live object as read when planning; `None` when it did not exist.
    #[serde(default)]
    pub live_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Span>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
    pub noop: usize,
    pub blocked: usize,
}

impl Summary {
    pub fn of(changes: &[Change]) -> Self {
        let mut s = Summary::default();
        for c in changes {
            match c.action {
                Action::Create => s.create += 1,
                Action::Update => s.update += 1,
                Action::Replace => s.replace += 1,
                Action::Delete => s.delete += 1,
                Action::Noop => s.noop += 1,
            }
            if c.blocked.is_some() {
                s.blocked += 1;
            }
        }
        s
    }

    pub fn pending(&self) -> usize {
        self.create + self.update + self.replace + self.delete
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanOptions {
    /// Delete managed objects the manifest no longer declares.
    pub prune: bool,
    /// Allow changes that delete and recreate objects.
    pub allow_replace: bool,
    /// Prune a system even when the manifest declares nothing for it (`--allow-empty`).
    #[serde(default)]
    pub allow_empty: bool,
    /// Refuse a prune of more objects than this (`--max-deletes`, `[watch] max_deletes`).
    #[serde(default)]
    pub max_deletes: Option<usize>,
    /// `--target`: plan only these resources and what they depend on (empty: everything).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Address>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: String,
    pub created_at: String,
    pub manifest_dir: PathBuf,
    #[serde(default)]
    pub config_path: Option<PathBuf>,
    pub options: PlanOptions,
    pub changes: Vec<Change>,
    pub summary: Summary,
}

/// Why a saved plan file (`ofctl plan -o FILE`) cannot be applied. Each names the file and
/// how to get a usable one.
#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    #[error("cannot read plan file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}:{line}:{column}: is not an ofctl plan file: {message}; save a plan with `ofctl plan -o FILE`", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{} has plan format {found}, this ofctl reads format {FORMAT_VERSION}; re-run `ofctl plan -o FILE` with this ofctl", path.display())]
    Version { path: PathBuf, found: String },
    #[error("{}: the summary does not match the changes, so the file was edited after it was saved; re-run `ofctl plan -o FILE`", path.display())]
    Edited { path: PathBuf },
}

impl Plan {
    /// Reads a plan saved by `ofctl plan -o FILE`.
    pub fn read_file(path: &Path) -> Result<Plan, PlanFileError> {
        let text = std::fs::read_to_string(path).map_err(|error| PlanFileError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Plan::from_saved(path, &text)
    }

    /// Parses the text of a saved plan; `path` is only named in errors.
    pub fn from_saved(path: &Path, text: &str) -> Result<Plan, PlanFileError> {
        let invalid = |e: serde_json::Error| {
            let message = e.to_string();
            let position = format!(" at line {} column {}", e.line(), e.column());
            PlanFileError::Invalid {
                path: path.to_path_buf(),
                line: e.line().max(1),
                column: e.column().max(1),
                message: message
                    .strip_suffix(&position)
                    .unwrap_or(&message)
                    .to_string(),
            }
        };
        // The version first: another format's fields would only produce a confusing error.
        let value: Value = serde_json::from_str(text).map_err(invalid)?;
        if let Some(found) = value.get("format_version") {
            if found.as_str() != Some(FORMAT_VERSION) {
                return Err(PlanFileError::Version {
                    path: path.to_path_buf(),
                    found: found
                        .as_str()
                        .map_or_else(|| found.to_string(), str::to_string),
                });
            }
        }
        // Parsed from the text again (not from `value`) so errors keep their line and column.
        let plan: Plan = serde_json::from_str(text).map_err(invalid)?;
        // Apply trusts the summary (e.g. "nothing pending"), so it must describe the changes.
        if plan.summary != Summary::of(&plan.changes) {
            return Err(PlanFileError::Edited {
                path: path.to_path_buf(),
            });
        }
        Ok(plan)
    }

    pub fn has_blocked(&self) -> bool {
        self.changes.iter().any(|c| c.blocked.is_some())
    }

    pub fn pending(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.action != Action::Noop)
    }
}

/// Does `rule` fire for this (before, after) pair?
fn fires(trigger: Trigger, before: Option<&Value>, after: Option<&Value>) -> bool {
    let differs = match (before, after) {
        (Some(b), Some(a)) => !values_equal(b, a),
        (None, None) => false,
        _ => true,
    };
    match trigger {
        Trigger::AnyChange => differs,
        Trigger::ToOrFrom(v) => {
            differs
                && (before.and_then(Value::as_str) == Some(v)
                    || after.and_then(Value::as_str) == Some(v))
        }
        Trigger::TrueToFalse => {
            before == Some(&Value::Bool(true)) && after != Some(&Value::Bool(true))
        }
        Trigger::SetOrChanged => differs && after.is_some(),
    }
}

/// How a plan digests specs, so that a saved plan lets nobody test a guess of a secret.
///
/// With the operator's key (`OFCTL_PLAN_KEY`), a digest is an HMAC-SHA256 of the whole spec:
/// a changed secret makes a saved plan stale, and without the key nothing can be checked
/// against it. Without a key, a digest is a plain hash of the spec with every secret value
/// masked (values at secret keys, URL passwords, registered secrets): a plan file then shows
/// nothing about secrets, and a secret that changed alone does not make a saved plan stale.
pub struct Digests {
    key: Option<Vec<u8>>,
}

impl Digests {
    /// Keyed when `key` is given and not empty.
    pub fn new(key: Option<Vec<u8>>) -> Self {
        Self {
            key: key.filter(|k| !k.is_empty()),
        }
    }

    /// The digest of a desired or live `spec` of a kind.
    pub fn of(&self, spec: &Value, info: &KindInfo) -> String {
        if let Some(key) = &self.key {
            return crate::json::keyed_digest(spec, key);
        }
        let mut masked = spec.clone();
        crate::path::for_each_leaf(&mut masked, &mut |pointer, leaf| {
            if leaf.is_null() {
                return;
            }
            if info.is_sensitive(pointer) {
                *leaf = Value::String(crate::redact::MASK.to_string());
            } else if let Value::String(s) = leaf {
                if let std::borrow::Cow::Owned(m) = crate::redact::redact(s) {
                    *s = m;
                }
            }
        });
        digest(&masked)
    }
}

/// Inputs for classifying one declared resource.
pub struct Declared<'a> {
    /// `None` for a plan applied at once from the same observation and never saved: its
    /// digests would serve no staleness check.
    pub digests: Option<&'a Digests>,
    pub resource: &'a Resource,
    pub info: &'a KindInfo,
    pub desired: &'a Value,
    pub live: Option<&'a Value>,
    pub findings: Vec<Finding>,
    pub notes: Vec<String>,
    pub depends_on: Vec<Address>,
}

/// Classifies a declared resource against its live object.
pub fn classify(d: Declared<'_>, options: &PlanOptions) -> Change {
    let resource = d.resource;
    let mut change = Change {
        address: resource.address.clone(),
        action: Action::Noop,
        risk: Risk::Safe,
        reasons: Vec::new(),
        notes: d.notes,
        blocked: None,
        force: false,
        diff: Vec::new(),
        depends_on: d.depends_on,
        desired_digest: d.digests.map(|digests| digests.of(d.desired, d.info)),
        live_fingerprint: d
            .digests
            .zip(d.live)
            .map(|(digests, live)| digests.of(live, d.info)),
        source: Some(resource.source.clone()),
    };
    let Some(live) = d.live else {
        change.action = Action::Create;
        change.diff = diff::diff(d.desired, &Value::Object(Default::default()), d.info);
        return change;
    };
    change.diff = diff::diff(d.desired, live, d.info);
    if change.diff.is_empty() {
        return change;
    }
    show_written_defaults(&mut change.diff, &resource.spec);
    let mut replace = Vec::new();
    let mut block = Vec::new();
    let mut restarts = Vec::new();
    let mut risky = Vec::new();
    for rule in d.info.field_rules {
        let (before, after) = diff::sides(d.desired, live, rule.path);
        if fires(rule.trigger, before, after) {
            let reason = format!("{}: {}", crate::path::display(rule.path), rule.reason);
            match rule.effect {
                Effect::Replace => replace.push(reason),
                Effect::Block => block.push(reason),
                Effect::Restarts => restarts.push(reason),
                Effect::DataRisk => risky.push(reason),
            }
        }
    }
    for f in d.findings {
        match f.effect {
            Effect::Replace => replace.push(f.reason),
            Effect::Block => block.push(f.reason),
            Effect::Restarts => restarts.push(f.reason),
            Effect::DataRisk => risky.push(f.reason),
        }
    }
    if !replace.is_empty() {
        change.action = Action::Replace;
        change.risk = Risk::Destructive;
        change.reasons = replace;
        let allowed =
            options.allow_replace || resource.annotation_is_true(annotations::ALLOW_REPLACE);
        if !allowed {
            change.blocked = Some(format!(
                "replacing {} deletes it and its data; re-run with --allow-replace, or annotate it `{}: \"true\"`",
                resource.address,
                annotations::ALLOW_REPLACE
            ));
        }
    } else {
        change.action = Action::Update;
        if !restarts.is_empty() {
            change.risk = Risk::Restarts;
            change.reasons = restarts;
        }
        if !risky.is_empty() {
            // In place, but data is at risk: approved exactly as a replace is.
            change.risk = Risk::Destructive;
            change.reasons.splice(0..0, risky);
            let approved =
                options.allow_replace || resource.annotation_is_true(annotations::ALLOW_REPLACE);
            if !approved {
                change.blocked = Some(format!(
                    "this in-place update of {} puts data at risk (see the reasons); approve it with --allow-replace, or annotate it `{}: \"true\"`",
                    resource.address,
                    annotations::ALLOW_REPLACE
                ));
            }
        }
        if !block.is_empty() {
            change.reasons.extend(block);
            if resource.annotation_is_true(annotations::FORCE) {
                change.force = true;
                change.risk = Risk::Destructive;
            } else {
                change.blocked = Some(format!(
                    "the target rejects this change as incompatible; to force it anyway annotate {} `{}: \"true\"`",
                    resource.address,
                    annotations::FORCE
                ));
            }
        }
    }
    change
}

/// Normalization drops values equal to the server default, so setting a field back to its
/// default diffs as a removal; when the manifest spells the value out, show it as the target.
fn show_written_defaults(diffs: &mut [FieldDiff], written: &Value) {
    for d in diffs
        .iter_mut()
        .filter(|d| d.op == DiffOp::Remove && !d.sensitive)
    {
        if let Some(value) = written.pointer(&d.pointer) {
            d.op = DiffOp::Change;
            d.after = Some(value.clone());
        }
    }
}

/// Refuses prunes a broken folder would cause. `empty_system(address)` names the system when
/// the manifest declares nothing for it: an emptied or half-synced folder (git-sync, a
/// ConfigMap remount) must not delete everything this tenant owns there, so those prunes need
/// `--allow-empty`. Then, more prunes than `max_deletes` are refused together: nothing is
/// deleted, and each says why.
pub fn guard_prunes(
    prunes: &mut [Change],
    empty_system: &dyn Fn(&Address) -> Option<String>,
    options: &PlanOptions,
) {
    if !options.allow_empty {
        for c in prunes.iter_mut() {
            if let Some(system) = empty_system(&c.address) {
                c.blocked = Some(format!(
                    "the manifest declares nothing for {system}, so this prune would delete everything the tenant owns there (an emptied or half-synced folder?); nothing is deleted unless --allow-empty is given"
                ));
            }
        }
    }
    let Some(max) = options.max_deletes else {
        return;
    };
    let count = prunes.iter().filter(|c| c.blocked.is_none()).count();
    if count > max {
        for c in prunes.iter_mut().filter(|c| c.blocked.is_none()) {
            c.blocked = Some(format!(
                "the prune would delete {count} objects, more than the limit of {max} (--max-deletes, [watch] max_deletes); nothing is deleted: check the manifest folder, then raise the limit or prune in smaller steps"
            ));
        }
    }
}

/// A managed live object the manifest no longer declares (only planned with `--prune`), with
/// its digest (see [`Digests`]).
pub fn prune_change(
    address: Address,
    live_fingerprint: Option<String>,
    depends_on: Vec<Address>,
) -> Change {
    Change {
        address,
        action: Action::Delete,
        risk: Risk::Destructive,
        reasons: vec!["managed by ofctl but no longer in the manifest (--prune)".into()],
        notes: Vec::new(),
        blocked: None,
        force: false,
        diff: Vec::new(),
        depends_on,
        desired_digest: None,
        live_fingerprint,
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn triggers() {
        let wq = json!("workqueue");
        let lim = json!("limits");
        assert!(fires(Trigger::ToOrFrom("workqueue"), Some(&lim), Some(&wq)));
        assert!(fires(Trigger::ToOrFrom("workqueue"), Some(&wq), None));
        assert!(!fires(
            Trigger::ToOrFrom("workqueue"),
            None,
            Some(&json!("interest"))
        ));
        assert!(fires(Trigger::TrueToFalse, Some(&json!(true)), None));
        assert!(!fires(Trigger::TrueToFalse, None, Some(&json!(true))));
        assert!(fires(
            Trigger::SetOrChanged,
            None,
            Some(&json!({"name": "x"}))
        ));
        assert!(!fires(
            Trigger::SetOrChanged,
            Some(&json!({"name": "x"})),
            None
        ));
        assert!(fires(Trigger::AnyChange, Some(&json!("memory")), None));
    }
}

#[cfg(test)]
mod saved_plan_tests {
    use super::*;
    use serde_json::json;

    fn saved(plan: Value) -> Result<Plan, PlanFileError> {
        Plan::from_saved(Path::new("p.json"), &plan.to_string())
    }

    fn empty_plan() -> Value {
        json!({
            "format_version": FORMAT_VERSION,
            "created_at": "2025-01-01T00:00:00Z",
            "manifest_dir": "m",
            "options": {"prune": false, "allow_replace": false},
            "changes": [],
            "summary": {"create": 0, "update": 0, "replace": 0, "delete": 0, "noop": 0, "blocked": 0},
        })
    }

    #[test]
    fn reads_a_saved_plan() {
        assert!(saved(empty_plan()).unwrap().changes.is_empty());
    }

    #[test]
    fn an_edited_summary_is_refused() {
        // Summary::pending() on these numbers would overflow: apply used to panic here.
        let mut plan = empty_plan();
        plan["summary"]["create"] = json!(usize::MAX);
        plan["summary"]["update"] = json!(1);
        let err = saved(plan).unwrap_err();
        assert!(matches!(err, PlanFileError::Edited { .. }), "{err}");
        assert!(err
            .to_string()
            .starts_with("p.json: the summary does not match"));
    }

    #[test]
    fn another_format_is_named_before_its_fields_are_checked() {
        let err = saved(json!({"format_version": "2", "steps": []})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.json has plan format 2, this ofctl reads format 1; re-run `ofctl plan -o FILE` with this ofctl"
        );
    }

    #[test]
    fn invalid_files_name_the_position_and_the_fix() {
        let err = Plan::from_saved(Path::new("p.json"), "{\n  \"format_version\": \"1\",\n  x")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.json:3:3: is not an ofctl plan file: key must be a string; save a plan with `ofctl plan -o FILE`"
        );
        let err = Plan::from_saved(Path::new("p.json"), "").unwrap_err();
        assert!(err.to_string().starts_with("p.json:1:1: "), "{err}");
    }
}

#[cfg(test)]
mod prune_guard_tests {
    use super::*;
    use serde_json::json;

    fn prunes(names: &[&str]) -> Vec<Change> {
        names
            .iter()
            .map(|n| {
                prune_change(
                    Address::new("NatsStream", *n),
                    Some(digest(&json!({}))),
                    Vec::new(),
                )
            })
            .collect()
    }

    fn refused(changes: &[Change]) -> Vec<&str> {
        changes
            .iter()
            .filter_map(|c| c.blocked.as_deref())
            .collect()
    }

    #[test]
    fn an_empty_system_is_not_pruned_unless_allowed() {
        let options = PlanOptions {
            prune: true,
            max_deletes: Some(10),
            ..Default::default()
        };
        let empty = |_: &Address| Some("nats".to_string());
        let mut changes = prunes(&["A", "B"]);
        guard_prunes(&mut changes, &empty, &options);
        assert_eq!(refused(&changes).len(), 2);
        assert!(refused(&changes)[0].contains("declares nothing for nats"));
        let mut changes = prunes(&["A", "B"]);
        let allowed = PlanOptions {
            allow_empty: true,
            ..options
        };
        guard_prunes(&mut changes, &empty, &allowed);
        assert!(refused(&changes).is_empty());
    }

    #[test]
    fn more_deletes_than_the_limit_are_refused_together() {
        let declared = |_: &Address| None;
        let options = |max| PlanOptions {
            prune: true,
            max_deletes: Some(max),
            ..Default::default()
        };
        let mut changes = prunes(&["A", "B", "C"]);
        guard_prunes(&mut changes, &declared, &options(3));
        assert!(refused(&changes).is_empty());
        let mut changes = prunes(&["A", "B", "C", "D"]);
        guard_prunes(&mut changes, &declared, &options(3));
        let why = refused(&changes);
        assert_eq!(why.len(), 4);
        assert!(
            why[0].contains("delete 4 objects, more than the limit of 3"),
            "{why:?}"
        );
    }
}
