//! The CI example (examples/ci): the shell steps of `ofctl-ci.sh`, as the workflow runs them,
//! against a real nats-server with the real `ofctl` binary and a fake `gh` on PATH. The fake
//! keeps GitHub's state (comments, issues, runs, artifacts) in a JSON file and logs every call,
//! so the tests check what a workflow run would leave on GitHub.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use support::{nats, ofctl, repo_root};

/// A stand-in for the GitHub CLI: the `gh api` routes, `gh run list` and `gh run download` that
/// ofctl-ci.sh uses, served from `$FAKE_GH_STATE` (updated in place) and logged, one JSON line
/// per call, to `$FAKE_GH_LOG`. Anything else exits 1, so an unexpected call fails the step.
const FAKE_GH: &str = r#"#!/usr/bin/env python3
import json, os, shutil, sys, urllib.parse

argv = sys.argv[1:]
state_path, log_path = os.environ["FAKE_GH_STATE"], os.environ["FAKE_GH_LOG"]
state = json.load(open(state_path))
repo = os.environ.get("GH_REPO")
if not repo:
    sys.exit("fake gh: GH_REPO is not set")

def save():
    json.dump(state, open(state_path, "w"), indent=1)

def log(entry):
    with open(log_path, "a") as f:
        f.write(json.dumps(entry) + "\n")

def fields(args):
    out = {}
    i = 0
    while i < len(args):
        flag, kv = args[i], args[i + 1]
        i += 2
        key, value = kv.split("=", 1)
        if flag == "-F" and value.startswith("@"):
            value = open(value[1:]).read()
        if key.endswith("[]"):
            out.setdefault(key[:-2], []).append(value)
        else:
            out[key] = value
    return out

if argv[:1] == ["api"]:
    args, method, paginate, rest = argv[1:], "GET", False, []
    while args:
        a = args.pop(0)
        if a == "-X":
            method = args.pop(0)
        elif a == "--paginate":
            paginate = True
        elif a in ("-f", "-F"):
            rest += [a, args.pop(0)]
        else:
            path = a
    path = path.replace("{owner}/{repo}", repo)
    url = urllib.parse.urlparse(path)
    parts, query = url.path.split("/"), dict(urllib.parse.parse_qsl(url.query))
    body = fields(rest)
    log({"method": method, "path": url.path, "fields": body})
    prefix = ["repos"] + repo.split("/")
    if parts[:3] != prefix:
        sys.exit(f"fake gh: path outside {repo}: {path}")
    route = parts[3:]
    if route[:1] == ["issues"] and len(route) == 3 and route[2] == "comments" and route[1] != "comments":
        number = route[1]
        if method == "GET":
            print(json.dumps([c for c in state["comments"] if c["issue"] == int(number)]))
        elif method == "POST":
            state["next_id"] += 1
            c = {"id": state["next_id"], "issue": int(number), "body": body["body"],
                 "user": {"login": "github-actions[bot]"}}
            state["comments"].append(c)
            save()
            print(json.dumps(c))
        else:
            sys.exit(f"fake gh: {method} {path}")
    elif route[:2] == ["issues", "comments"] and len(route) == 3 and method == "PATCH":
        c = next(c for c in state["comments"] if c["id"] == int(route[2]))
        c["body"] = body["body"]
        save()
        print(json.dumps(c))
    elif route == ["issues"] and method == "GET":
        label = query.get("labels")
        print(json.dumps([i for i in state["issues"]
                          if i["state"] == query.get("state", "open")
                          and (label is None or label in i["labels"])]))
    elif route == ["issues"] and method == "POST":
        state["next_id"] += 1
        issue = {"number": state["next_id"], "title": body["title"], "body": body["body"],
                 "labels": body.get("labels", []), "state": "open"}
        state["issues"].append(issue)
        save()
        print(json.dumps(issue))
    elif route[:1] == ["issues"] and len(route) == 2 and method == "PATCH":
        issue = next(i for i in state["issues"] if i["number"] == int(route[1]))
        issue.update(body)
        save()
        print(json.dumps(issue))
    elif route[:1] == ["commits"] and route[2:] == ["pulls"] and method == "GET":
        print(json.dumps(state["pulls"].get(route[1], [])))
    else:
        sys.exit(f"fake gh: no route for {method} {path}")
elif argv[:2] == ["run", "list"]:
    opts = dict(zip(argv[2::2], argv[3::2]))
    log({"run": "list", "opts": opts})
    runs = [r for r in state["runs"] if r["head"] == opts["--commit"]
            and r["workflow"] == opts["--workflow"] and r["event"] == opts["--event"]
            and r["status"] == opts["--status"]]
    runs.sort(key=lambda r: -r["databaseId"])
    print(json.dumps([{"databaseId": r["databaseId"]} for r in runs[: int(opts["--limit"])]]))
elif argv[:2] == ["run", "download"]:
    run, opts = argv[2], dict(zip(argv[3::2], argv[4::2]))
    log({"run": "download", "id": run, "opts": opts})
    src = state["artifacts"].get(run, {}).get(opts["-n"])
    if src is None:
        sys.exit(f"fake gh: no artifact {opts['-n']} in run {run}")
    os.makedirs(opts["-D"], exist_ok=True)
    for name in os.listdir(src):
        shutil.copy(os.path.join(src, name), opts["-D"])
else:
    sys.exit(f"fake gh: unsupported command {argv}")
"#;

/// A repository checkout with a manifest folder `desired-state/` (NATS only, so each step takes
/// milliseconds), a fake `gh` on PATH and its GitHub state.
struct Repo {
    dir: tempfile::TempDir,
    nats_url: String,
}

impl Repo {
    fn new(nats_url: &str, state: Value) -> Repo {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("fake-bin");
        std::fs::create_dir_all(&bin).unwrap();
        let gh = bin.join("gh");
        std::fs::write(&gh, FAKE_GH).unwrap();
        let mut perms = std::fs::metadata(&gh).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&gh, perms).unwrap();
        let mut full = json!({
            "next_id": 100, "comments": [], "issues": [], "pulls": {}, "runs": [], "artifacts": {}
        });
        for (k, v) in state.as_object().unwrap() {
            full[k] = v.clone();
        }
        std::fs::write(dir.path().join("gh-state.json"), full.to_string()).unwrap();
        std::fs::write(dir.path().join("gh-log.jsonl"), "").unwrap();
        let repo = Repo {
            dir,
            nats_url: nats_url.to_string(),
        };
        repo.write("ofctl.toml", &format!("[nats]\nurl = \"{nats_url}\"\n"));
        repo
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file of the manifest folder.
    fn write(&self, name: &str, text: &str) {
        let path = self.root().join("desired-state").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn streams(&self, streams: &[(&str, &str)]) {
        self.write("streams.yaml", &streams_yaml(streams));
    }

    /// `examples/ci/ofctl-ci.sh ARGS` from the checkout's root, as a workflow step runs it.
    fn step(&self, args: &[&str], envs: &[(&str, &str)]) -> support::Run {
        let path = format!(
            "{}:{}",
            self.root().join("fake-bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new("bash")
            .arg(repo_root().join("examples/ci/ofctl-ci.sh"))
            .args(args)
            .current_dir(self.root())
            .env("OFCTL_BIN", env!("CARGO_BIN_EXE_ofctl"))
            .env("PATH", path)
            .env("GH_REPO", "acme/platform-infra")
            .env("FAKE_GH_STATE", self.root().join("gh-state.json"))
            .env("FAKE_GH_LOG", self.root().join("gh-log.jsonl"))
            .env("NO_COLOR", "1")
            .env_remove("OFCTL_LOG")
            .env_remove("OFCTL_MANIFEST")
            .env_remove("OFCTL_CI_OUT")
            .env_remove("GITHUB_RUN_ID")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run ofctl-ci.sh");
        support::Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The fake GitHub's state.
    fn github(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.root().join("gh-state.json")).unwrap())
            .unwrap()
    }

    /// Every `gh` call so far.
    fn calls(&self) -> Vec<Value> {
        std::fs::read_to_string(self.root().join("gh-log.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The `gh api` calls with this method whose path ends with `suffix`.
    fn api_calls(&self, method: &str, suffix: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c["method"] == method && c["path"].as_str().unwrap().ends_with(suffix))
            .count()
    }

    fn ofctl(&self, args: &[&str]) -> support::Run {
        let mut full: Vec<&str> = args.to_vec();
        let dir = self.root().join("desired-state");
        full.extend(["-f", dir.to_str().unwrap()]);
        ofctl(&full, &[])
    }

    /// Changes live state behind the manifest's back: applies another manifest to the same
    /// NATS server, as an operator's manual change would.
    fn change_live(&self, streams: &[(&str, &str)]) {
        let other = support::ManifestDir::new();
        other
            .write(
                "ofctl.toml",
                &format!("[nats]\nurl = \"{}\"\n", self.nats_url),
            )
            .write("streams.yaml", &streams_yaml(streams));
        let run = ofctl(&["apply", "-f", other.arg(), "--auto-approve"], &[]);
        assert_eq!(run.code, 0, "out-of-band change: {run:?}");
    }

    fn out(&self, name: &str) -> PathBuf {
        self.root().join(".ofctl-ci").join(name)
    }
}

fn streams_yaml(streams: &[(&str, &str)]) -> String {
    streams
        .iter()
        .map(|(name, subjects)| support::stream(name, &format!("  subjects: [{subjects}]")))
        .collect()
}

fn marker_comments(github: &Value, pr: u64) -> Vec<Value> {
    github["comments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["issue"] == pr
                && c["body"]
                    .as_str()
                    .unwrap()
                    .contains("<!-- ofctl-plan:desired-state -->")
        })
        .cloned()
        .collect()
}

fn drift_issues(github: &Value) -> Vec<Value> {
    github["issues"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| {
            i.get("pull_request").is_none()
                && i["body"]
                    .as_str()
                    .unwrap()
                    .contains("<!-- ofctl-drift:desired-state -->")
        })
        .cloned()
        .collect()
}

#[test]
fn pr_keeps_one_plan_comment_and_the_merge_applies_the_reviewed_plan() {
    let (_nats, url) = nats();
    let someone_else = json!({"id": 1, "issue": 7, "body": "LGTM", "user": {"login": "alice"}});
    let repo = Repo::new(&url, json!({"comments": [someone_else.clone()]}));
    repo.streams(&[("ORDERS", "orders.>")]);

    // First push to PR #7: plan, comment.
    let plan = repo.step(&["plan"], &[("OFCTL_CI_SHA", "head1")]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(repo.out("plan.json").is_file(), "{plan:?}");
    let comment = repo.step(&["comment", "7"], &[]);
    assert_eq!(comment.code, 0, "{comment:?}");
    let github = repo.github();
    let ours = marker_comments(&github, 7);
    assert_eq!(ours.len(), 1, "{github:#}");
    let first = ours[0]["body"].as_str().unwrap();
    assert!(first.contains("NatsStream/ORDERS"), "{first}");
    assert!(first.contains("head1"), "{first}");
    assert_eq!(repo.api_calls("POST", "/issues/7/comments"), 1);

    // Second push: another stream. The same comment is updated, not a second one posted.
    repo.streams(&[("ORDERS", "orders.>"), ("INVOICES", "invoices.>")]);
    let plan = repo.step(&["plan"], &[("OFCTL_CI_SHA", "head2")]);
    assert_eq!(plan.code, 0, "{plan:?}");
    let comment = repo.step(&["comment", "7"], &[]);
    assert_eq!(comment.code, 0, "{comment:?}");
    let github = repo.github();
    let ours = marker_comments(&github, 7);
    assert_eq!(
        ours.len(),
        1,
        "one plan comment, updated in place: {github:#}"
    );
    let second = ours[0]["body"].as_str().unwrap();
    assert!(second.contains("NatsStream/INVOICES"), "{second}");
    assert!(
        second.contains("head2") && !second.contains("head1"),
        "{second}"
    );
    assert_eq!(
        repo.api_calls("POST", "/issues/7/comments"),
        1,
        "created once"
    );
    let id = ours[0]["id"].as_u64().unwrap();
    assert_eq!(
        repo.api_calls("PATCH", &format!("/issues/comments/{id}")),
        1,
        "updated once"
    );
    assert_eq!(
        github["comments"][0], someone_else,
        "other comments untouched"
    );
    assert_eq!(repo.step(&["gate"], &[]).code, 0, "no refused change");

    // The PR run uploads plan.json as its artifact; the merge commit belongs to PR #7.
    let artifact = repo.root().join("artifact-501");
    std::fs::create_dir_all(&artifact).unwrap();
    std::fs::copy(repo.out("plan.json"), artifact.join("plan.json")).unwrap();
    let reviewed = std::fs::read_to_string(repo.out("plan.json")).unwrap();
    let mut state = repo.github();
    state["pulls"] = json!({"merge1": [{"number": 7, "merged_at": "2026-12-06T10:00:00Z", "head": {"sha": "head2"}}]});
    let run = |id: u64, head: &str| json!({"databaseId": id, "head": head, "workflow": "ofctl.yml", "event": "pull_request", "status": "success"});
    state["runs"] = json!([run(500, "head1"), run(501, "head2")]);
    state["artifacts"] = json!({"500": {}, "501": {"ofctl-plan": artifact}});
    std::fs::write(repo.root().join("gh-state.json"), state.to_string()).unwrap();

    // The merge job: a fresh checkout, so no plan.json until it is fetched.
    std::fs::remove_file(repo.out("plan.json")).unwrap();
    let fetch = repo.step(&["fetch-plan", "merge1"], &[]);
    assert_eq!(fetch.code, 0, "{fetch:?}");
    assert_eq!(
        std::fs::read_to_string(repo.out("plan.json")).unwrap(),
        reviewed,
        "the plan of the PR's last run (head2) is fetched"
    );
    let apply = repo.step(&["apply"], &[]);
    assert_eq!(apply.code, 0, "{apply:?}");
    assert!(
        apply.stdout.contains("Apply complete: 2 change(s) made"),
        "{apply:?}"
    );
    let after = repo.ofctl(&["plan"]);
    assert_eq!(after.code, 0, "live state matches the manifest: {after:?}");

    // A commit that no merged PR made has no reviewed plan: nothing is applied.
    let orphan = repo.step(&["fetch-plan", "direct-push"], &[]);
    assert_eq!(orphan.code, 1, "{orphan:?}");
    assert!(
        orphan.stderr.contains("no merged pull request"),
        "{orphan:?}"
    );
}

#[test]
fn a_stale_reviewed_plan_is_refused_and_changes_nothing() {
    let (_nats, url) = nats();
    let repo = Repo::new(&url, json!({}));
    repo.streams(&[("ORDERS", "orders.>")]);
    assert_eq!(repo.ofctl(&["apply", "--auto-approve"]).code, 0);

    // Reviewed: add a subject. Before the merge job runs, someone changes the stream by hand.
    repo.streams(&[("ORDERS", "orders.>, orders-v2.>")]);
    let plan = repo.step(&["plan"], &[]);
    assert_eq!(plan.code, 0, "{plan:?}");
    repo.change_live(&[("ORDERS", "orders.>, manual.>")]);
    let apply = repo.step(&["apply"], &[]);
    assert_eq!(apply.code, 1, "{apply:?}");
    assert!(apply.stderr.contains("stale"), "{apply:?}");
    assert!(apply.stderr.contains("NatsStream/ORDERS"), "{apply:?}");
    // Nothing was applied: live state is still the manual change.
    let manual = support::ManifestDir::new();
    manual
        .write("ofctl.toml", &format!("[nats]\nurl = \"{url}\"\n"))
        .write(
            "streams.yaml",
            &streams_yaml(&[("ORDERS", "orders.>, manual.>")]),
        );
    let check = ofctl(&["plan", "-f", manual.arg()], &[]);
    assert_eq!(check.code, 0, "the manual change is still live: {check:?}");

    // Stale the other way: the manifest at the merge commit is not the one reviewed.
    repo.streams(&[("ORDERS", "orders.>, manual.>")]);
    let plan = repo.step(&["plan"], &[]);
    assert_eq!(plan.code, 0, "{plan:?}");
    repo.streams(&[("ORDERS", "orders.>, manual.>"), ("EXTRA", "extra.>")]);
    let apply = repo.step(&["apply"], &[]);
    assert_eq!(apply.code, 1, "{apply:?}");
    assert!(apply.stderr.contains("stale"), "{apply:?}");
    assert!(apply.stderr.contains("NatsStream/EXTRA"), "{apply:?}");
    assert_eq!(
        repo.ofctl(&["plan", "--format", "json"]).json()["summary"]["create"],
        1,
        "EXTRA was not created"
    );
}

#[test]
fn drift_keeps_one_issue_open_while_it_lasts_and_closes_it_when_gone() {
    let (_nats, url) = nats();
    let pr_with_marker = json!({"number": 3, "state": "open", "labels": ["ofctl-drift"],
        "body": "quoting <!-- ofctl-drift:desired-state -->", "pull_request": {"url": "x"}});
    let manual_issue = json!({"number": 4, "state": "open", "labels": ["ofctl-drift"],
        "title": "drift runbook", "body": "notes"});
    let repo = Repo::new(
        &url,
        json!({"issues": [pr_with_marker.clone(), manual_issue.clone()]}),
    );
    repo.streams(&[("ORDERS", "orders.>")]);
    assert_eq!(repo.ofctl(&["apply", "--auto-approve"]).code, 0);

    // No drift: no issue.
    let run = repo.step(&["drift-issue"], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(drift_issues(&repo.github()).is_empty());
    assert_eq!(repo.api_calls("POST", "/issues"), 0);

    // Drift: one issue opened, labelled, listing the drifted stream.
    repo.change_live(&[("ORDERS", "orders.>, manual.>")]);
    let run = repo.step(&["drift-issue"], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let issues = drift_issues(&repo.github());
    assert_eq!(issues.len(), 1, "{issues:#?}");
    let issue = &issues[0];
    assert_eq!(issue["state"], "open");
    assert_eq!(issue["labels"], json!(["ofctl-drift"]));
    let first = issue["body"].as_str().unwrap().to_string();
    assert!(first.contains("NatsStream/ORDERS"), "{first}");
    assert!(
        first.contains("manual."),
        "the drift shows the live value: {first}"
    );

    // Drift goes on (and changes): the same issue is updated, no second one.
    repo.change_live(&[("ORDERS", "orders.>, manual-again.>")]);
    let run = repo.step(&["drift-issue"], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let issues = drift_issues(&repo.github());
    assert_eq!(issues.len(), 1, "{issues:#?}");
    assert_eq!(issues[0]["number"], issue["number"]);
    assert_eq!(issues[0]["state"], "open");
    let second = issues[0]["body"].as_str().unwrap();
    assert!(second.contains("manual-again."), "{second}");
    assert_eq!(repo.api_calls("POST", "/issues"), 1, "opened once");
    let number = issue["number"].as_u64().unwrap();
    assert_eq!(
        repo.api_calls("PATCH", &format!("/issues/{number}")),
        1,
        "updated once"
    );

    // Healed: the issue is closed with a comment; a later run with no drift does nothing.
    assert_eq!(repo.ofctl(&["apply", "--auto-approve"]).code, 0);
    let run = repo.step(&["drift-issue"], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let issues = drift_issues(&repo.github());
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0]["state"], "closed");
    assert_eq!(
        repo.api_calls("POST", &format!("/issues/{number}/comments")),
        1
    );
    let calls = repo.calls().len();
    let run = repo.step(&["drift-issue"], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        repo.calls().len(),
        calls + 1,
        "only the lookup of open issues"
    );
    assert_eq!(repo.api_calls("POST", "/issues"), 1, "no new issue");

    // The pull request and the hand-written issue carrying the label were never touched.
    let github = repo.github();
    assert_eq!(github["issues"][0], pr_with_marker);
    assert_eq!(github["issues"][1], manual_issue);
}

/// Every `ofctl-ci.sh` step of the workflow is a subcommand the script has, and the artifact
/// the PR job uploads is the one the merge job downloads.
#[test]
fn the_workflow_calls_the_script_steps_the_tests_run() {
    let workflow =
        std::fs::read_to_string(repo_root().join("examples/ci/github-actions.yml")).unwrap();
    let script = std::fs::read_to_string(repo_root().join("examples/ci/ofctl-ci.sh")).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&workflow).expect("workflow YAML");
    let jobs = docs[0]["jobs"].as_hash().expect("jobs");
    let mut steps = Vec::new();
    let mut uploaded = Vec::new();
    for (_, job) in jobs {
        for step in job["steps"].as_vec().expect("steps") {
            if let Some(run) = step["run"].as_str() {
                for (i, _) in run.match_indices("ofctl-ci.sh ") {
                    let sub = run[i + "ofctl-ci.sh ".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap()
                        .to_string();
                    steps.push(sub);
                }
            }
            if step["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/upload-artifact"))
            {
                uploaded.push(step["with"]["name"].as_str().unwrap().to_string());
            }
        }
    }
    steps.sort();
    steps.dedup();
    assert_eq!(
        steps,
        [
            "apply",
            "comment",
            "drift-issue",
            "fetch-plan",
            "gate",
            "plan"
        ],
        "the workflow runs every step the tests cover"
    );
    for sub in &steps {
        assert!(
            script.contains(&format!("\n  {sub}) shift;")),
            "ofctl-ci.sh has no `{sub}` subcommand"
        );
    }
    assert_eq!(uploaded, ["ofctl-plan"]);
    assert!(script.contains("ARTIFACT=${OFCTL_CI_ARTIFACT:-ofctl-plan}"));
    // The plan comment's marker is what the comment step looks for.
    assert!(script.contains("PLAN_MARKER=\"<!-- ofctl-plan:$MANIFEST -->\""));
}
