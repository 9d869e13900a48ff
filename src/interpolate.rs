//! `${...}` placeholder resolution.
//!
//! Forms: `${name}` (a variable), `${env:NAME}` (the process environment), either with a
//! `:-default` suffix; `${file:PATH}` (a file's content, relative to the manifest file, taken
//! verbatim: a script body); and `$${` for a literal `${`.
//!
//! A manifest is PR content, so what it may read is limited: `${env:NAME}` only names the
//! operator allows ([`DEFAULT_ALLOWED_ENV`] and `[manifest] allowed_env`), `${file:...}` only
//! files inside the manifest folder, at most [`MAX_FILE_BYTES`]. The target config, which the
//! operator owns, resolves with [`Variables::operator`]: any variable. Strings are resolved whole: a value that is
//! exactly one placeholder keeps its JSON type when the variable is typed (TOML numbers stay
//! numbers), otherwise the result is a string.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Environment variables a manifest may read unless the target config allows more.
pub const DEFAULT_ALLOWED_ENV: &str = "OFCTL_*";

/// Largest file a manifest may read through `${file:...}` or `specFile:`.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Which environment variables `${env:NAME}` may read.
#[derive(Debug, Clone, PartialEq)]
enum EnvAccess {
    /// Any (the operator's target config).
    Any,
    /// Names equal to one of these, or starting with one ending in `*` (a manifest).
    Only(Vec<String>),
}

/// Where placeholder values come from.
#[derive(Debug, Clone, PartialEq)]
pub struct Variables {
    /// Shared by clones (a target config is held by its engines and views: one copy a
    /// tenant), copied on the first insert into one of them.
    values: std::sync::Arc<BTreeMap<String, Value>>,
    /// Folder `${file:...}` paths are relative to.
    base_dir: Option<PathBuf>,
    /// Folder `${file:...}` may not leave (the manifest folder), when set.
    root: Option<PathBuf>,
    env: EnvAccess,
}

impl Default for Variables {
    /// A manifest's access: `OFCTL_*` from the environment.
    fn default() -> Self {
        Self {
            values: Default::default(),
            base_dir: None,
            root: None,
            env: EnvAccess::Only(vec![DEFAULT_ALLOWED_ENV.to_string()]),
        }
    }
}

/// Whether `pattern` may be listed in `[manifest] allowed_env`: a variable name, or a
/// non-empty prefix followed by `*`.
pub fn valid_env_pattern(pattern: &str) -> bool {
    let name = pattern.strip_suffix('*').unwrap_or(pattern);
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Why a file cannot be read into the manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("an absolute path; a manifest may only read files inside its folder {}, give a path relative to this file", root.display())]
    Absolute { root: PathBuf },
    #[error("{} is outside the manifest folder {} (through `..` or a symbolic link); a manifest may only read files inside its folder", resolved.display(), root.display())]
    Outside { resolved: PathBuf, root: PathBuf },
    #[error("{} is {bytes} bytes, over the 1 MiB limit ({MAX_FILE_BYTES} bytes) for a file a manifest reads", path.display())]
    TooLarge { path: PathBuf, bytes: u64 },
    #[error("cannot read {}: {message}", path.display())]
    Io { path: PathBuf, message: String },
}

/// `path` with `.` and `..` resolved as written (a leading `..` stays).
fn lexical(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut parts: Vec<Component<'_>> = Vec::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir if matches!(parts.last(), Some(Component::Normal(_))) => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.iter().collect()
}

/// The path `rel` (relative to `base`) names, checked to stay inside `root` once `..` and
/// symbolic links are resolved (when `root` is set), and to be at most [`MAX_FILE_BYTES`].
pub fn checked_file(root: Option<&Path>, base: &Path, rel: &str) -> Result<PathBuf, FileError> {
    let path = base.join(rel);
    let io = |path: &Path, e: std::io::Error| FileError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    if let Some(root) = root {
        if Path::new(rel).is_absolute() {
            return Err(FileError::Absolute {
                root: root.to_path_buf(),
            });
        }
        // `..` first, as written (the file may not even exist), then symbolic links.
        let outside = lexical(&path)
            .strip_prefix(lexical(root))
            .map_or(true, |rest| {
                rest.components()
                    .any(|c| c == std::path::Component::ParentDir)
            });
        if outside {
            return Err(FileError::Outside {
                resolved: lexical(&path),
                root: root.to_path_buf(),
            });
        }
        let resolved = path.canonicalize().map_err(|e| io(&path, e))?;
        let root = root.canonicalize().map_err(|e| io(root, e))?;
        if !resolved.starts_with(&root) {
            return Err(FileError::Outside { resolved, root });
        }
    }
    let bytes = std::fs::metadata(&path).map_err(|e| io(&path, e))?.len();
    if bytes > MAX_FILE_BYTES {
        return Err(FileError::TooLarge { path, bytes });
    }
    Ok(path)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceholderError {
    #[error("unresolved placeholder `${{{0}}}`: no variable `{0}` is defined (set it in ofctl.toml [variables] or pass --var {0}=VALUE)")]
    UnknownVariable(String),
    #[error("unresolved placeholder `${{env:{0}}}`: environment variable `{0}` is not set (set it, or give a default: `${{env:{0}:-VALUE}}`)")]
    UnsetEnv(String),
    #[error("unterminated placeholder starting at `{0}` (missing `}}`; write `$${{` for a literal `${{`)")]
    Unterminated(String),
    #[error(
        "empty placeholder `${{}}` (name a variable, or write `$${{}}` for a literal `${{}}`)"
    )]
    Empty,
    #[error("`${{file:{0}}}`: {1}")]
    File(String, FileError),
    #[error("`${{env:{0}}}`: a manifest may only read environment variables matching {1}; to allow this one, add it to `[manifest] allowed_env` in the target config (ofctl.toml), or set the value as a variable there")]
    EnvNotAllowed(String, String),
}

impl Variables {
    /// Variables for a manifest (see [`Default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Variables for the target config, which may read any environment variable.
    pub fn operator() -> Self {
        Self {
            env: EnvAccess::Any,
            ..Self::default()
        }
    }

    /// The same values with the operator's access (see [`Variables::operator`]).
    pub fn as_operator(&self) -> Variables {
        Variables {
            env: EnvAccess::Any,
            ..self.clone()
        }
    }

    /// Lets `${env:...}` also read these names (`NAME`, or a prefix `NAME_*`).
    pub fn allow_env(&mut self, patterns: impl IntoIterator<Item = String>) {
        if let EnvAccess::Only(allowed) = &mut self.env {
            allowed.extend(patterns);
        }
    }

    /// The same variables, reading `${file:...}` only inside `root` (relative to it, until
    /// [`Variables::with_base_dir`] names the file's own folder).
    pub fn confined_to(&self, root: &Path) -> Variables {
        Variables {
            base_dir: Some(root.to_path_buf()),
            root: Some(root.to_path_buf()),
            ..self.clone()
        }
    }

    /// The folder `${file:...}` may not leave, if any.
    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    fn env_allowed(&self, name: &str) -> Result<(), PlaceholderError> {
        let EnvAccess::Only(patterns) = &self.env else {
            return Ok(());
        };
        let allowed = patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == p,
        });
        if allowed {
            Ok(())
        } else {
            Err(PlaceholderError::EnvNotAllowed(
                name.to_string(),
                patterns.join(", "),
            ))
        }
    }

    pub fn insert(&mut self, name: impl Into<String>, value: Value) {
        std::sync::Arc::make_mut(&mut self.values).insert(name.into(), value);
    }

    /// The same variables, with `${file:...}` resolved relative to `dir`.
    pub fn with_base_dir(&self, dir: &Path) -> Variables {
        Variables {
            base_dir: Some(dir.to_path_buf()),
            ..self.clone()
        }
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.values.keys()
    }

    fn lookup(&self, expr: &str) -> Result<Value, PlaceholderError> {
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n.trim(), Some(d)),
            None => (expr.trim(), None),
        };
        if name.is_empty() {
            return Err(PlaceholderError::Empty);
        }
        if let Some(rel) = name.strip_prefix("file:") {
            let base = self.base_dir.as_deref().unwrap_or(Path::new(""));
            let file = |e| PlaceholderError::File(rel.to_string(), e);
            let path = checked_file(self.root(), base, rel).map_err(file)?;
            return std::fs::read_to_string(&path)
                .map(Value::String)
                .map_err(|e| {
                    file(FileError::Io {
                        path,
                        message: e.to_string(),
                    })
                });
        }
        if let Some(env_name) = name.strip_prefix("env:") {
            self.env_allowed(env_name)?;
            return match std::env::var(env_name) {
                Ok(v) => Ok(Value::String(v)),
                Err(_) => default
                    .map(|d| Value::String(d.to_string()))
                    .ok_or_else(|| PlaceholderError::UnsetEnv(env_name.to_string())),
            };
        }
        match self.values.get(name) {
            Some(v) => Ok(v.clone()),
            None => default
                .map(|d| Value::String(d.to_string()))
                .ok_or_else(|| PlaceholderError::UnknownVariable(name.to_string())),
        }
    }

    /// Resolves the placeholders in one string.
    pub fn resolve_str(&self, input: &str) -> Result<Value, PlaceholderError> {
        let mut out = String::with_capacity(input.len());
        let mut rest = input;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            if let Some(after) = tail.strip_prefix("$${") {
                out.push_str("${");
                rest = after;
            } else if let Some(after) = tail.strip_prefix("${") {
                let end = after
                    .find('}')
                    .ok_or_else(|| PlaceholderError::Unterminated(truncate(tail)))?;
                let value = self.lookup(&after[..end])?;
                // The input is this one placeholder (not one that follows an empty one).
                let whole = tail.len() == input.len() && end + 3 == input.len();
                if whole {
                    return Ok(value);
                }
                match value {
                    Value::String(s) => out.push_str(&s),
                    other => out.push_str(&other.to_string()),
                }
                rest = &after[end + 1..];
            } else {
                out.push('$');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
        Ok(Value::String(out))
    }

    /// Resolves every string in `value`; errors carry the JSON pointer of the failing string.
    pub fn resolve_value(&self, value: &Value) -> Result<Value, (String, PlaceholderError)> {
        self.resolve_at(value, String::new())
    }

    fn resolve_at(&self, value: &Value, ptr: String) -> Result<Value, (String, PlaceholderError)> {
        Ok(match value {
            Value::String(s) if s.contains('$') => self.resolve_str(s).map_err(|e| (ptr, e))?,
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.resolve_at(v, format!("{ptr}/{i}")))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let child = format!("{ptr}/{}", crate::path::escape(k));
                        Ok((k.clone(), self.resolve_at(v, child)?))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            other => other.clone(),
        })
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars() -> Variables {
        let mut v = Variables::new();
        v.insert("name", json!("devices"));
        v.insert("replicas", json!(3));
        v
    }

    #[test]
    fn resolves_whole_and_embedded() {
        let v = vars();
        assert_eq!(v.resolve_str("${replicas}").unwrap(), json!(3));
        assert_eq!(
            v.resolve_str("t-${name}-${replicas}").unwrap(),
            json!("t-devices-3")
        );
        assert_eq!(v.resolve_str("$${literal}").unwrap(), json!("${literal}"));
        assert_eq!(v.resolve_str("cost $5").unwrap(), json!("cost $5"));
        assert_eq!(v.resolve_str("${missing:-dflt}").unwrap(), json!("dflt"));
    }

    #[test]
    fn a_placeholder_after_an_empty_one_is_text() {
        let mut v = vars();
        v.insert("empty", json!(""));
        assert_eq!(v.resolve_str("${empty}${replicas}").unwrap(), json!("3"));
        assert_eq!(v.resolve_str("${nope:-}${replicas}").unwrap(), json!("3"));
    }

    #[test]
    fn file_placeholders_read_relative_to_the_base_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("body.ps1"), "Write-Host ${x}\n").unwrap();
        let v = vars().with_base_dir(dir.path());
        assert_eq!(
            v.resolve_str("${file:body.ps1}").unwrap(),
            json!("Write-Host ${x}\n")
        );
        assert!(matches!(
            v.resolve_str("${file:nope.ps1}"),
            Err(PlaceholderError::File(..))
        ));
    }

    #[test]
    fn file_placeholders_stay_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("x"), "outside").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("m");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("in.txt"), "inside").unwrap();
        std::os::unix::fs::symlink(outside.path().join("x"), root.join("link")).unwrap();
        std::fs::write(root.join("big"), vec![b'a'; MAX_FILE_BYTES as usize + 1]).unwrap();
        let v = vars().confined_to(&root).with_base_dir(&root.join("sub"));
        assert_eq!(v.resolve_str("${file:../in.txt}").unwrap(), json!("inside"));
        let err = |e: &str| v.resolve_str(e).unwrap_err().to_string();
        assert!(err("${file:../../x}").contains("outside the manifest folder"));
        assert!(err("${file:/etc/hostname}").contains("an absolute path"));
        assert!(err("${file:../link}").contains("outside the manifest folder"));
        assert!(err("${file:../big}").contains("1 MiB"));
        let here = vars().confined_to(Path::new("."));
        assert!(here
            .resolve_str("${file:../x}")
            .unwrap_err()
            .to_string()
            .contains("outside the manifest folder"));
        assert!(here
            .resolve_str("${file:Cargo.toml}")
            .unwrap()
            .to_string()
            .contains("[package]"));
    }

    #[test]
    fn manifest_env_reads_only_allowed_names() {
        std::env::set_var("OFCTL_TEST_ALLOWED", "a");
        std::env::set_var("FOO_TEST_ALLOWED", "b");
        let mut v = vars();
        let err = v.resolve_str("${env:FOO_TEST_ALLOWED:-x}").unwrap_err();
        assert!(err.to_string().contains("[manifest] allowed_env"), "{err}");
        assert_eq!(
            v.resolve_str("${env:OFCTL_TEST_ALLOWED}").unwrap(),
            json!("a")
        );
        v.allow_env(["FOO_*".to_string()]);
        assert_eq!(
            v.resolve_str("${env:FOO_TEST_ALLOWED}").unwrap(),
            json!("b")
        );
        assert_eq!(
            Variables::operator()
                .resolve_str("${env:FOO_TEST_ALLOWED}")
                .unwrap(),
            json!("b")
        );
        assert!(valid_env_pattern("FOO_*") && valid_env_pattern("HOME"));
        assert!(!valid_env_pattern("*") && !valid_env_pattern("A B"));
    }

    #[test]
    fn env_placeholders() {
        std::env::set_var("OFCTL_TEST_INTERP", "xyz");
        let v = vars();
        assert_eq!(
            v.resolve_str("a${env:OFCTL_TEST_INTERP}").unwrap(),
            json!("axyz")
        );
        assert_eq!(
            v.resolve_str("${env:OFCTL_TEST_UNSET_VAR}").unwrap_err(),
            PlaceholderError::UnsetEnv("OFCTL_TEST_UNSET_VAR".into())
        );
    }

    #[test]
    fn errors_name_the_placeholder_and_path() {
        let v = vars();
        let err = v
            .resolve_value(&json!({"a": [{"b": "${nope}"}]}))
            .unwrap_err();
        assert_eq!(err.0, "/a/0/b");
        assert!(err.1.to_string().contains("`${nope}`"));
        assert!(matches!(
            v.resolve_str("x ${open").unwrap_err(),
            PlaceholderError::Unterminated(_)
        ));
    }
}
