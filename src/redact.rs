//! Secret hygiene: every secret value ofctl resolves is registered here, and every byte ofctl
//! prints (plans, reports, logs, errors) passes through [`redact`] first.

use std::borrow::Cow;
use std::sync::RwLock;

pub const MASK: &str = "(sensitive)";

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Remembers a secret so it is masked wherever it would be printed. Very short values are
/// ignored: masking every `1` or `yes` in the output would make it unreadable and hide nothing.
pub fn register(secret: &str) {
    if secret.len() < 4 {
        return;
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| s == secret) {
        secrets.push(secret.to_string());
        // Longest first, so a secret containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Registers the password inside a URI such as `mongodb://user:pass@host/db`.
pub fn register_uri_credentials(uri: &str) {
    if let Some((_, rest)) = uri.split_once("://") {
        if let Some((userinfo, _)) = rest.split_once('@') {
            if let Some((_, password)) = userinfo.split_once(':') {
                register(password);
                register(uri);
            }
        }
    }
}

/// Registers every value in `value` that sits at (or under) a pointer `is_sensitive` accepts,
/// so a spec's secrets are masked even where a server echoes them in an error message.
pub fn register_sensitive(value: &serde_json::Value, is_sensitive: &dyn Fn(&str) -> bool) {
    fn walk(value: &serde_json::Value, ptr: &mut String, secret: bool, f: &dyn Fn(&str) -> bool) {
        use serde_json::Value;
        let secret = secret || (!ptr.is_empty() && f(ptr));
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let len = ptr.len();
                    ptr.push('/');
                    ptr.push_str(&crate::path::escape(k));
                    walk(v, ptr, secret, f);
                    ptr.truncate(len);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    let len = ptr.len();
                    ptr.push_str(&format!("/{i}"));
                    walk(v, ptr, secret, f);
                    ptr.truncate(len);
                }
            }
            Value::String(s) if secret => {
                register(s);
                register_uri_credentials(s);
            }
            Value::Number(n) if secret => register(&n.to_string()),
            _ => {}
        }
    }
    walk(value, &mut String::new(), false, is_sensitive);
}

pub fn redact(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in secrets.iter() {
        out = out.replace(s.as_str(), MASK);
    }
    Cow::Owned(out)
}

/// Masks secrets in every string of a JSON value. JSON output is redacted this way, before it
/// is serialized: escaping turns a secret holding `"` or `\` into text that [`redact`] would
/// not find.
pub fn redact_value(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) => {
            if let Cow::Owned(masked) = redact(s) {
                *s = masked;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_value),
        Value::Object(map) => map.values_mut().for_each(redact_value),
        _ => {}
    }
}

/// `value` as pretty JSON with every secret masked (see [`redact_value`]).
pub fn to_json(value: &impl serde::Serialize) -> serde_json::Result<String> {
    let mut value = serde_json::to_value(value)?;
    redact_value(&mut value);
    serde_json::to_string_pretty(&value)
}

/// A `tracing` writer that masks secrets before they reach stderr.
pub struct RedactingWriter;

impl std::io::Write for RedactingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// A `tracing` writer for JSON lines (`--log-format json`): each line's strings are masked
/// before it is serialized again, so a secret holding `"` or `\` is masked too (see
/// [`redact_value`]). A line that is not JSON is masked as text.
pub struct RedactingJsonWriter;

impl RedactingJsonWriter {
    fn mask(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for line in text.split_inclusive('\n') {
            let body = line.trim_end_matches('\n');
            match serde_json::from_str::<serde_json::Value>(body) {
                Ok(mut value) => {
                    redact_value(&mut value);
                    out.push_str(&value.to_string());
                    out.push_str(&line[body.len()..]);
                }
                Err(_) => out.push_str(&redact(line)),
            }
        }
        out
    }
}

impl std::io::Write for RedactingJsonWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = Self::mask(&String::from_utf8_lossy(buf));
        std::io::stderr().write_all(text.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_registered_secrets_and_uri_passwords() {
        register("s3cr3t-value-1");
        register_uri_credentials("mongodb://admin:hunter2-pw@db:27017/x");
        let out = redact("a s3cr3t-value-1 b mongodb://admin:hunter2-pw@db:27017/x c hunter2-pw");
        assert!(!out.contains("s3cr3t"));
        assert!(!out.contains("hunter2"));
        assert_eq!(redact("nothing here"), "nothing here");
    }

    #[test]
    fn json_is_redacted_before_escaping() {
        let secret = "json\"quo\\ted-pw";
        register(secret);
        let value = serde_json::json!({"error": format!("refused {{password={secret}}}")});
        let text = serde_json::to_string(&value).unwrap();
        assert!(
            redact(&text).contains("quo"),
            "escaped: text redaction misses it"
        );
        let json = to_json(&value).unwrap();
        assert!(!json.contains("quo"), "{json}");
        assert!(json.contains("password=(sensitive)"), "{json}");
    }

    #[test]
    fn json_log_lines_are_masked_before_escaping() {
        let secret = "log\"quo\\ted-pw";
        register(secret);
        let line = serde_json::json!({"fields": {"message": format!("auth {secret} refused")}});
        let out = RedactingJsonWriter::mask(&format!("{line}\nplain {secret}\n"));
        assert_eq!(
            out,
            "{\"fields\":{\"message\":\"auth (sensitive) refused\"}}\nplain (sensitive)\n"
        );
    }

    #[test]
    fn registers_values_at_sensitive_pointers_only() {
        let spec = serde_json::json!({"config": {
            "database.password": "pw-at-a-sensitive-key",
            "database.user": "user-not-secret",
            "creds": {"nested": "nested-under-secret"}
        }});
        register_sensitive(&spec, &|p| p.ends_with("password") || p == "/config/creds");
        let out = redact("pw-at-a-sensitive-key user-not-secret nested-under-secret");
        assert_eq!(out, "(sensitive) user-not-secret (sensitive)");
    }
}
