//! Bad input never crashes ofctl, and every error for it names the file, the line and the fix.
//!
//! Property tests (proptest: cargo-fuzz needs a nightly toolchain) over the three readers of
//! user input: the manifest loader (YAML folders and specFile JSON), `${...}` placeholder
//! resolution, and the saved-plan reader behind `ofctl apply PLANFILE`. Generators produce
//! arbitrary text and, more usefully, near-valid input: valid documents with a few random edits,
//! which is where a parser's edge cases live.
//!
//! The number of cases per target is bounded so `cargo test` stays quick in CI (a few seconds
//! per target in a debug build). For a longer local run set `OFCTL_FUZZ_CASES=N`: N cases per
//! in-process target, and N/50 runs of the real binary. A failure prints the shrunk input;
//! fix the code and add that input as a unit test next to the fix.

mod support;

use std::path::Path;

use ofctl::interpolate::{PlaceholderError, Variables};
use ofctl::manifest::{self, yaml, ManifestError, ManifestErrors};
use ofctl::plan::{
    Action, Change, DiffOp, FieldDiff, Plan, PlanFileError, PlanOptions, Risk, Summary,
    FORMAT_VERSION,
};
use ofctl::resource::{Address, Span};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};
use support::{ofctl, ManifestDir};

/// Cases for one target: `OFCTL_FUZZ_CASES`, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("OFCTL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Shrunk failures become unit tests next to the fix instead of a regressions file.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Manifest loader
// ---------------------------------------------------------------------------------------------

/// A valid document using most of the manifest's features: flow and block collections,
/// labels, annotations, dependsOn, typed and defaulted placeholders, durations, limits.
const STREAM_A: &str = "\
apiVersion: ofctl.openframe.io/v1
kind: NatsStream
metadata:
  name: A
  labels: {app.kubernetes.io/part-of: openframe}
  annotations:
    ofctl.openframe.io/allow-replace: \"true\"
  dependsOn: [NatsStream/B]
spec:
  description: \"${desc:-a stream}\"
  subjects: [\"a.>\", 'a.*.x']
  storage: file
  retention: limits
  max_msgs: -1
  max_age: 72h
  duplicate_window: 120000000000
  num_replicas: ${replicas}
  metadata:
    owner: ${env:OFCTL_FUZZ_UNSET:-team}
";

/// A document whose spec lives in `b.json`.
const STREAM_B: &str = "\
apiVersion: ofctl.openframe.io/v1
kind: NatsStream
metadata: {name: B}
specFile: b.json
";

const SPEC_B: &str = r#"{
  "subjects": ["b.>"],
  "storage": "memory",
  "max_bytes": 1048576,
  "description": "${desc:-b}"
}
"#;

/// YAML and manifest fragments that exercise parser and validator edge cases.
const FRAGMENTS: &[&str] = &[
    "",
    "~",
    "null",
    "true",
    "-1",
    "0",
    "99999999999999999999999",
    "-99999999999999999999999",
    "1e400",
    "-0.0",
    ".inf",
    ".nan",
    "0x1F",
    "0o17",
    "[]",
    "{}",
    "[1, 2",
    "{a: 1",
    "\"${nope}\"",
    "${",
    "${}",
    "$${x}",
    "${env:OFCTL_FUZZ_UNSET}",
    "${file:missing.txt}",
    "${file:body.txt}",
    "${replicas}",
    "${empty}",
    "\"${empty}\"",
    "${empty}${replicas}",
    "&anchor {x: 1}",
    "&anchor [1, 2]",
    "*anchor",
    "*nowhere",
    "!!str 5",
    "!!int x",
    "!!binary aGk=",
    "!custom x",
    "|",
    ">-",
    "|\n  block\n  text",
    "'unterminated",
    "\"unterminated",
    "? complex",
    "? [a, b]\n: c",
    "- item",
    "---",
    "...",
    "--- !!map",
    "%YAML 1.2",
    "%TAG ! tag:x,2000:",
    "# comment",
    "<<: *anchor",
    "\t",
    "\u{1F600}",
    "\u{feff}",
    "\u{0}",
    "\r",
    "\r\n",
    "key: value: other",
    ": empty key",
    "@",
    "`",
    "specFile: b.json",
    "specFile: missing.json",
    "specFile: sub",
    "specFile: ../outside.json",
    "specFile: ''",
    "specFile: [b.json]",
    "spec: {}",
    "spec: []",
    "kind: NatStream",
    "kind: [x]",
    "apiVersion: v2",
    "metadata: x",
    "name: ''",
    "name: [a]",
    "dependsOn: [nope]",
    "dependsOn: [NatsStream/missing]",
    "max_msg: 10",
    "storage: disk",
    "subjects: [\"a b\"]",
    "subjects: [x, x]",
    "num_replicas: 9",
    "max_age: 5 minutes",
];

/// One random edit of a line-oriented YAML text.
#[derive(Debug, Clone)]
enum Edit {
    Delete(Index),
    Duplicate(Index),
    /// Prefix the line (wrong indentation, tabs).
    Indent(Index, &'static str),
    Dedent(Index),
    /// Replace what follows the first `:`.
    Value(Index, String),
    /// Replace what precedes the first `:`, keeping the indentation.
    Key(Index, String),
    Insert(Index, String),
    /// Insert text at a character offset of the line.
    Splice(Index, Index, String),
}

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(FRAGMENTS).prop_map(str::to_string),
        2 => "[ -~\t\u{e9}\u{1F600}]{0,12}",
        1 => any::<String>().prop_map(|s| s.chars().take(16).collect()),
        1 => "[0-9]{15,40}",
        1 => "-?[0-9]{1,3}\\.[0-9]{1,20}[eE][+-]?[0-9]{1,4}",
        // Deep flow nesting (the scanner caps it) and deep block nesting (it does not).
        1 => (1usize..400).prop_map(|n| format!("{}x{}", "[".repeat(n), "]".repeat(n))),
        1 => (1usize..400).prop_map(|n| "{a: ".repeat(n)),
        1 => (1usize..3000).prop_map(|n| format!("{}x", "- ".repeat(n))),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<Index>().prop_map(Edit::Delete),
        any::<Index>().prop_map(Edit::Duplicate),
        (
            any::<Index>(),
            prop::sample::select(&["  ", " ", "\t", "    "][..])
        )
            .prop_map(|(i, p)| Edit::Indent(i, p)),
        any::<Index>().prop_map(Edit::Dedent),
        (any::<Index>(), fragment()).prop_map(|(i, f)| Edit::Value(i, f)),
        (any::<Index>(), prop_oneof!["[a-z_]{1,12}", fragment()])
            .prop_map(|(i, k)| Edit::Key(i, k)),
        (any::<Index>(), fragment()).prop_map(|(i, f)| Edit::Insert(i, f)),
        (any::<Index>(), any::<Index>(), fragment()).prop_map(|(i, j, f)| Edit::Splice(i, j, f)),
    ]
}

fn apply_edits(text: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for e in edits {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let n = lines.len();
        match e {
            Edit::Delete(i) => {
                lines.remove(i.index(n));
            }
            Edit::Duplicate(i) => {
                let i = i.index(n);
                lines.insert(i, lines[i].clone());
            }
            Edit::Indent(i, p) => lines[i.index(n)].insert_str(0, p),
            Edit::Dedent(i) => {
                let line = &mut lines[i.index(n)];
                *line = line.trim_start().to_string();
            }
            Edit::Value(i, v) => {
                let line = &mut lines[i.index(n)];
                if let Some(colon) = line.find(':') {
                    line.truncate(colon + 1);
                    line.push(' ');
                    line.push_str(v);
                }
            }
            Edit::Key(i, k) => {
                let line = &mut lines[i.index(n)];
                if let Some(colon) = line.find(':') {
                    let indent = line.len() - line.trim_start().len();
                    line.replace_range(indent..colon, k);
                }
            }
            Edit::Insert(i, f) => lines.insert(i.index(n + 1), f.clone()),
            Edit::Splice(i, j, f) => {
                let line = &mut lines[i.index(n)];
                let at = line
                    .char_indices()
                    .map(|(b, _)| b)
                    .chain([line.len()])
                    .nth(j.index(line.chars().count() + 1))
                    .unwrap_or(line.len());
                line.insert_str(at, f);
            }
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// What `b.json` (STREAM_B's specFile) holds.
#[derive(Debug, Clone)]
enum SpecFile {
    Missing,
    Directory,
    Text(String),
}

fn spec_file() -> impl Strategy<Value = SpecFile> {
    prop_oneof![
        1 => Just(SpecFile::Missing),
        1 => Just(SpecFile::Directory),
        3 => prop::collection::vec(edit(), 0..3)
            .prop_map(|edits| SpecFile::Text(apply_edits(SPEC_B, &edits))),
        1 => any::<String>().prop_map(SpecFile::Text),
        1 => arb_json().prop_map(|v| SpecFile::Text(v.to_string())),
    ]
}

fn variables() -> Variables {
    let mut v = Variables::new();
    v.insert("replicas", json!(3));
    v.insert("empty", json!(""));
    v
}

/// Lines of a text as YAML counts them: broken at \n, \r\n and a lone \r.
fn yaml_lines(text: &[u8]) -> usize {
    let lone_cr = text
        .iter()
        .enumerate()
        .filter(|(i, b)| **b == b'\r' && text.get(i + 1) != Some(&b'\n'))
        .count();
    text.iter().filter(|b| **b == b'\n').count() + lone_cr + 1
}

/// Checks one error against the folder it came from.
fn check_error(dir: &Path, e: &ManifestError) -> Result<(), TestCaseError> {
    prop_assert!(
        e.file.starts_with(dir),
        "error names a file outside the folder: {e}"
    );
    let bytes = std::fs::read(&e.file).map_err(|err| {
        TestCaseError::fail(format!("error names an unreadable file ({err}): {e}"))
    })?;
    let lines = yaml_lines(&bytes);
    prop_assert!(
        (1..=lines).contains(&e.position.line),
        "line {} is outside the file's {lines} lines: {e}",
        e.position.line
    );
    prop_assert!(e.position.column >= 1, "column 0: {e}");
    prop_assert!(!e.message.trim().is_empty(), "empty message: {e:?}");
    let names_field = e.message.starts_with("unknown field")
        || e.message.contains("is not one of")
        || e.message.contains("unresolved placeholder");
    prop_assert!(
        !names_field || e.field.is_some(),
        "error about a field does not name it: {e}"
    );
    Ok(())
}

fn check_load(dir: &Path) -> Result<(), TestCaseError> {
    match manifest::load(dir, &variables()) {
        Ok(m) => {
            for r in &m.resources {
                prop_assert!(!r.address.name.is_empty());
                prop_assert!(r.spec.is_object(), "{}: spec {}", r.address, r.spec);
                prop_assert!(r.source.file.starts_with(dir) && r.source.line >= 1);
            }
        }
        Err(ManifestErrors(errors)) => {
            prop_assert!(!errors.is_empty(), "Err without errors");
            for e in &errors {
                check_error(dir, e)?;
            }
        }
    }
    Ok(())
}

#[test]
fn the_seed_manifest_is_valid() {
    let m = ManifestDir::new();
    m.write("a.yaml", &format!("{STREAM_A}---\n{STREAM_B}"))
        .write("b.json", SPEC_B);
    let loaded = manifest::load(m.path(), &variables()).expect("seed manifest loads");
    assert_eq!(loaded.resources.len(), 2);
    assert_eq!(loaded.resources[0].spec["num_replicas"], json!(3));
    assert_eq!(loaded.resources[0].spec["metadata"]["owner"], json!("team"));
    assert_eq!(loaded.resources[1].spec["description"], json!("b"));
}

proptest! {
    #![proptest_config(config(cases(2000)))]

    /// The YAML reader on arbitrary text: a value or an error with a line, never a panic.
    #[test]
    fn yaml_parser_never_panics(text in prop_oneof![
        any::<String>(),
        "[a-z:\\-\\[\\]{}&*!|>'\"#%@,?` \n\r\t$]{0,200}",
    ]) {
        match yaml::parse_documents(&text) {
            Ok(docs) => {
                for d in &docs {
                    prop_assert!(d.positions.values().all(|p| p.line >= 1 && p.column >= 1));
                }
            }
            Err(e) => {
                let lines = yaml_lines(text.as_bytes());
                prop_assert!((1..=lines).contains(&e.position.line), "{e:?} in {lines} lines");
                prop_assert!(!e.message.is_empty());
            }
        }
    }
}

proptest! {
    #![proptest_config(config(cases(300)))]

    /// The loader on arbitrary bytes, as a YAML file.
    #[test]
    fn loader_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let m = ManifestDir::new();
        std::fs::write(m.path().join("x.yaml"), &bytes).expect("write");
        check_load(m.path())?;
    }
}

proptest! {
    #![proptest_config(config(cases(800)))]

    /// The loader on near-valid manifests: two documents (one with a specFile), a few random
    /// edits, and a damaged, missing or unreadable spec file.
    #[test]
    fn loader_errors_point_into_the_files(
        edits in prop::collection::vec(edit(), 1..5),
        second_file in any::<bool>(),
        spec in spec_file(),
    ) {
        let m = ManifestDir::new();
        let text = apply_edits(&format!("{STREAM_A}---\n{STREAM_B}"), &edits);
        if second_file {
            m.write("a.yaml", STREAM_A).write("z/b.yaml", &text);
        } else {
            m.write("a.yaml", &text);
        }
        let spec_dir = if second_file { m.path().join("z") } else { m.path().to_path_buf() };
        match &spec {
            SpecFile::Missing => {}
            SpecFile::Directory => std::fs::create_dir_all(spec_dir.join("b.json")).expect("mkdir"),
            SpecFile::Text(t) => std::fs::write(spec_dir.join("b.json"), t).expect("write"),
        }
        std::fs::write(spec_dir.join("body.txt"), "echo ${x}\n").expect("write");
        check_load(m.path())?;
    }
}

proptest! {
    #![proptest_config(config(cases(150)))]

    /// An unknown spec field is reported at its line, by path, with the fix.
    #[test]
    fn unknown_fields_are_named(field in "[a-z_]{1,14}") {
        prop_assume!(!stream_fields().contains(&field));
        let m = ManifestDir::new();
        m.write("s.yaml", &format!("{}  {field}: 1\n", support::stream("S", "  subjects: [s]")
            .trim_end_matches("---\n")));
        let errors = manifest::load(m.path(), &variables()).expect_err("unknown field").0;
        prop_assert_eq!(errors.len(), 1, "{:?}", errors);
        let e = &errors[0];
        prop_assert_eq!(e.position.line, 7);
        prop_assert_eq!(e.field.clone(), Some(format!("spec.{field}")));
        prop_assert!(e.message.starts_with(&format!("unknown field `{field}`; ")), "{}", e);
    }

    /// A bad enum value is reported at its line, with the allowed values.
    #[test]
    fn bad_enum_values_are_named(value in "[a-z]{1,10}") {
        prop_assume!(value != "file" && value != "memory" && value != "null"
            && value != "true" && value != "false");
        let m = ManifestDir::new();
        m.write("s.yaml", &support::stream("S", &format!("  subjects: [s]\n  storage: {value}")));
        let errors = manifest::load(m.path(), &variables()).expect_err("bad enum").0;
        prop_assert_eq!(errors.len(), 1, "{:?}", errors);
        let e = &errors[0];
        prop_assert_eq!(e.position.line, 7);
        prop_assert_eq!(e.field.as_deref(), Some("spec.storage"));
        prop_assert!(e.message.contains(&value) && e.message.contains("\"memory\""), "{}", e);
    }

    /// Any `metadata.name` (placeholders included) loads as a usable name or is reported
    /// at its line.
    #[test]
    fn names_resolve_to_a_name_or_an_error(name in prop_oneof![
        prop::sample::select(&["${empty}", "${nope}", "${replicas}", "${empty}${empty}",
            "${nope:-}", "${nope:-x}", "$${x}", "a"][..]).prop_map(str::to_string),
        "[a-z${}:-]{1,10}",
    ]) {
        let m = ManifestDir::new();
        let doc = support::stream("S", "  subjects: [s]")
            .replace("name: S", &format!("name: {}", Value::String(name.clone())));
        m.write("s.yaml", &doc);
        match manifest::load(m.path(), &variables()) {
            Ok(loaded) => {
                let r = &loaded.resources[0];
                prop_assert!(!r.address.name.is_empty(), "`{}` loaded as an empty name", name);
                prop_assert_eq!(Address::parse(&r.address.to_string()), Some(r.address.clone()));
            }
            Err(ManifestErrors(errors)) => {
                for e in &errors {
                    check_error(m.path(), e)?;
                }
                prop_assert!(
                    errors.iter().any(|e| e.field.as_deref() == Some("metadata.name")
                        && e.position.line == 4),
                    "{:?}", errors
                );
            }
        }
    }

    /// An unresolved placeholder is reported at its line, with its field and name.
    #[test]
    fn unresolved_placeholders_are_named(name in "[a-z_][a-z0-9_]{0,10}") {
        prop_assume!(variables().get(&name).is_none());
        let m = ManifestDir::new();
        m.write("s.yaml", &support::stream("S", &format!("  subjects:\n    - s\n    - \"x.${{{name}}}\"")));
        let errors = manifest::load(m.path(), &variables()).expect_err("unresolved").0;
        prop_assert_eq!(errors.len(), 1, "{:?}", errors);
        let e = &errors[0];
        prop_assert_eq!(e.position.line, 8);
        prop_assert_eq!(e.field.as_deref(), Some("spec.subjects[1]"));
        prop_assert!(e.message.contains(&format!("`${{{name}}}`")), "{}", e);
        prop_assert!(e.message.contains("--var"), "no fix in: {}", e);
    }
}

/// One folder of the repo's desired state (every kind has one), as (relative path, text).
type Folder = Vec<(std::path::PathBuf, String)>;

/// The repo's desired state and its config's variables. `${env:NAME}` gets a default, so the
/// seeds are valid without the platform's secrets in the environment.
fn desired_state() -> (Variables, Vec<Folder>) {
    fn with_env_defaults(text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("${env:") {
            let end = rest[i..].find('}').map_or(rest.len(), |e| i + e);
            out.push_str(&rest[..end]);
            if !rest[i..end].contains(":-") {
                out.push_str(":-fuzz");
            }
            rest = &rest[end..];
        }
        out.push_str(rest);
        out
    }
    fn files(dir: &Path, base: &Path, out: &mut Folder) {
        for entry in std::fs::read_dir(dir)
            .expect("read desired-state")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                files(&path, base, out);
            } else {
                let text = std::fs::read_to_string(&path).expect("desired-state is text");
                let rel = path.strip_prefix(base).expect("inside").to_path_buf();
                out.push((rel, with_env_defaults(&text)));
            }
        }
    }
    let root = support::repo_root().join("desired-state");
    let config = ofctl::config::TargetConfig::load(&root.join("ofctl.toml"), true)
        .expect("desired-state/ofctl.toml loads");
    let mut folders = Vec::new();
    for entry in std::fs::read_dir(&root)
        .expect("read desired-state")
        .flatten()
    {
        if entry.path().is_dir() {
            let mut folder = Folder::new();
            files(&entry.path(), &entry.path(), &mut folder);
            folder.sort();
            folders.push(folder);
        }
    }
    folders.sort();
    (config.variables, folders)
}

fn write_folder(dir: &Path, folder: &Folder) {
    for (rel, text) in folder {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
}

#[test]
fn the_desired_state_seeds_are_valid() {
    let (variables, folders) = desired_state();
    assert!(folders.len() >= 5, "{} folders", folders.len());
    for folder in &folders {
        let m = ManifestDir::new();
        write_folder(m.path(), folder);
        if let Err(e) = manifest::load(m.path(), &variables) {
            panic!("{e}");
        }
    }
}

/// The real desired state of every kind (YAML, spec files, scripts), one file edited at random:
/// the kinds' schemas and spec checks see near-valid input too.
#[test]
fn every_kind_survives_edits_to_real_manifests() {
    let (variables, folders) = desired_state();
    let strategy = (
        any::<Index>(),
        any::<Index>(),
        prop::collection::vec(edit(), 1..4),
    );
    proptest!(config(cases(200)), |((folder, file, edits) in strategy)| {
        let mut folder = folders[folder.index(folders.len())].clone();
        let n = folder.len();
        let (_, text) = &mut folder[file.index(n)];
        *text = apply_edits(text, &edits);
        let m = ManifestDir::new();
        write_folder(m.path(), &folder);
        match manifest::load(m.path(), &variables) {
            Ok(loaded) => {
                for r in &loaded.resources {
                    prop_assert!(!r.address.name.is_empty());
                    prop_assert!(r.source.file.starts_with(m.path()));
                }
            }
            Err(ManifestErrors(errors)) => {
                for e in &errors {
                    check_error(m.path(), e)?;
                }
            }
        }
    });
}

/// The NatsStream spec's fields (from the embedded schema), so the unknown-field target does
/// not pick a real one.
fn stream_fields() -> Vec<String> {
    let schema: Value =
        serde_json::from_str(manifest::schema::MANIFEST_SCHEMA).expect("schema is JSON");
    schema["$defs"]["NatsStreamSpec"]["properties"]
        .as_object()
        .expect("NatsStreamSpec has properties")
        .keys()
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Placeholder resolution
// ---------------------------------------------------------------------------------------------

/// Strings built from the placeholder syntax's pieces, so most inputs contain placeholders.
fn template() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => prop::sample::select(&[
            "$", "{", "}", ":-", "${", "$${", "env:", "file:", "name", "replicas", "empty", "nope",
            "PATH", "OFCTL_FUZZ_UNSET", "body.txt", "missing.txt", " ", ":", "-", "/", "=", "\0",
            "\u{e9}", "\u{1F600}",
        ][..]).prop_map(str::to_string),
        1 => "[a-z.]{0,4}",
    ];
    prop_oneof![
        4 => prop::collection::vec(piece, 0..12).prop_map(|p| p.concat()),
        1 => any::<String>(),
    ]
}

/// Variables of every JSON type, and a folder with `body.txt` for `${file:...}`.
struct Placeholders {
    _dir: tempfile::TempDir,
    vars: Variables,
}

impl Placeholders {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("body.txt"), "echo ${x}\n").expect("write");
        let mut vars = Variables::new();
        vars.insert("name", json!("devices"));
        vars.insert("replicas", json!(3));
        vars.insert("empty", json!(""));
        vars.insert("flag", json!(true));
        Self {
            vars: vars.confined_to(dir.path()),
            _dir: dir,
        }
    }
}

/// `${` written so that resolution gives it back literally.
fn escape(s: &str) -> String {
    s.replace("${", "$${")
}

fn check_placeholder_error(input: &str, e: &PlaceholderError) -> Result<(), TestCaseError> {
    let text = e.to_string();
    match e {
        PlaceholderError::UnknownVariable(n) => {
            prop_assert!(input.contains(n.as_str()));
            prop_assert!(text.contains(&format!("`${{{n}}}`")), "{text}");
        }
        PlaceholderError::UnsetEnv(n) => {
            prop_assert!(input.contains(&format!("env:{n}")), "{text}");
            prop_assert!(text.contains(&format!("`${{env:{n}}}`")), "{text}");
        }
        PlaceholderError::EnvNotAllowed(n, _) => {
            prop_assert!(input.contains(&format!("env:{n}")), "{text}");
            prop_assert!(text.contains("[manifest] allowed_env"), "{text}");
        }
        PlaceholderError::Unterminated(start) => {
            prop_assert!(
                start.starts_with("${") && input.contains(start.as_str()),
                "{text}"
            );
        }
        PlaceholderError::File(p, _) => {
            prop_assert!(input.contains(&format!("file:{p}")), "{text}");
        }
        PlaceholderError::Empty => prop_assert!(input.contains("${"), "{text}"),
    }
    Ok(())
}

#[test]
fn placeholders_resolve_or_name_the_placeholder() {
    let Placeholders { vars, .. } = &Placeholders::new();
    proptest!(config(cases(10000)), |(input in template())| {
        match vars.resolve_str(&input) {
            Ok(Value::String(out)) => {
                // Resolving is idempotent once the output is escaped: `$${` gives back `${`.
                prop_assert_eq!(vars.resolve_str(&escape(&out)), Ok(Value::String(out.clone())));
                if !out.contains('$') {
                    prop_assert_eq!(vars.resolve_str(&out), Ok(Value::String(out.clone())));
                }
            }
            Ok(other) => {
                // Only a string that is exactly one placeholder keeps the variable's type.
                let inner = input.strip_prefix("${").and_then(|s| s.strip_suffix('}'));
                prop_assert!(
                    inner.is_some_and(|i| !i.contains('}')),
                    "`{}` resolved to the non-string {}", input, other
                );
            }
            Err(e) => check_placeholder_error(&input, &e)?,
        }
        if !input.contains('$') {
            prop_assert_eq!(vars.resolve_str(&input), Ok(Value::String(input.clone())));
        }
        // Escaping any string makes it resolve to itself.
        prop_assert_eq!(vars.resolve_str(&escape(&input)), Ok(Value::String(input.clone())));
        let no_dollar: String = input.chars().filter(|c| *c != '$' && *c != '}').collect();
        prop_assert_eq!(
            vars.resolve_str(&format!("$${{{no_dollar}}}")),
            Ok(Value::String(format!("${{{no_dollar}}}")))
        );
    });
}

#[test]
fn undefined_variables_are_named() {
    let Placeholders { vars, .. } = &Placeholders::new();
    proptest!(config(cases(3000)), |(name in "[A-Za-z_][A-Za-z0-9_.]{0,12}", pre in "[a-z ]{0,4}")| {
        prop_assume!(vars.get(&name).is_none());
        let input = format!("{pre}${{{name}}}.x");
        prop_assert_eq!(
            vars.resolve_str(&input),
            Err(PlaceholderError::UnknownVariable(name.clone()))
        );
        let with_default = format!("{pre}${{{name}:-d}}");
        prop_assert_eq!(vars.resolve_str(&with_default), Ok(Value::String(format!("{pre}d"))));
    });
}

/// Text around a placeholder, or a second one, makes the result a string, whatever the
/// variables' types and even when they are empty.
#[test]
fn only_a_lone_placeholder_keeps_its_type() {
    let Placeholders { vars, .. } = &Placeholders::new();
    let part = prop_oneof![
        prop::sample::select(
            &[
                "${replicas}",
                "${empty}",
                "${flag}",
                "${name}",
                "${nope:-}",
                "${nope:-7}",
                "$${x}",
            ][..]
        )
        .prop_map(str::to_string),
        "[a-z ]{1,3}",
    ];
    proptest!(config(cases(3000)), |(parts in prop::collection::vec(part, 2..5))| {
        let expected: String = parts
            .iter()
            .map(|p| match vars.resolve_str(p) {
                Ok(Value::String(s)) => s,
                Ok(other) => other.to_string(),
                Err(e) => format!("<{e}>"),
            })
            .collect();
        prop_assert_eq!(vars.resolve_str(&parts.concat()), Ok(Value::String(expected)));
    });
}

/// Resolution of a whole JSON tree: errors carry the pointer of the failing string.
#[test]
fn values_resolve_or_point_at_the_string() {
    let Placeholders { vars, .. } = &Placeholders::new();
    proptest!(config(cases(3000)), |(value in arb_json_with(template()))| {
        match vars.resolve_value(&value) {
            Ok(out) => prop_assert!(same_shape(&value, &out), "{} → {}", value, out),
            Err((ptr, e)) => {
                let s = value.pointer(&ptr).and_then(Value::as_str);
                prop_assert!(s.is_some(), "pointer {} does not name a string in {}", ptr, value);
                let s = s.unwrap_or_default();
                prop_assert_eq!(vars.resolve_str(s), Err(e.clone()));
                check_placeholder_error(s, &e)?;
            }
        }
    });
}

/// Same containers and keys; values without `$` unchanged.
fn same_shape(input: &Value, output: &Value) -> bool {
    match (input, output) {
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_shape(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|((k, x), (l, y))| k == l && same_shape(x, y))
        }
        // Resolved: a whole placeholder may take any of the variables' types.
        (Value::String(s), _) if s.contains('$') => true,
        (a, b) => a == b,
    }
}

// ---------------------------------------------------------------------------------------------
// Saved plans
// ---------------------------------------------------------------------------------------------

fn arb_json_with(strings: impl Strategy<Value = String> + 'static) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        strings.prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec(("[a-z$/~.]{0,6}", inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn arb_json() -> impl Strategy<Value = Value> {
    arb_json_with(".{0,12}")
}

fn address() -> impl Strategy<Value = Address> {
    ("[A-Z][A-Za-z]{0,12}", "[^/]{1,6}(/.{0,4})?").prop_map(|(k, n)| Address::new(k, n))
}

fn field_diff() -> impl Strategy<Value = FieldDiff> {
    (
        "(/[a-z0-9~.]{1,6}){0,3}",
        prop::sample::select(&[DiffOp::Add, DiffOp::Remove, DiffOp::Change][..]),
        prop::option::of(arb_json()),
        prop::option::of(arb_json()),
        any::<bool>(),
    )
        .prop_map(|(pointer, op, before, after, sensitive)| FieldDiff {
            path: ofctl::path::display(&pointer),
            pointer,
            op,
            before,
            after,
            sensitive,
        })
}

fn change() -> impl Strategy<Value = Change> {
    let action = prop::sample::select(
        &[
            Action::Create,
            Action::Update,
            Action::Replace,
            Action::Delete,
            Action::Noop,
        ][..],
    );
    let risk = prop::sample::select(&[Risk::Destructive, Risk::Restarts, Risk::Safe][..]);
    (
        (address(), action, risk),
        prop::collection::vec(".{0,20}", 0..3),
        prop::collection::vec(".{0,20}", 0..2),
        prop::option::of(".{0,30}"),
        any::<bool>(),
        prop::collection::vec(field_diff(), 0..4),
        prop::collection::vec(address(), 0..3),
        (
            prop::option::of("[0-9a-f]{32}"),
            prop::option::of("[0-9a-f]{32}"),
        ),
        prop::option::of((".{1,20}", any::<usize>())),
    )
        .prop_map(
            |(
                (address, action, risk),
                reasons,
                notes,
                blocked,
                force,
                diff,
                depends_on,
                (desired_digest, live_fingerprint),
                source,
            )| Change {
                address,
                action,
                risk,
                reasons,
                notes,
                blocked,
                force,
                diff,
                depends_on,
                desired_digest,
                live_fingerprint,
                source: source.map(|(file, line)| Span {
                    file: file.into(),
                    line,
                }),
            },
        )
}

/// A plan as `ofctl plan -o` writes it: consistent summary, current format.
fn plan() -> impl Strategy<Value = Plan> {
    (
        ".{0,30}",
        ".{1,30}",
        prop::option::of(".{1,30}"),
        any::<(bool, bool)>(),
        prop::collection::vec(change(), 0..4),
    )
        .prop_map(
            |(created_at, dir, config, (prune, allow_replace), changes)| Plan {
                format_version: FORMAT_VERSION.into(),
                created_at,
                manifest_dir: dir.into(),
                config_path: config.map(Into::into),
                options: PlanOptions {
                    prune,
                    allow_replace,
                    ..Default::default()
                },
                summary: Summary::of(&changes),
                changes,
            },
        )
}

/// A damaged plan file: text edits, or a field of the JSON replaced or removed.
#[derive(Debug, Clone)]
enum PlanEdit {
    Truncate(Index),
    Delete(Index, Index),
    Insert(Index, String),
    ReplaceNode(Index, Value),
    RemoveKey(Index),
    Version(String),
}

fn plan_edit() -> impl Strategy<Value = PlanEdit> {
    prop_oneof![
        any::<Index>().prop_map(PlanEdit::Truncate),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| PlanEdit::Delete(a, b)),
        (
            any::<Index>(),
            prop_oneof![
                prop::sample::select(
                    &[
                        "\"",
                        "{",
                        "}",
                        "[",
                        "]",
                        ",",
                        ":",
                        "null",
                        "-1",
                        "1e999",
                        "18446744073709551616",
                        "\\u",
                        "\\ud800",
                        "\u{0}",
                        "\u{1F600}"
                    ][..]
                )
                .prop_map(str::to_string),
                ".{0,6}",
            ]
        )
            .prop_map(|(i, s)| PlanEdit::Insert(i, s)),
        (any::<Index>(), arb_json()).prop_map(|(i, v)| PlanEdit::ReplaceNode(i, v)),
        any::<Index>().prop_map(PlanEdit::RemoveKey),
        prop_oneof![
            Just("0".to_string()),
            Just("2".to_string()),
            Just(String::new()),
            ".{0,4}"
        ]
        .prop_map(PlanEdit::Version),
    ]
}

/// Every JSON pointer in `v` (the root included).
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                pointers(item, format!("{at}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                pointers(item, format!("{at}/{}", ofctl::path::escape(k)), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

fn damage(plan: &Plan, edits: &[PlanEdit]) -> String {
    let mut value = serde_json::to_value(plan).expect("plan serializes");
    let mut text_edits = Vec::new();
    for e in edits {
        let mut all = Vec::new();
        pointers(&value, String::new(), &mut all);
        match e {
            PlanEdit::ReplaceNode(i, new) => {
                if let Some(node) = value.pointer_mut(&all[i.index(all.len())]) {
                    *node = new.clone();
                }
            }
            PlanEdit::RemoveKey(i) => {
                let ptr = &all[i.index(all.len())];
                if let Some((parent, key)) = ptr.rsplit_once('/') {
                    let key = key.replace("~1", "/").replace("~0", "~");
                    if let Some(Value::Object(map)) = value.pointer_mut(parent) {
                        map.shift_remove(&key);
                    }
                }
            }
            PlanEdit::Version(v) => {
                if let Some(map) = value.as_object_mut() {
                    map.insert("format_version".into(), json!(v));
                }
            }
            other => text_edits.push(other.clone()),
        }
    }
    let mut text = serde_json::to_string_pretty(&value).expect("value serializes");
    for e in text_edits {
        let boundaries: Vec<usize> = text
            .char_indices()
            .map(|(b, _)| b)
            .chain([text.len()])
            .collect();
        let at = |i: &Index| boundaries[i.index(boundaries.len())];
        match e {
            PlanEdit::Truncate(i) => text.truncate(at(&i)),
            PlanEdit::Delete(a, b) => {
                let (a, b) = (at(&a), at(&b));
                text.replace_range(a.min(b)..a.max(b), "");
            }
            PlanEdit::Insert(i, s) => text.insert_str(at(&i), &s),
            _ => {}
        }
    }
    text
}

/// What a plan-reading error must say: the file, where (for unparseable text) and the fix.
fn check_plan_error(path: &Path, text: &str, e: &PlanFileError) -> Result<(), TestCaseError> {
    let message = e.to_string();
    prop_assert!(
        message.starts_with(&path.display().to_string()),
        "does not start with the file: {message}"
    );
    prop_assert!(
        message.contains("`ofctl plan -o FILE`"),
        "no fix in: {message}"
    );
    if let PlanFileError::Invalid { line, column, .. } = e {
        let lines = text.matches('\n').count() + 1;
        prop_assert!((1..=lines).contains(line) && *column >= 1, "{message}");
        let position = format!("{}:{line}:{column}: ", path.display());
        prop_assert!(message.starts_with(&position), "{message}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(cases(500)))]

    /// Every plan `ofctl plan -o` can write reads back identically.
    #[test]
    fn saved_plans_round_trip(plan in plan()) {
        let text = serde_json::to_string_pretty(&plan).expect("serializes");
        let back = Plan::from_saved(Path::new("p.json"), &text);
        prop_assert!(back.is_ok(), "{:?}\n{}", back, text);
        prop_assert_eq!(back.ok(), Some(plan));
    }
}

proptest! {
    #![proptest_config(config(cases(1000)))]

    /// Damaged plan files are rejected with the file named, or read as a plan that round-trips
    /// and that the apply path can use without panicking.
    #[test]
    fn damaged_plans_are_rejected_or_usable(
        plan in plan(),
        edits in prop::collection::vec(plan_edit(), 1..4),
    ) {
        let path = Path::new("saved/p.json");
        let text = damage(&plan, &edits);
        match Plan::from_saved(path, &text) {
            Ok(read) => {
                let again = serde_json::to_string(&read).expect("serializes");
                prop_assert_eq!(Plan::from_saved(path, &again).ok(), Some(read.clone()));
                // What `ofctl apply PLANFILE` does with it before touching live state.
                let _ = read.has_blocked();
                let _ = read.pending().count();
                let _ = read.summary.pending();
            }
            Err(e) => check_plan_error(path, &text, &e)?,
        }
    }
}

proptest! {
    #![proptest_config(config(cases(2000)))]

    /// Arbitrary text as a plan file.
    #[test]
    fn arbitrary_text_is_not_a_plan(text in prop_oneof![
        any::<String>(),
        "[\\[\\]{}\":,0-9a-z_ \n]{0,80}",
    ]) {
        let path = Path::new("p.json");
        if let Err(e) = Plan::from_saved(path, &text) {
            check_plan_error(path, &text, &e)?;
        }
    }
}

/// The manifest folder and config the binary runs against; NATS is unreachable, so nothing can
/// be applied, and a plan file that reads fine fails later (after seconds of retries: those are
/// covered in-process above, not here).
fn apply_fixture(resources: bool) -> ManifestDir {
    let m = ManifestDir::new();
    m.write("ofctl.toml", "[nats]\nurl = \"nats://127.0.0.1:1\"\n");
    if resources {
        m.write("s.yaml", &support::stream("A", "  subjects: [a.>]"));
    }
    m
}

fn sample_plan(m: &ManifestDir) -> Plan {
    let change = Change {
        address: Address::new("NatsStream", "A"),
        action: Action::Create,
        risk: Risk::Safe,
        reasons: Vec::new(),
        notes: Vec::new(),
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
        depends_on: Vec::new(),
        desired_digest: Some("0".repeat(32)),
        live_fingerprint: None,
        source: Some(Span {
            file: m.path().join("s.yaml"),
            line: 1,
        }),
    };
    Plan {
        format_version: FORMAT_VERSION.into(),
        created_at: "2025-01-01T00:00:00Z".into(),
        manifest_dir: m.path().to_path_buf(),
        config_path: Some(m.path().join("ofctl.toml")),
        options: PlanOptions::default(),
        summary: Summary::of(std::slice::from_ref(&change)),
        changes: vec![change],
    }
}

/// Runs `ofctl apply FILE` and checks it fails cleanly, naming the file.
fn apply_rejects(m: &ManifestDir, text: &[u8], expected: &[&str]) -> Result<(), TestCaseError> {
    let path = m.path().join("saved.plan.json");
    std::fs::write(&path, text).expect("write plan");
    let run = ofctl(&["apply", path.to_str().expect("utf-8 path")], &[]);
    prop_assert_eq!(run.code, 1, "{:?}", run);
    prop_assert!(!run.stderr.contains("panicked"), "{:?}", run);
    prop_assert!(
        run.stderr.contains(&path.display().to_string()),
        "stderr does not name the plan file: {:?}",
        run
    );
    for e in expected {
        prop_assert!(run.stderr.contains(e), "expected `{}`: {:?}", e, run);
    }
    Ok(())
}

#[test]
fn apply_names_the_problem_with_a_plan_file() -> Result<(), TestCaseError> {
    let m = apply_fixture(true);
    let plan = sample_plan(&m);
    let good = serde_json::to_string_pretty(&plan).expect("serializes");
    apply_rejects(&m, b"", &["saved.plan.json:1:1: is not an ofctl plan file"])?;
    apply_rejects(&m, &[0xff, 0xfe, b'{'], &["cannot read plan file"])?;
    apply_rejects(&m, b"[]", &["is not an ofctl plan file"])?;
    apply_rejects(
        &m,
        &good.as_bytes()[..good.len() / 2],
        &["is not an ofctl plan file"],
    )?;
    let mut v = serde_json::to_value(&plan).expect("value");
    v["format_version"] = json!("2");
    apply_rejects(
        &m,
        v.to_string().as_bytes(),
        &["plan format 2", "reads format 1"],
    )?;
    let missing = m.path().join("nope.json");
    let run = ofctl(&["apply", missing.to_str().expect("utf-8")], &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("cannot read plan file"), "{run:?}");
    Ok(())
}

/// A plan whose summary was edited is refused before it is trusted (with no resources the
/// fresh plan is empty, so nothing else would stop it).
#[test]
fn apply_refuses_an_edited_summary() -> Result<(), TestCaseError> {
    let m = apply_fixture(false);
    let mut plan = sample_plan(&m);
    plan.changes.clear();
    plan.summary = Summary {
        create: usize::MAX,
        update: 1,
        ..Summary::default()
    };
    apply_rejects(
        &m,
        serde_json::to_string(&plan).expect("json").as_bytes(),
        &["the summary does not match the changes"],
    )
}

proptest! {
    #![proptest_config(config(cases(1000) / 50))]

    /// The real binary on damaged plan files that the reader rejects.
    #[test]
    fn apply_rejects_damaged_plan_files(edits in prop::collection::vec(plan_edit(), 1..4)) {
        let m = apply_fixture(true);
        let plan = sample_plan(&m);
        let text = damage(&plan, &edits);
        let path = m.path().join("saved.plan.json");
        let rejection = Plan::from_saved(&path, &text);
        prop_assume!(rejection.is_err());
        apply_rejects(&m, text.as_bytes(), &[])?;
    }
}
