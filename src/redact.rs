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
///
/// Under a secret object (a tool's `credentials`), a value whose own key only describes the
/// secret (`username`, `type`, `keyName`: see [`describes_a_secret`]) is not registered: it is
/// still masked where the spec is shown, but a user name such as `tactical` or a header name
/// such as `X-API-KEY` registered as a secret would be masked in every line ofctl prints.
pub fn register_sensitive(value: &serde_json::Value, is_sensitive: &dyn Fn(&str) -> bool) {
    fn walk(
        value: &serde_json::Value,
        key: &str,
        ptr: &mut String,
        inherited: bool,
        f: &dyn Fn(&str) -> bool,
    ) {
        use serde_json::Value;
        let own = !ptr.is_empty() && f(ptr);
        let secret = inherited || own;
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let len = ptr.len();
                    ptr.push('/');
                    ptr.push_str(&crate::path::escape(k));
                    walk(v, k, ptr, secret, f);
                    ptr.truncate(len);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    let len = ptr.len();
                    ptr.push_str(&format!("/{i}"));
                    walk(v, key, ptr, secret, f);
                    ptr.truncate(len);
                }
            }
            _ if !secret || (describes_a_secret(key) && !is_secret_key(key)) => {}
            Value::String(s) => {
                register(s);
                register_uri_credentials(s);
            }
            Value::Number(n) => register(&n.to_string()),
            _ => {}
        }
    }
    walk(value, "", &mut String::new(), false, is_sensitive);
}

/// Whether a key inside a secret object names what the secret is rather than holding it: an
/// identifier or name (`keyName`, `clientId`, see [`names_an_identifier`]), the user it belongs
/// to (`username`, `user`, `login`: Debezium's `database.user` is not a secret either), or
/// its type.
fn describes_a_secret(key: &str) -> bool {
    names_an_identifier(key.as_bytes())
        || ["user", "username", "login", "type", "kind"]
            .iter()
            .any(|k| key.eq_ignore_ascii_case(k))
}

/// `text` with every registered secret and every password inside a URL masked.
pub fn redact(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| text.contains(s.as_str())) {
        return mask_inline_secrets(text);
    }
    let mut out = text.to_string();
    for s in secrets.iter() {
        out = out.replace(s.as_str(), MASK);
    }
    Cow::Owned(mask_inline_secrets(&out).into_owned())
}

/// Whether a key's last word is `id` or `name` (`token_id`, `tokenId`, `secretName`,
/// `aws.access.key.id`): it names or identifies a secret rather than holding one.
fn names_an_identifier(key: &[u8]) -> bool {
    let last = key
        .rsplit(|b| is_key_separator(*b))
        .next()
        .unwrap_or_default();
    let camel_tail = |suffix: &[u8]| {
        last.len() > suffix.len()
            && last.ends_with(suffix)
            && last[last.len() - suffix.len() - 1].is_ascii_lowercase()
    };
    ["id", "ids", "name", "names"]
        .iter()
        .any(|w| last.eq_ignore_ascii_case(w.as_bytes()))
        || [&b"Id"[..], b"ID", b"Ids", b"IDs", b"Name", b"Names"]
            .iter()
            .any(|s| camel_tail(s))
}

/// Parts of a key name that mark its value secret, whatever the kind. A key matches when,
/// lower-cased and with `.`, `_`, `-` and spaces removed, it contains one of them: `password`
/// covers `ssl.keystore.password` and `database.sslpassword`, `secret` covers
/// `aws.secret.access.key` and `clientSecret`, `token` covers `some.api.token`, `apikey`
/// covers `apiKey`, `api_key` and `X-API-KEY`.
const SECRET_KEY_PARTS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "token",
    "apikey",
    "credential",
    "privatekey",
    "accesskey",
    "authorization",
    "jaasconfig",
    "basicauthuserinfo",
    "connectionstring",
];

/// Key name parts the operator added (`[redact] extra_keys` in ofctl.toml), normalized.
static EXTRA_KEY_PARTS: RwLock<Vec<String>> = RwLock::new(Vec::new());

fn is_key_separator(b: u8) -> bool {
    matches!(b, b'.' | b'_' | b'-' | b' ')
}

/// Adds key name parts to the rule of [`is_secret_key`] (for this process: with several
/// targets, the union of their `[redact] extra_keys`).
pub fn add_secret_keys<'a>(keys: impl IntoIterator<Item = &'a str>) {
    let mut extra = EXTRA_KEY_PARTS.write().unwrap_or_else(|e| e.into_inner());
    for key in keys {
        let part: String = key
            .bytes()
            .filter(|b| !is_key_separator(*b))
            .map(|b| char::from(b.to_ascii_lowercase()))
            .collect();
        if !part.is_empty() && !extra.contains(&part) {
            extra.push(part);
        }
    }
}

/// True when a key of this name holds a secret (see [`SECRET_KEY_PARTS`]). Asked for every
/// node of every spec: keys up to 128 bytes are normalized on the stack.
pub fn is_secret_key(key: &str) -> bool {
    let mut stack = [0u8; 128];
    let mut heap = Vec::new();
    let normalized = key
        .bytes()
        .filter(|b| !is_key_separator(*b))
        .map(|b| b.to_ascii_lowercase());
    let norm: &[u8] = if key.len() <= stack.len() {
        let mut len = 0;
        for b in normalized {
            stack[len] = b;
            len += 1;
        }
        &stack[..len]
    } else {
        heap.extend(normalized);
        &heap
    };
    let contains = |part: &[u8]| norm.windows(part.len()).any(|w| w == part);
    (SECRET_KEY_PARTS.iter().any(|p| contains(p.as_bytes()))
        && !names_an_identifier(key.as_bytes()))
        || EXTRA_KEY_PARTS
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|p| contains(p.as_bytes()))
}

/// Masks secrets written inline anywhere in `text`: the password of a URL's userinfo
/// (`scheme://user:PASS@host`), and the value of every `KEY=VALUE` or JSON `"KEY": "VALUE"`
/// whose key names a secret ([`is_secret_key`]): query strings and JDBC URLs
/// (`jdbc:postgresql://h/db?user=u&password=PASS`, `jdbc:sqlserver://h;password=PASS`), a
/// config map a server echoes in an error (`{database.password=PASS, ...}`), log fields.
pub fn mask_inline_secrets(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    // Byte ranges of secrets.
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let ends_value =
        |b: u8| b.is_ascii_whitespace() || matches!(b, b'"' | b'\'' | b'<' | b'>' | b'`');
    let mut from = 0;
    while let Some(i) = text[from..].find("://") {
        let start = from + i + 3;
        let authority_end = bytes[start..]
            .iter()
            .position(|&b| ends_value(b) || matches!(b, b'/' | b'?' | b'#'))
            .map_or(bytes.len(), |n| start + n);
        let authority = &text[start..authority_end];
        if let Some(at) = authority.rfind('@') {
            if let Some(colon) = authority[..at].find(':') {
                if colon + 1 < at {
                    ranges.push((start + colon + 1, start + at));
                }
            }
        }
        from = start;
    }
    let is_key_byte = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    for (op, &b) in bytes.iter().enumerate() {
        if b != b'=' && b != b':' {
            continue;
        }
        // The key: `KEY=` directly before, or `"KEY":` / `"KEY" :` (JSON).
        let mut key_end = op;
        if b == b':' {
            while key_end > 0 && bytes[key_end - 1] == b' ' {
                key_end -= 1;
            }
            if key_end == 0 || bytes[key_end - 1] != b'"' {
                continue;
            }
            key_end -= 1;
        }
        let key_start = bytes[..key_end]
            .iter()
            .rposition(|&c| !is_key_byte(c))
            .map_or(0, |n| n + 1);
        if key_start == key_end || !is_secret_key(&text[key_start..key_end]) {
            continue;
        }
        let mut start = op + 1;
        if b == b':' {
            while start < bytes.len() && bytes[start] == b' ' {
                start += 1;
            }
            if start >= bytes.len() || bytes[start] != b'"' {
                continue;
            }
        }
        if text[start..].starts_with(MASK) {
            continue;
        }
        let end = match bytes.get(start) {
            // A quoted value, to its closing quote (JSON escapes skipped).
            Some(&q @ (b'"' | b'\'')) => {
                start += 1;
                let mut i = start;
                while i < bytes.len() && bytes[i] != q {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i.min(bytes.len())
            }
            _ => bytes[start..]
                .iter()
                .position(|&c| ends_value(c) || matches!(c, b'&' | b';' | b',' | b')' | b'}'))
                .map_or(bytes.len(), |n| start + n),
        };
        if end > start && !text[start..end].starts_with(MASK) {
            ranges.push((start, end));
        }
    }
    if ranges.is_empty() {
        return Cow::Borrowed(text);
    }
    ranges.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (start, end) in ranges {
        if start < last {
            continue;
        }
        out.push_str(&text[last..start]);
        out.push_str(MASK);
        last = end;
    }
    out.push_str(&text[last..]);
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
    fn secret_key_names() {
        for key in [
            "password",
            "database.password",
            "database.sslpassword",
            "ssl.keystore.password",
            "ssl.truststore.password",
            "aws.secret.access.key",
            "some.api.token",
            "apiKey",
            "api_key",
            "api-key",
            "X-API-KEY",
            "credentials",
            "private_key",
            "privateKey",
            "sasl.jaas.config",
            "producer.override.sasl.jaas.config",
            "clientSecret",
            "passwd",
            "basic.auth.user.info",
            "mongodb.connection.string",
            "stream.kinesis.secretKey",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "database.user",
            "database.hostname",
            "topic.prefix",
            "connector.class",
            "key.converter",
            "primaryKeyColumns",
            "database.allowPublicKeyRetrieval",
            "keyName",
            "token_id",
            "tokenId",
            "secretName",
            "aws.access.key.id",
            "",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
        assert!(!is_secret_key("tenant.vault.ref"));
        add_secret_keys(["Vault.Ref"]);
        assert!(is_secret_key("tenant.vault.ref"));
        assert!(is_secret_key("VAULT_REF"));
    }

    #[test]
    fn inline_secrets_are_masked_in_any_string() {
        let cases = [
            (
                "jdbc:postgresql://db:5432/app?user=x&password=pw1&ssl=true",
                "jdbc:postgresql://db:5432/app?user=x&password=(sensitive)&ssl=true",
            ),
            (
                "jdbc:sqlserver://db;user=x;Password=pw2;encrypt=true",
                "jdbc:sqlserver://db;user=x;Password=(sensitive);encrypt=true",
            ),
            (
                "connect to mongodb://admin:pw3@h1,h2/db failed",
                "connect to mongodb://admin:(sensitive)@h1,h2/db failed",
            ),
            (
                r#"{"u":"redis://:pw4@r:6379/0"}"#,
                r#"{"u":"redis://:(sensitive)@r:6379/0"}"#,
            ),
            ("https://user@host/x", "https://user@host/x"),
            (
                "http://host:8080/p?pwd=pw5",
                "http://host:8080/p?pwd=(sensitive)",
            ),
            ("user=x mode=a:b", "user=x mode=a:b"),
            ("password=(sensitive)", "password=(sensitive)"),
            (
                "Connector config {database.password=pw6, some.api.token=t0k, database.user=u}",
                "Connector config {database.password=(sensitive), some.api.token=(sensitive), database.user=u}",
            ),
            (
                r#"{"ssl.keystore.password": "pw\"7", "user":"u","apiKey":"k8"}"#,
                r#"{"ssl.keystore.password": "(sensitive)", "user":"u","apiKey":"(sensitive)"}"#,
            ),
            (
                "sasl.jaas.config=org.PlainLoginModule required username=\"u\" password=\"p9\";",
                "sasl.jaas.config=(sensitive) required username=\"u\" password=\"(sensitive)\";",
            ),
            ("config.database.password = (sensitive)", "config.database.password = (sensitive)"),
            ("audit: POST -> 200 token_id=default", "audit: POST -> 200 token_id=default"),
        ];
        for (input, masked) in cases {
            assert_eq!(mask_inline_secrets(input), masked, "{input}");
        }
        assert!(matches!(
            mask_inline_secrets("nothing here"),
            Cow::Borrowed(_)
        ));
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

    #[test]
    fn under_a_secret_object_only_the_values_that_hold_the_secret_are_registered() {
        // The shape of the Tactical RMM tool's `credentials` (desired-state/mongo/tools).
        let tool = serde_json::json!({"credentials": {
            "username": "trmm-user-4b1e",
            "password": "trmm-password-4b1e",
            "apiKey": {"key": "trmm-api-key-4b1e", "type": "HEADER-4b1e", "keyName": "X-API-KEY-4b1e"},
            "tokens": ["trmm-token-4b1e"]
        }});
        // Kinds' rule: a pointer is secret when any of its keys names a secret.
        let is_sensitive = |p: &str| p.split('/').skip(1).any(is_secret_key);
        assert!(is_sensitive("/credentials/username"), "the rule under test");
        register_sensitive(&tool, &is_sensitive);
        let out = redact(
            "trmm-user-4b1e HEADER-4b1e X-API-KEY-4b1e | trmm-password-4b1e trmm-api-key-4b1e trmm-token-4b1e",
        );
        assert_eq!(
            out,
            "trmm-user-4b1e HEADER-4b1e X-API-KEY-4b1e | (sensitive) (sensitive) (sensitive)"
        );
    }
}
