//! The command line's conveniences through the real binary: shell completions, man pages,
//! JSON logs, colour control, the apply progress line (under a pseudo-terminal from
//! util-linux `script`) and `--target`. NATS-only manifests against a real nats-server; the
//! progress line needs an apply that takes a while, so it runs against the sandbox's Tactical
//! RMM emulator with added latency.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{nats, ofctl, sandbox_process, ManifestDir, Run};

fn config(url: &str) -> String {
    format!("[nats]\nurl = \"{url}\"\n")
}

/// A NATS stream document, with `metadata.dependsOn` when `depends_on` is given.
fn stream(name: &str, depends_on: Option<&str>) -> String {
    let deps = depends_on
        .map(|d| format!("  dependsOn: [{d}]\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: ofctl.openframe.io/v1\nkind: NatsStream\nmetadata:\n  name: {name}\n{deps}spec:\n  subjects: [\"{}.>\"]\n---\n",
        name.to_lowercase()
    )
}

/// ORDERS → PAYMENTS → LEDGER (each needs the next), AUDIT on its own.
fn chain() -> String {
    [
        stream("ORDERS", Some("NatsStream/PAYMENTS")),
        stream("PAYMENTS", Some("NatsStream/LEDGER")),
        stream("LEDGER", None),
        stream("AUDIT", None),
    ]
    .concat()
}

async fn stream_exists(url: &str, name: &str) -> bool {
    support::stream_config(url, name).await.is_some()
}

fn addresses(plan: &Value) -> Vec<String> {
    plan["changes"]
        .as_array()
        .expect("changes array")
        .iter()
        .map(|c| c["address"].as_str().expect("address").to_string())
        .collect()
}

/// Runs ofctl under a pseudo-terminal (`script -qfec`): stdin, stdout and stderr are all the
/// terminal, and what it printed comes back merged. `NO_COLOR` is unset unless `envs` sets it.
fn ofctl_on_tty(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let quote = |a: &str| format!("'{}'", a.replace('\'', "'\\''"));
    let line = std::iter::once(env!("CARGO_BIN_EXE_ofctl"))
        .chain(args.iter().copied())
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new("script");
    cmd.args(["-qfec", &line, "/dev/null"])
        .env_remove("OFCTL_LOG")
        .env_remove("NO_COLOR")
        .env("TERM", "xterm-256color")
        .stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .expect("run util-linux `script` (apt-get install bsdutils) to give ofctl a terminal");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn completions_for_each_shell_name_every_command() {
    for (shell, marker) in [
        ("bash", "complete -F _ofctl"),
        ("zsh", "#compdef ofctl"),
        ("fish", "complete -c ofctl"),
    ] {
        let run = ofctl(&["completions", shell], &[]);
        assert_eq!(run.code, 0, "{shell}: {run:?}");
        assert!(run.stdout.contains(marker), "{shell}: {run:?}");
        for word in [
            "validate",
            "plan",
            "apply",
            "drift",
            "watch",
            "export",
            "completions",
            "man",
            "target",
            "log-format",
        ] {
            assert!(run.stdout.contains(word), "{shell} lacks {word}: {run:?}");
        }
    }
    // The bash script is valid bash.
    let bash = ofctl(&["completions", "bash"], &[]).stdout;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ofctl.bash");
    std::fs::write(&file, bash).expect("write completion");
    let check = Command::new("bash")
        .arg("-n")
        .arg(&file)
        .output()
        .expect("run bash -n");
    assert!(check.status.success(), "{check:?}");

    let run = ofctl(&["completions", "tcsh"], &[]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("possible values: bash"), "{run:?}");
}

#[test]
fn man_pages_are_written_one_per_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("man1");
    let run = ofctl(&["man", "-o", out.to_str().expect("utf-8")], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    for command in [
        "",
        "-validate",
        "-plan",
        "-apply",
        "-drift",
        "-watch",
        "-export",
        "-sandbox",
        "-completions",
        "-man",
    ] {
        let page = out.join(format!("ofctl{command}.1"));
        let text = std::fs::read_to_string(&page)
            .unwrap_or_else(|e| panic!("{}: {e}; {run:?}", page.display()));
        assert!(text.starts_with(".ie \\n(.g .ds Aq"), "{}", page.display());
        assert!(text.contains(&format!(".TH ofctl{command} 1")), "{text}");
    }
    let plan = std::fs::read_to_string(out.join("ofctl-plan.1")).expect("plan page");
    assert!(plan.contains("\\-\\-target"), "{plan}");
    assert!(plan.contains("Show what apply would change"), "{plan}");
}

#[test]
fn json_logs_are_one_object_per_line_without_secrets() {
    const PASSWORD: &str = "n4ts-json-log-PW-77";
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("js");
    let server = support::nats_server(
        dir,
        &store,
        support::free_port(),
        &["--user", "ofctl", "--pass", PASSWORD],
    );
    let m = ManifestDir::new();
    m.write("streams.yaml", &chain())
        .write("ofctl.toml", "[nats]\nurl = \"${env:OFCTL_NATS_URL}\"\n");
    let lines = |run: &Run| -> Vec<Value> {
        assert!(!run.stderr.contains(PASSWORD), "{run:?}");
        assert!(!run.stdout.contains(PASSWORD), "{run:?}");
        run.stderr
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{run:?}"))
            })
            .collect()
    };
    let message = |line: &Value| line["fields"]["message"].as_str().unwrap_or("").to_string();

    let url = format!("nats://ofctl:{PASSWORD}@127.0.0.1:{}", server.port);
    let run = ofctl(
        &[
            "plan",
            "-f",
            m.arg(),
            "--log-format",
            "json",
            "--log-level",
            "debug",
        ],
        &[("OFCTL_NATS_URL", &url)],
    );
    assert_eq!(run.code, 2, "{run:?}");
    let logged = lines(&run);
    assert!(
        logged
            .iter()
            .any(|l| l["level"] == "INFO" && message(l).starts_with("read live state in")),
        "{run:?}"
    );
    assert!(run.stdout.contains("Plan: 4 to create"), "{run:?}");

    // The error names the URL, whose password is masked inside the JSON line.
    let closed = format!("nats://ofctl:{PASSWORD}@127.0.0.1:{}", support::free_port());
    let run = ofctl(
        &["plan", "-f", m.arg(), "--log-format", "json"],
        &[("OFCTL_NATS_URL", &closed)],
    );
    assert_eq!(run.code, 1, "{run:?}");
    let logged = lines(&run);
    assert_eq!(logged.len(), 1, "{run:?}");
    assert_eq!(logged[0]["level"], "ERROR", "{run:?}");
    assert!(
        message(&logged[0]).contains("cannot connect to NATS at (sensitive)"),
        "{run:?}"
    );

    // OFCTL_LOG_FORMAT is the same switch, for containers.
    let run = ofctl(
        &["plan", "-f", m.arg(), "--log-level", "info"],
        &[("OFCTL_NATS_URL", &url), ("OFCTL_LOG_FORMAT", "json")],
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(!lines(&run).is_empty(), "{run:?}");
}

#[test]
fn colour_follows_the_flag_the_terminal_and_no_color() {
    let (_server, url) = nats();
    let m = ManifestDir::new();
    m.write("streams.yaml", &chain())
        .write("ofctl.toml", &config(&url));
    let dir = m.arg();
    const ESC: char = '\u{1b}';

    // Pipes: no colour by default; `always` colours (and wins over NO_COLOR, which the
    // harness sets); `never` does not.
    let plain = ofctl(&["plan", "-f", dir], &[]);
    assert_eq!(plain.code, 2, "{plain:?}");
    assert!(!plain.stdout.contains(ESC), "{plain:?}");
    let always = ofctl(&["plan", "-f", dir, "--color", "always"], &[]);
    assert!(
        always.stdout.contains("\u{1b}[32m  + NatsStream/AUDIT"),
        "{always:?}"
    );
    let never = ofctl(&["--color", "never", "plan", "-f", dir], &[]);
    assert!(!never.stdout.contains(ESC), "{never:?}");

    // A terminal: colour unless NO_COLOR is set (an empty NO_COLOR does not count) or
    // `--color never`.
    let tty = ofctl_on_tty(&["plan", "-f", dir], &[]);
    assert_eq!(tty.code, 2, "{tty:?}");
    assert!(
        tty.stdout.contains("\u{1b}[32m  + NatsStream/AUDIT"),
        "{tty:?}"
    );
    let empty = ofctl_on_tty(&["plan", "-f", dir], &[("NO_COLOR", "")]);
    assert!(empty.stdout.contains(ESC), "{empty:?}");
    for (args, envs) in [
        (vec!["plan", "-f", dir], vec![("NO_COLOR", "1")]),
        (vec!["plan", "-f", dir, "--color", "never"], vec![]),
    ] {
        let run = ofctl_on_tty(&args, &envs);
        assert_eq!(run.code, 2, "{args:?} {envs:?}: {run:?}");
        assert!(run.stdout.contains("+ NatsStream/AUDIT"), "{run:?}");
        assert!(!run.stdout.contains(ESC), "{args:?} {envs:?}: {run:?}");
    }

    // clap's own help follows the flag as well.
    let help = ofctl_on_tty(&["plan", "--help"], &[]);
    assert!(help.stdout.contains("Usage:"), "{help:?}");
    assert!(help.stdout.contains(ESC), "{help:?}");
    for args in [
        vec!["--color", "never", "plan", "--help"],
        vec!["plan", "--color=never", "--help"],
    ] {
        let help = ofctl_on_tty(&args, &[]);
        assert!(
            help.stdout.contains("Usage: ofctl plan [OPTIONS]"),
            "{help:?}"
        );
        assert!(!help.stdout.contains(ESC), "{args:?}: {help:?}");
    }
}

#[test]
fn a_slow_apply_shows_a_progress_line_on_a_terminal_only() {
    const KEY: &str = "tk-progress-key-4411";
    let (_sandbox, urls) = sandbox_process("700ms", KEY);
    // Two scripts, one waiting for the other: the apply takes two round trips of 700 ms,
    // longer than the second after which the line appears.
    let manifest = |tag: &str| {
        let m = ManifestDir::new();
        m.write(
            "ofctl.toml",
            &format!(
                "[tactical]\nurl = \"{}\"\napi_key = \"${{env:OFCTL_TACTICAL_API_KEY}}\"\n",
                urls.tactical
            ),
        )
        .write(
            "scripts.yaml",
            &format!(
                "apiVersion: ofctl.openframe.io/v1\nkind: TacticalScript\nmetadata:\n  name: First{tag}\nspec:\n  script_body: echo one\n  shell: shell\n---\n\
                 apiVersion: ofctl.openframe.io/v1\nkind: TacticalScript\nmetadata:\n  name: Second{tag}\n  dependsOn: [TacticalScript/First{tag}]\nspec:\n  script_body: echo two\n  shell: shell\n"
            ),
        );
        m
    };
    let env = [("OFCTL_TACTICAL_API_KEY", KEY)];
    let slow = |started: Instant, run: &Run| {
        assert!(
            started.elapsed() > Duration::from_secs(2),
            "the apply was too quick to show a progress line: {run:?}"
        );
    };

    let m = manifest("Tty");
    let started = Instant::now();
    let run = ofctl_on_tty(&["apply", "-f", m.arg(), "--auto-approve"], &env);
    assert_eq!(run.code, 0, "{run:?}");
    slow(started, &run);
    assert!(run.stdout.contains("Applying: 1/2 changes done"), "{run:?}");
    assert!(
        run.stdout.contains("Apply complete: 2 change(s) made."),
        "{run:?}"
    );

    // Pipes: never, neither on stdout nor on stderr.
    let m = manifest("Pipe");
    let started = Instant::now();
    let run = ofctl(&["apply", "-f", m.arg(), "--auto-approve"], &env);
    assert_eq!(run.code, 0, "{run:?}");
    slow(started, &run);
    for out in [&run.stdout, &run.stderr] {
        assert!(!out.contains("Applying"), "{run:?}");
        assert!(!out.contains('\u{1b}'), "{run:?}");
    }
    assert!(
        run.stderr.contains("TacticalScript/SecondPipe created"),
        "{run:?}"
    );

    // JSON logs on a terminal: no progress line among them.
    let m = manifest("Json");
    let started = Instant::now();
    let run = ofctl_on_tty(
        &[
            "apply",
            "-f",
            m.arg(),
            "--auto-approve",
            "--log-format",
            "json",
        ],
        &env,
    );
    assert_eq!(run.code, 0, "{run:?}");
    slow(started, &run);
    assert!(!run.stdout.contains("Applying"), "{run:?}");
    assert!(
        run.stdout.contains("Apply complete: 2 change(s) made."),
        "{run:?}"
    );
}

#[tokio::test]
async fn target_plans_the_resource_and_its_dependencies_and_says_so() {
    let (_server, url) = nats();
    let m = ManifestDir::new();
    m.write("streams.yaml", &chain())
        .write("ofctl.toml", &config(&url));

    let run = ofctl(
        &[
            "plan",
            "-f",
            m.arg(),
            "--target",
            "NatsStream/ORDERS",
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(run.code, 2, "{run:?}");
    let plan = run.json();
    assert_eq!(
        addresses(&plan),
        [
            "NatsStream/LEDGER",
            "NatsStream/ORDERS",
            "NatsStream/PAYMENTS"
        ],
        "{run:?}"
    );
    assert_eq!(
        plan["options"]["targets"],
        serde_json::json!(["NatsStream/ORDERS"])
    );
    assert_eq!(plan["summary"]["create"], 3, "{run:?}");
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(support::repo_root().join("schema/plan.schema.json"))
            .expect("plan schema"),
    )
    .expect("schema JSON");
    let validator = jsonschema::validator_for(&schema).expect("plan schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&plan)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");

    let run = ofctl(
        &[
            "plan",
            "-f",
            m.arg(),
            "--target",
            "NatsStream/ORDERS",
            "--target",
            "NatsStream/ORDERS",
        ],
        &[],
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stdout.starts_with(
            "Targeted: NatsStream/ORDERS (+ NatsStream/LEDGER, NatsStream/PAYMENTS as dependencies)\n\
             Warning: resource targeting is in effect: this plan covers only the targeted resources"
        ),
        "{run:?}"
    );
    assert!(!run.stdout.contains("NatsStream/AUDIT"), "{run:?}");
    assert!(
        run.stdout
            .contains("Plan: 3 to create, 0 to update, 0 to replace, 0 to delete, 0 unchanged."),
        "{run:?}"
    );

    // An unknown target is an error naming it and the close addresses.
    let run = ofctl(
        &["plan", "-f", m.arg(), "--target", "NatsStream/ORDRS"],
        &[],
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(
            "error: --target NatsStream/ORDRS: no such resource in the manifest; did you mean NatsStream/ORDERS?"
        ),
        "{run:?}"
    );
    let run = ofctl(&["plan", "-f", m.arg(), "--target", "ORDERS"], &[]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("`ORDERS` is not Kind/name"), "{run:?}");

    // apply --target applies only the subset.
    let run = ofctl(
        &[
            "apply",
            "-f",
            m.arg(),
            "--target",
            "NatsStream/PAYMENTS",
            "--auto-approve",
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("Apply complete: 2 change(s) made."),
        "{run:?}"
    );
    assert!(stream_exists(&url, "PAYMENTS").await);
    assert!(stream_exists(&url, "LEDGER").await);
    assert!(!stream_exists(&url, "ORDERS").await);
    assert!(!stream_exists(&url, "AUDIT").await);
}

#[tokio::test]
async fn a_targeted_saved_plan_applies_only_its_subset_and_goes_stale() {
    let (_server, url) = nats();
    let m = ManifestDir::new();
    m.write("streams.yaml", &chain())
        .write("ofctl.toml", &config(&url));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("audit.plan");
    let file = file.to_str().expect("utf-8");

    let run = ofctl(
        &[
            "plan",
            "-f",
            m.arg(),
            "--target",
            "NatsStream/AUDIT",
            "-o",
            file,
        ],
        &[],
    );
    assert_eq!(run.code, 2, "{run:?}");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(file).expect("plan file"))
        .expect("plan JSON");
    assert_eq!(
        saved["options"]["targets"],
        serde_json::json!(["NatsStream/AUDIT"])
    );
    assert_eq!(addresses(&saved), ["NatsStream/AUDIT"]);

    let run = ofctl(&["apply", file, "--target", "NatsStream/ORDERS"], &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("--target cannot be combined with the saved plan"),
        "{run:?}"
    );

    let run = ofctl(&["apply", file], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("Apply complete: 1 change(s) made."),
        "{run:?}"
    );
    assert!(stream_exists(&url, "AUDIT").await);
    for other in ["ORDERS", "PAYMENTS", "LEDGER"] {
        assert!(!stream_exists(&url, other).await, "{other} was created");
    }

    // Staleness is still checked on the subset: a dependency created since planning.
    let file2 = dir.path().join("orders.plan");
    let file2 = file2.to_str().expect("utf-8");
    let run = ofctl(
        &[
            "plan",
            "-f",
            m.arg(),
            "--target",
            "NatsStream/ORDERS",
            "-o",
            file2,
        ],
        &[],
    );
    assert_eq!(run.code, 2, "{run:?}");
    let run = ofctl(
        &[
            "apply",
            "-f",
            m.arg(),
            "--target",
            "NatsStream/LEDGER",
            "--auto-approve",
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let run = ofctl(&["apply", file2], &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("NatsStream/LEDGER: the live object changed since planning"),
        "{run:?}"
    );
    assert!(!stream_exists(&url, "ORDERS").await);
}

#[tokio::test]
async fn prune_never_deletes_outside_the_targets() {
    let (_server, url) = nats();
    let m = ManifestDir::new();
    m.write("streams.yaml", &chain())
        .write("old.yaml", &stream("OLD", None))
        .write("older.yaml", &stream("OLDER", None))
        .write("ofctl.toml", &config(&url));
    let run = ofctl(&["apply", "-f", m.arg(), "--auto-approve"], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    m.remove("old.yaml");
    m.remove("older.yaml");

    let run = ofctl(
        &[
            "plan",
            "-f",
            m.arg(),
            "--prune",
            "--target",
            "NatsStream/AUDIT",
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(addresses(&run.json()), ["NatsStream/AUDIT"], "{run:?}");

    let run = ofctl(
        &[
            "apply",
            "-f",
            m.arg(),
            "--prune",
            "--target",
            "NatsStream/OLD",
            "--auto-approve",
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("Targeted: NatsStream/OLD\n"), "{run:?}");
    assert!(
        run.stdout
            .contains("0 to create, 0 to update, 0 to replace, 1 to delete"),
        "{run:?}"
    );
    assert!(!stream_exists(&url, "OLD").await);
    assert!(
        stream_exists(&url, "OLDER").await,
        "pruned outside the target"
    );

    // Without --prune, an undeclared live object is not a target.
    let run = ofctl(
        &["plan", "-f", m.arg(), "--target", "NatsStream/OLDER"],
        &[],
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("no such resource in the manifest;"),
        "{run:?}"
    );
}

#[tokio::test]
async fn watch_with_json_logs_writes_nothing_but_json_lines() {
    let (_n, nats_url) = nats();
    let (_r, redis_url) = support::redis();
    let m = ManifestDir::new();
    m.write("streams.yaml", &stream("AUDIT", None)).write(
        "ofctl.toml",
        &format!(
            "tenant = \"t1\"\n[nats]\nurl = \"{nats_url}\"\n[redis]\nurl = \"{redis_url}\"\n[watch]\ninterval = \"1h\"\n{}",
            support::API_SECTION
        ),
    );
    let mut watch = support::Watch::start(&["--log-format", "json", "-f", m.arg()]);
    let converged = support::Watch::until(Duration::from_secs(10), || async {
        stream_exists(&nats_url, "AUDIT").await
    })
    .await;
    assert!(converged.is_some(), "{}", watch.log());
    assert_eq!(watch.terminate(), Some(0), "{}", watch.log());
    let log = watch.log();
    assert!(!log.contains(support::API_TOKEN), "{log}");
    let messages: Vec<String> = log
        .lines()
        .map(|l| {
            let line: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{log}"));
            line["fields"]["message"].as_str().unwrap_or("").to_string()
        })
        .collect();
    for expected in [
        "platform API on http://",
        "interrupted: finishing work in flight",
        "ofctl watch: stopped",
    ] {
        assert!(
            messages.iter().any(|m| m.starts_with(expected)),
            "no `{expected}` line:\n{log}"
        );
    }
}
