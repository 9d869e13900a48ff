//! `${...}` placeholder resolution.
//!
//! Forms: `${name}` (a variable), `${env:NAME}` (the process environment), either with a
//! `:-default` suffix; `${file:PATH}` (a file's content, relative to the manifest file, taken
//! verbatim: a script body); and `$${` for a literal `${`. Strings are resolved whole: a value that is
//! exactly one placeholder keeps its JSON type when the variable is typed (TOML numbers stay
//! numbers), otherwise the result is a string.

use std::collections::BTreeMap;

use serde_json::Value;

/// Where placeholder values come from.
#[derive(Debug, Clone, Default)]
pub struct Variables {
    values: BTreeMap<String, Value>,
    /// Folder `${file:...}` paths are relative to.
    base_dir: Option<std::path::PathBuf>,
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
    #[error("`${{file:{0}}}`: cannot read {1}")]
    File(String, String),
}

impl Variables {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: impl Into<String>, value: Value) {
        self.values.insert(name.into(), value);
    }

    /// The same variables, with `${file:...}` resolved relative to `dir`.
    pub fn with_base_dir(&self, dir: &std::path::Path) -> Variables {
        Variables {
            values: self.values.clone(),
            base_dir: Some(dir.to_path_buf()),
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
            let path = match &self.base_dir {
                Some(dir) => dir.join(rel),
                None => std::path::PathBuf::from(rel),
            };
            return std::fs::read_to_string(&path)
                .map(Value::String)
                .map_err(|e| {
                    PlaceholderError::File(rel.to_string(), format!("{}: {e}", path.display()))
                });
        }
        if let Some(env_name) = name.strip_prefix("env:") {
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
