//! Plans as text (for people at a terminal), JSON (for programs) and Markdown (for PRs).
//!
//! Every renderer ends with [`crate::redact::redact`], so a secret that slipped into a value
//! or an error message still never reaches the output.

use std::fmt::Write;

use owo_colors::OwoColorize;
use serde_json::Value;

use super::{Action, Change, DiffOp, FieldDiff, Plan, Risk};
use crate::redact::{redact, MASK};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

pub fn render(plan: &Plan, format: Format, color: bool) -> String {
    let out = match format {
        Format::Text => text(plan, color),
        Format::Json => crate::redact::to_json(plan).unwrap_or_default() + "\n",
        Format::Markdown => markdown(plan),
    };
    redact(&out).into_owned()
}

/// The same content framed as a drift report: what differs between live state and manifest.
pub fn render_drift(plan: &Plan, format: Format, color: bool) -> String {
    let out = match format {
        Format::Json => return render(plan, format, color),
        Format::Text if plan.summary.pending() == 0 => {
            format!(
                "No drift: live state matches the manifest ({} resources checked).\n",
                plan.summary.noop
            )
        }
        Format::Text => text(plan, color).replacen(
            "ofctl will perform the following actions:",
            "Live state differs from the manifest; ofctl apply would:",
            1,
        ),
        Format::Markdown => markdown(plan).replacen("### ofctl plan", "### ofctl drift report", 1),
    };
    redact(&out).into_owned()
}

fn short(value: &Value) -> String {
    match value {
        Value::String(s) if s.contains('\n') => format!("<<{} lines>>", s.lines().count()),
        other => other.to_string(),
    }
}

fn side(value: Option<&Value>, sensitive: bool) -> String {
    if sensitive {
        MASK.to_string()
    } else {
        value.map(short).unwrap_or_else(|| "(unset)".into())
    }
}

/// One diff line without the leading marker, e.g. `subjects: ["a"] -> ["b"]`.
fn describe(d: &FieldDiff) -> String {
    match d.op {
        DiffOp::Add => format!("{} = {}", d.path, side(d.after.as_ref(), d.sensitive)),
        DiffOp::Remove => format!("{} = {}", d.path, side(d.before.as_ref(), d.sensitive)),
        DiffOp::Change if d.sensitive => format!("{} = {MASK} (value changed)", d.path),
        DiffOp::Change => format!(
            "{}: {} -> {}",
            d.path,
            side(d.before.as_ref(), false),
            side(d.after.as_ref(), false)
        ),
    }
}

/// Line-by-line diff of multi-line text values (script bodies).
fn text_body_diff(d: &FieldDiff) -> Option<String> {
    // A created or removed body is summarized as `<<N lines>>`: printing hundreds of `+`
    // lines would bury the rest of the plan.
    if d.sensitive || d.op != DiffOp::Change {
        return None;
    }
    let before = d.before.as_ref().and_then(Value::as_str).unwrap_or("");
    let after = d.after.as_ref().and_then(Value::as_str).unwrap_or("");
    if !before.contains('\n') && !after.contains('\n') {
        return None;
    }
    let diff = similar::TextDiff::from_lines(before, after);
    Some(
        diff.unified_diff()
            .context_radius(2)
            .header("live", "desired")
            .to_string(),
    )
}

fn marker(op: DiffOp) -> &'static str {
    match op {
        DiffOp::Add => "+",
        DiffOp::Remove => "-",
        DiffOp::Change => "~",
    }
}

fn headline(c: &Change) -> String {
    let what = match c.action {
        Action::Create => "will be created",
        Action::Update => "will be updated in place",
        Action::Replace => "must be replaced (deleted and recreated)",
        Action::Delete => "will be deleted",
        Action::Noop => "is up to date",
    };
    format!("# {} {what}", c.address)
}

/// Said when a plan is partial (`--target`), as Terraform warns about `-target`.
const PARTIAL: &str = "Warning: resource targeting is in effect: this plan covers only the targeted resources and their dependencies, so other changes the manifest asks for may still be pending. Use --target to repair one resource, then run ofctl plan without it.";

/// "Targeted: KafkaConnector/x (+ IntegratedTool/y as a dependency)", for a `--target` plan.
fn targeted(plan: &Plan) -> Option<String> {
    let targets = &plan.options.targets;
    if targets.is_empty() {
        return None;
    }
    let join = |items: Vec<String>| items.join(", ");
    let mut line = format!(
        "Targeted: {}",
        join(targets.iter().map(ToString::to_string).collect())
    );
    let deps = super::target::dependencies(&plan.changes, targets);
    if !deps.is_empty() {
        let noun = if deps.len() == 1 {
            "as a dependency"
        } else {
            "as dependencies"
        };
        let _ = write!(
            line,
            " (+ {} {noun})",
            join(deps.iter().map(ToString::to_string).collect())
        );
    }
    Some(line)
}

fn text(plan: &Plan, color: bool) -> String {
    let paint = |s: String, action: Action| -> String {
        if !color {
            return s;
        }
        match action {
            Action::Create => s.green().to_string(),
            Action::Update => s.yellow().to_string(),
            Action::Replace | Action::Delete => s.red().to_string(),
            Action::Noop => s,
        }
    };
    let mut out = String::new();
    if let Some(line) = targeted(plan) {
        let warning = if color {
            PARTIAL.yellow().bold().to_string()
        } else {
            PARTIAL.to_string()
        };
        let _ = writeln!(out, "{line}\n{warning}\n");
    }
    let pending: Vec<&Change> = plan.pending().collect();
    if pending.is_empty() {
        let _ = writeln!(
            out,
            "No changes. Live state matches the manifest ({} resources checked).",
            plan.summary.noop
        );
        unchanged_notes(plan, &mut out, "  # ");
        return out;
    }
    let _ = writeln!(out, "ofctl will perform the following actions:\n");
    for c in pending {
        let _ = writeln!(out, "  {}", headline(c));
        let _ = writeln!(
            out,
            "{}",
            paint(format!("{:>3} {}", c.action.symbol(), c.address), c.action)
        );
        for d in &c.diff {
            let line = format!("      {} {}", marker(d.op), describe(d));
            let _ = writeln!(out, "{}", paint(line, c.action));
            if let Some(body) = text_body_diff(d) {
                for l in body.lines() {
                    let _ = writeln!(out, "          {l}");
                }
            }
        }
        for r in c.reasons.iter().chain(&c.notes) {
            let _ = writeln!(out, "      # {r}");
        }
        if let Some(why) = &c.blocked {
            let line = format!("      ! REFUSED: {why}");
            let _ = writeln!(
                out,
                "{}",
                if color {
                    line.red().bold().to_string()
                } else {
                    line
                }
            );
        }
        let _ = writeln!(out);
    }
    let s = &plan.summary;
    let _ = writeln!(
        out,
        "Plan: {} to create, {} to update, {} to replace, {} to delete, {} unchanged.",
        s.create, s.update, s.replace, s.delete, s.noop
    );
    if s.blocked > 0 {
        let _ = writeln!(
            out,
            "{} change(s) refused: this plan cannot be applied as it is (see REFUSED above).",
            s.blocked
        );
    }
    unchanged_notes(plan, &mut out, "  # ");
    out
}

/// Notes on resources that need no change (e.g. a connector whose task FAILED): nothing to
/// apply, but nothing a reader should miss either.
fn unchanged_notes(plan: &Plan, out: &mut String, prefix: &str) {
    let mut first = true;
    for c in plan.changes.iter().filter(|c| c.action == Action::Noop) {
        for n in &c.notes {
            if first {
                let _ = writeln!(out, "\nNotes on unchanged resources:");
                first = false;
            }
            let _ = writeln!(out, "{prefix}{}: {n}", c.address);
        }
    }
}

fn risk_label(c: &Change) -> &'static str {
    if c.blocked.is_some() {
        return "⛔ refused";
    }
    match c.risk {
        Risk::Destructive => "🔴 destructive",
        Risk::Restarts => "🟠 restarts",
        Risk::Safe => "🟢 safe",
    }
}

fn markdown(plan: &Plan) -> String {
    let s = &plan.summary;
    let mut out = String::new();
    let _ = writeln!(out, "### ofctl plan\n");
    if let Some(line) = targeted(plan) {
        let _ = writeln!(out, "{line}\n\n> **{PARTIAL}**\n");
    }
    let _ = writeln!(
        out,
        "**{} to create, {} to update, {} to replace, {} to delete**, {} unchanged{}.\n",
        s.create,
        s.update,
        s.replace,
        s.delete,
        s.noop,
        if s.blocked > 0 {
            format!(", **{} refused**", s.blocked)
        } else {
            String::new()
        }
    );
    let mut pending: Vec<&Change> = plan.pending().collect();
    if pending.is_empty() {
        let _ = writeln!(out, "No changes: live state matches the manifest.");
        unchanged_notes(plan, &mut out, "- ");
        return out;
    }
    // Risky changes first: that is what a reviewer must not miss.
    pending.sort_by_key(|c| (c.blocked.is_none(), c.risk, c.address.clone()));
    let _ = writeln!(out, "| | Resource | Action | Risk | Why |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for c in &pending {
        let why = c.blocked.clone().unwrap_or_else(|| {
            c.reasons
                .iter()
                .chain(&c.notes)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        });
        let _ = writeln!(
            out,
            "| `{}` | `{}` | {} | {} | {} |",
            c.action.symbol(),
            c.address,
            c.action.as_str(),
            risk_label(c),
            why.replace('|', "\\|")
        );
    }
    let _ = writeln!(out);
    for c in &pending {
        let _ = writeln!(
            out,
            "<details><summary><code>{}</code> — {}</summary>\n\n```diff",
            c.address,
            c.action.as_str()
        );
        for d in &c.diff {
            let m = match d.op {
                DiffOp::Add => "+",
                DiffOp::Remove => "-",
                DiffOp::Change => "!",
            };
            let _ = writeln!(out, "{m} {}", describe(d));
            if let Some(body) = text_body_diff(d) {
                for l in body.lines().skip(2) {
                    let _ = writeln!(out, "{l}");
                }
            }
        }
        let _ = writeln!(out, "```\n\n</details>\n");
    }
    unchanged_notes(plan, &mut out, "- ");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{PlanOptions, Summary, FORMAT_VERSION};
    use crate::resource::Address;
    use serde_json::json;

    fn sample() -> Plan {
        let changes = vec![
            Change {
                address: Address::new("NatsStream", "A"),
                action: Action::Create,
                risk: Risk::Safe,
                reasons: vec![],
                notes: vec![],
                blocked: None,
                force: false,
                diff: vec![FieldDiff {
                    pointer: "/subjects".into(),
                    path: "subjects".into(),
                    op: DiffOp::Add,
                    before: None,
                    after: Some(json!(["a.>"])),
                    sensitive: false,
                }],
                depends_on: vec![],
                desired_digest: Some("d".into()),
                live_fingerprint: None,
                source: None,
            },
            Change {
                address: Address::new("KafkaConnector", "c"),
                action: Action::Replace,
                risk: Risk::Destructive,
                reasons: vec!["storage: cannot change".into()],
                notes: vec![],
                blocked: Some("pass --allow-replace".into()),
                force: false,
                diff: vec![FieldDiff {
                    pointer: "/config/database.password".into(),
                    path: "config[\"database.password\"]".into(),
                    op: DiffOp::Change,
                    before: None,
                    after: None,
                    sensitive: true,
                }],
                depends_on: vec![],
                desired_digest: Some("d".into()),
                live_fingerprint: Some("l".into()),
                source: None,
            },
        ];
        Plan {
            format_version: FORMAT_VERSION.into(),
            created_at: "now".into(),
            manifest_dir: "m".into(),
            config_path: None,
            options: PlanOptions::default(),
            summary: Summary::of(&changes),
            changes,
        }
    }

    #[test]
    fn text_is_terraform_like() {
        let out = render(&sample(), Format::Text, false);
        assert!(out.contains("  + NatsStream/A"), "{out}");
        assert!(out.contains("-/+ KafkaConnector/c"), "{out}");
        assert!(out.contains("REFUSED"), "{out}");
        assert!(out.contains("(sensitive) (value changed)"), "{out}");
        assert!(
            out.contains("Plan: 1 to create, 0 to update, 1 to replace, 0 to delete, 0 unchanged.")
        );
    }

    #[test]
    fn json_has_changes_and_summary() {
        let out = render(&sample(), Format::Json, false);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["changes"][0]["address"], "NatsStream/A");
        assert_eq!(v["changes"][0]["action"], "create");
        assert_eq!(v["summary"]["replace"], 1);
    }

    #[test]
    fn a_targeted_plan_names_its_dependencies_and_warns() {
        let mut plan = sample();
        plan.options.targets = vec![Address::new("KafkaConnector", "c")];
        let out = render(&plan, Format::Text, false);
        assert!(
            out.starts_with("Targeted: KafkaConnector/c (+ NatsStream/A as a dependency)\nWarning: resource targeting is in effect"),
            "{out}"
        );
        let out = render(&plan, Format::Markdown, false);
        assert!(out.contains("> **Warning: resource targeting"), "{out}");
        assert!(!render(&sample(), Format::Text, false).contains("Targeted"));
    }

    #[test]
    fn markdown_puts_refused_first() {
        let out = render(&sample(), Format::Markdown, false);
        let refused = out.find("KafkaConnector/c").unwrap();
        let create = out.find("NatsStream/A").unwrap();
        assert!(refused < create, "{out}");
        assert!(out.contains("<details>"));
    }
}
