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

/// Calls `f` with the pointer and value of every scalar (null included) inside `value`.
pub fn for_each_leaf(
    value: &mut serde_json::Value,
    f: &mut dyn FnMut(&str, &mut serde_json::Value),
) {
    fn walk(
        value: &mut serde_json::Value,
        pointer: &mut String,
        f: &mut dyn FnMut(&str, &mut serde_json::Value),
    ) {
        use serde_json::Value;
        match value {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    let len = pointer.len();
                    pointer.push('/');
                    pointer.push_str(&escape(k));
                    walk(v, pointer, f);
                    pointer.truncate(len);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter_mut().enumerate() {
                    let len = pointer.len();
                    pointer.push_str(&format!("/{i}"));
                    walk(v, pointer, f);
                    pointer.truncate(len);
                }
            }
            leaf => f(pointer, leaf),
        }
    }
    walk(value, &mut String::new(), f);
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

    #[test]
    fn visits_every_leaf_with_its_pointer() {
        let mut v = serde_json::json!({"a": [1, {"b/c": null}], "d": "x"});
        let mut seen = Vec::new();
        for_each_leaf(&mut v, &mut |ptr, leaf| {
            seen.push((ptr.to_string(), leaf.clone()))
        });
        assert_eq!(
            seen,
            vec![
                ("/a/0".to_string(), serde_json::json!(1)),
                ("/a/1/b~1c".to_string(), serde_json::Value::Null),
                ("/d".to_string(), serde_json::json!("x")),
            ]
        );
    }
}
