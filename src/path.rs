//! JSON pointers (RFC 6901) and their human form (`spec.config["database.password"]`).

/// Escapes one key for use in a JSON pointer.
pub fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn unescape(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

/// Renders a JSON pointer as a readable field path.
pub fn display(pointer: &str) -> String {
    let mut out = String::new();
    for raw in pointer.split('/').skip(1) {
        let key = unescape(raw);
        if !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{key}]"));
        } else if key.contains(['.', ' ', '"', '[', ']']) || key.is_empty() {
            out.push_str(&format!("[{}]", serde_json::Value::String(key)));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&key);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_pointers() {
        assert_eq!(display("/spec/subjects/0"), "spec.subjects[0]");
        assert_eq!(
            display("/config/database.password"),
            "config[\"database.password\"]"
        );
        assert_eq!(display("/a~1b/c"), "a/b.c");
        assert_eq!(display(""), "");
    }
}
