//! Loading a manifest folder: YAML documents → validated, interpolated [`Resource`]s.

pub mod schema;
pub mod yaml;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::interpolate::Variables;
use crate::resource::{Address, Resource, Span};
use yaml::{Document, Position};

pub const API_VERSION: &str = "ofctl.openframe.io/v1";

/// One problem in the manifest, pointing at the file, line and field.
#[derive(Debug, Clone)]
pub struct ManifestError {
    pub file: PathBuf,
    pub position: Position,
    /// Human field path, e.g. `spec.subjects[0]`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: ",
            self.file.display(),
            self.position.line,
            self.position.column
        )?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found; loading reports them all rather than stopping at the first.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Manifest {
    pub dir: PathBuf,
    pub resources: Vec<Resource>,
}

impl Manifest {
    pub fn get(&self, address: &Address) -> Option<&Resource> {
        self.resources.iter().find(|r| &r.address == address)
    }
}

/// The YAML files of a manifest folder, sorted, skipping hidden entries.
fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| ManifestError {
            file: d.clone(),
            position: Position::default(),
            field: None,
            message: format!("cannot read manifest folder: {e}"),
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if hidden {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Loads and validates every resource under `dir`. The manifest reads files only inside `dir`
/// (`${file:...}`, `specFile:`), and the environment only as `variables` allow.
pub fn load(dir: &Path, variables: &Variables) -> Result<Manifest, ManifestErrors> {
    let variables = &variables.confined_to(dir);
    if !dir.is_dir() {
        return Err(ManifestErrors(vec![ManifestError {
            file: dir.to_path_buf(),
            position: Position::default(),
            field: None,
            message: "manifest folder does not exist (pass the folder with -f DIR)".into(),
        }]));
    }
    let files = manifest_files(dir).map_err(|e| ManifestErrors(vec![e]))?;
    let mut errors = Vec::new();
    let mut resources: Vec<Resource> = Vec::new();
    let mut seen: HashMap<Address, Span> = HashMap::new();
    let mut expanded: Vec<(Resource, PathBuf, Position)> = Vec::new();
    for file in &files {
        let text = match read_text(file) {
            Ok(t) => t,
            Err(ReadError::Io(e)) => {
                errors.push(error_at(
                    file,
                    FILE_START,
                    None,
                    format!("cannot read: {e}"),
                ));
                continue;
            }
            Err(ReadError::NotUtf8(position)) => {
                errors.push(error_at(file, position, None, NOT_UTF8.into()));
                continue;
            }
        };
        let docs = match yaml::parse_documents(&text) {
            Ok(d) => d,
            Err(e) => {
                errors.push(error_at(
                    file,
                    e.position,
                    None,
                    format!("invalid YAML: {}", e.message),
                ));
                continue;
            }
        };
        for doc in docs {
            if doc.value.is_null() {
                continue;
            }
            let loaded = load_document(file, &doc, variables).and_then(|resource| {
                let extra = expand(file, &doc, &resource)?;
                Ok((resource, extra))
            });
            match loaded {
                Ok((resource, extra)) => {
                    if let Some(first) = seen.get(&resource.address) {
                        errors.push(error_at(
                            file,
                            doc.position_of("/metadata/name"),
                            Some("metadata.name".into()),
                            format!(
                                "duplicate resource {}: already declared at {first}",
                                resource.address
                            ),
                        ));
                    } else {
                        seen.insert(resource.address.clone(), resource.source.clone());
                        resources.push(resource);
                    }
                    let at = doc.position_of("/metadata/name");
                    expanded.extend(extra.into_iter().map(|r| (r, file.clone(), at)));
                }
                Err(mut errs) => errors.append(&mut errs),
            }
        }
    }
    // Resources that others stand for (a tool's connectors) join once every file is read: the
    // same object may also be declared on its own, which is fine only when both say the same.
    for (extra, file, at) in expanded {
        match resources.iter_mut().find(|r| r.address == extra.address) {
            Some(declared) if declared.spec.get("config") == extra.spec.get("config") => {
                for dep in extra.depends_on {
                    if !declared.depends_on.contains(&dep) {
                        declared.depends_on.push(dep);
                    }
                }
            }
            Some(declared) => errors.push(error_at(
                &file,
                at,
                Some("spec".into()),
                format!(
                    "{} comes from {}'s connectors and is also declared at {} with a different config; keep one source",
                    extra.address,
                    extra.depends_on.first().map(ToString::to_string).unwrap_or_default(),
                    declared.source
                ),
            )),
            None => {
                seen.insert(extra.address.clone(), extra.source.clone());
                resources.push(extra);
            }
        }
    }
    for r in &resources {
        for dep in &r.depends_on {
            if !seen.contains_key(dep) {
                errors.push(ManifestError {
                    file: r.source.file.clone(),
                    position: Position {
                        line: r.source.line,
                        column: 1,
                    },
                    field: Some("metadata.dependsOn".into()),
                    message: format!(
                        "{} depends on {dep}, which the manifest does not declare",
                        r.address
                    ),
                });
            }
        }
    }
    // In file and line order, as an editor lists them (validation reports by field).
    errors.sort_by(|a, b| {
        (&a.file, a.position.line, a.position.column).cmp(&(
            &b.file,
            b.position.line,
            b.position.column,
        ))
    });
    if errors.is_empty() {
        Ok(Manifest {
            dir: dir.to_path_buf(),
            resources,
        })
    } else {
        Err(ManifestErrors(errors))
    }
}

/// Where errors about a whole file point.
const FILE_START: Position = Position { line: 1, column: 1 };

const NOT_UTF8: &str = "not UTF-8 text (invalid byte here); save the file as UTF-8";

enum ReadError {
    Io(std::io::Error),
    /// Where the first invalid byte is.
    NotUtf8(Position),
}

/// Reads a manifest or spec file as text.
fn read_text(path: &Path) -> Result<String, ReadError> {
    let bytes = std::fs::read(path).map_err(ReadError::Io)?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let before = String::from_utf8_lossy(valid);
        let last_line = before.rsplit('\n').next().unwrap_or_default();
        ReadError::NotUtf8(Position {
            line: before.matches('\n').count() + 1,
            column: last_line.chars().count() + 1,
        })
    })
}

fn error_at(
    file: &Path,
    position: Position,
    field: Option<String>,
    message: String,
) -> ManifestError {
    ManifestError {
        file: file.to_path_buf(),
        position,
        field,
        message,
    }
}

fn load_document(
    file: &Path,
    doc: &Document,
    variables: &Variables,
) -> Result<Resource, Vec<ManifestError>> {
    let at = |ptr: &str, message: String| {
        vec![error_at(
            file,
            doc.position_of(ptr),
            (!ptr.is_empty()).then(|| crate::path::display(ptr)),
            message,
        )]
    };
    let Some(obj) = doc.value.as_object() else {
        return Err(at(
            "",
            "a manifest document must be a mapping with apiVersion, kind, metadata and spec".into(),
        ));
    };
    let kind = match obj.get("kind") {
        Some(Value::String(k)) => k.clone(),
        Some(_) => return Err(at("/kind", "must be a string".into())),
        None => return Err(at("", "missing `kind`".into())),
    };
    let Some(info) = crate::registry::kind_info(&kind) else {
        let known: Vec<_> = crate::registry::all_kinds()
            .iter()
            .map(|k| k.kind)
            .collect();
        return Err(at(
            "/kind",
            format!("unknown kind `{kind}`; known kinds: {}", known.join(", ")),
        ));
    };
    let envelope_errors = schema::validate_envelope(&doc.value);
    if !envelope_errors.is_empty() {
        return Err(envelope_errors
            .into_iter()
            .map(|(ptr, msg)| at(&ptr, msg).remove(0))
            .collect());
    }
    // Names may be placeholders too: the platform made some object names configurable
    // (Kafka topics that Pinot tables read), and a dependency must name the resolved object.
    let name = match variables.resolve_str(obj["metadata"]["name"].as_str().unwrap_or_default()) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(e) => return Err(at("/metadata/name", e.to_string())),
    };
    // The schema saw the placeholder, not the value: `${prefix}` with an empty prefix would
    // make an address (`Kind/`) that no system accepts and no saved plan can read back.
    if name.is_empty() {
        return Err(at(
            "/metadata/name",
            "resolves to an empty name; give the variable a value or write the name out".into(),
        ));
    }
    let metadata = &obj["metadata"];
    let string_map = |key: &str| -> BTreeMap<String, String> {
        metadata
            .get(key)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let depends_on = metadata
        .get("dependsOn")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().and_then(Address::parse))
                .collect()
        })
        .unwrap_or_default();

    // The spec: inline (positions from the YAML) or from a raw JSON file next to it.
    let (raw_spec, spec_doc, spec_file, spec_prefix, interpolate) = match obj.get("specFile") {
        Some(Value::String(rel)) => {
            let base = file.parent().unwrap_or(Path::new("."));
            // A missing file is the YAML's mistake, so that is where the error points.
            let path =
                crate::interpolate::checked_file(variables.root(), base, rel).map_err(|e| {
                    let hint = match e {
                        crate::interpolate::FileError::Io { .. } => {
                            "; the path is relative to this YAML file"
                        }
                        _ => "",
                    };
                    at("/specFile", format!("spec file `{rel}`: {e}{hint}"))
                })?;
            let text = match read_text(&path) {
                Ok(text) => text,
                Err(ReadError::Io(e)) => {
                    return Err(at(
                        "/specFile",
                        format!(
                            "cannot read spec file {}: {e}; the path is relative to this YAML file",
                            path.display()
                        ),
                    ))
                }
                Err(ReadError::NotUtf8(position)) => {
                    return Err(vec![error_at(&path, position, None, NOT_UTF8.into())])
                }
            };
            let (value, positions) = parse_spec_file(&path, &text).map_err(|e| vec![e])?;
            (
                value,
                positions,
                path,
                String::new(),
                info.interpolate_spec_file,
            )
        }
        _ => (
            obj.get("spec").cloned().unwrap_or(Value::Null),
            doc.clone(),
            file.to_path_buf(),
            "/spec".to_string(),
            true,
        ),
    };
    let spec_at = |ptr: &str, message: String| {
        let full = format!("{spec_prefix}{ptr}");
        error_at(
            &spec_file,
            spec_doc.position_of(&full),
            Some(crate::path::display(&format!("/spec{ptr}"))),
            message,
        )
    };
    let base = spec_file.parent().unwrap_or(Path::new("."));
    let spec = if interpolate {
        variables
            .with_base_dir(base)
            .resolve_value(&raw_spec)
            .map_err(|(ptr, e)| vec![spec_at(&ptr, e.to_string())])?
    } else {
        raw_spec
    };
    // Secrets resolved from `${env:...}` are registered before anything can print them.
    crate::redact::register_sensitive(&spec, &|ptr| info.is_sensitive(ptr));
    let mut spec_errors = schema::validate_spec(info.kind, &spec);
    if spec_errors.is_empty() {
        spec_errors = crate::registry::check_spec(info.kind, &name, &spec);
    }
    if !spec_errors.is_empty() {
        return Err(spec_errors
            .into_iter()
            .map(|(ptr, msg)| spec_at(&ptr, msg))
            .collect());
    }
    Ok(Resource {
        address: Address::new(kind, name),
        labels: string_map("labels"),
        annotations: string_map("annotations"),
        spec,
        depends_on,
        source: Span {
            file: file.to_path_buf(),
            line: doc.start.line.max(1),
        },
    })
}

/// The resources a loaded one stands for (a tool's connectors), each validated against its
/// kind's schema like a declared one. Errors point at the declaring document.
fn expand(
    file: &Path,
    doc: &Document,
    resource: &Resource,
) -> Result<Vec<Resource>, Vec<ManifestError>> {
    let at = |ptr: &str, message: String| ManifestError {
        file: file.to_path_buf(),
        position: doc.position_of(&format!("/spec{ptr}")),
        field: Some(crate::path::display(&format!("/spec{ptr}"))),
        message: format!("{}: {message}", resource.address),
    };
    let extra = crate::registry::expand(resource).map_err(|(ptr, msg)| vec![at(&ptr, msg)])?;
    let mut errors = Vec::new();
    for r in &extra {
        for (ptr, msg) in schema::validate_spec(&r.address.kind, &r.spec) {
            errors.push(at("", format!("connector {}: {ptr}: {msg}", r.address)));
        }
    }
    if errors.is_empty() {
        Ok(extra)
    } else {
        Err(errors)
    }
}

/// Parses a raw JSON spec file strictly, keeping positions for later errors.
fn parse_spec_file(path: &Path, text: &str) -> Result<(Value, Document), ManifestError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        error_at(
            path,
            Position {
                line: e.line().max(1),
                column: e.column().max(1),
            },
            None,
            format!("invalid JSON: {e}"),
        )
    })?;
    // JSON is YAML, so the YAML loader recovers positions; a file that is valid JSON but trips
    // the YAML parser still loads, only with coarser positions.
    let doc = yaml::parse_documents(text)
        .ok()
        .and_then(|mut docs| docs.pop())
        .map(|d| Document {
            value: value.clone(),
            ..d
        })
        .unwrap_or(Document {
            value: value.clone(),
            positions: HashMap::new(),
            start: Position { line: 1, column: 1 },
        });
    Ok((value, doc))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "apiVersion: ofctl.openframe.io/v1\nkind: NatsStream\nmetadata: {name: A}\n";

    fn load_errors(files: &[(&str, &[u8])]) -> (tempfile::TempDir, Vec<ManifestError>) {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let errors = load(dir.path(), &Variables::new()).unwrap_err().0;
        (dir, errors)
    }

    #[test]
    fn a_name_that_resolves_to_nothing_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let doc = "apiVersion: ofctl.openframe.io/v1\nkind: NatsStream\nmetadata:\n  name: \"${prefix}\"\nspec: {}\n";
        std::fs::write(dir.path().join("a.yaml"), doc).unwrap();
        let mut vars = Variables::new();
        vars.insert("prefix", serde_json::json!(""));
        let errors = load(dir.path(), &vars).unwrap_err().0;
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].position.line, 4);
        assert_eq!(errors[0].field.as_deref(), Some("metadata.name"));
        assert!(errors[0].message.contains("empty name"), "{}", errors[0]);
    }

    #[test]
    fn a_missing_spec_file_is_reported_where_it_is_named() {
        let doc = format!("{DOC}specFile: specs/a.json\n");
        let (dir, errors) = load_errors(&[("a.yaml", doc.as_bytes())]);
        assert_eq!(errors.len(), 1);
        let e = &errors[0];
        assert_eq!(e.file, dir.path().join("a.yaml"));
        assert_eq!((e.position.line, e.field.as_deref()), (4, Some("specFile")));
        assert!(e.message.contains("specs/a.json"), "{e}");
        assert!(e.message.contains("relative to this YAML file"), "{e}");
    }

    #[test]
    fn non_utf8_files_point_at_the_first_bad_byte() {
        let (dir, errors) = load_errors(&[
            ("a.yaml", b"a: 1\nb: \"caf\xe9\"\n"),
            ("b.yaml", format!("{DOC}specFile: b.json\n").as_bytes()),
            ("b.json", b"{\"subjects\": [\"\xff\"]}"),
        ]);
        let at: Vec<_> = errors
            .iter()
            .map(|e| (e.file.clone(), e.position.line, e.position.column))
            .collect();
        assert_eq!(
            at,
            vec![
                (dir.path().join("a.yaml"), 2, 8),
                (dir.path().join("b.json"), 1, 16)
            ]
        );
        assert!(errors[0].message.contains("save the file as UTF-8"));
    }

    #[test]
    fn json_errors_at_a_line_start_have_a_column() {
        let (_dir, errors) = load_errors(&[
            ("b.yaml", format!("{DOC}specFile: b.json\n").as_bytes()),
            ("b.json", b"{\"subjects\": [\"a\"]\n"),
        ]);
        assert_eq!(errors[0].position, Position { line: 2, column: 1 });
    }
}
