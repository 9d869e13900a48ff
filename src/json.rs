//! JSON helpers every layer uses: equality for diffing and canonical digests.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Values equal for diffing: JSON numbers compare by value (`1` == `1.0`).
pub fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| values_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => a == b,
    }
}

/// Hash of a JSON value with object keys sorted, so equal values hash equally whatever order
/// the server or the manifest used. The canonical text (compact JSON, sorted keys, integral
/// numbers without a fraction) is streamed into the hash rather than built first: a plan
/// hashes every desired and live spec.
pub fn digest(value: &Value) -> String {
    fn canonical(value: &Value, out: &mut Sha256) {
        match value {
            Value::Object(map) => {
                let mut sorted: Vec<_> = map.iter().collect();
                sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
                out.update(b"{");
                for (i, (k, v)) in sorted.into_iter().enumerate() {
                    if i > 0 {
                        out.update(b",");
                    }
                    json_text(k, out);
                    out.update(b":");
                    canonical(v, out);
                }
                out.update(b"}");
            }
            Value::Array(items) => {
                out.update(b"[");
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.update(b",");
                    }
                    canonical(v, out);
                }
                out.update(b"]");
            }
            Value::Number(n) => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9e15 => {
                    out.update((f as i64).to_string().as_bytes())
                }
                _ => out.update(n.to_string().as_bytes()),
            },
            other => json_text(other, out),
        }
    }
    /// Serializes straight into the hash (writing to a hasher cannot fail).
    fn json_text<T: Serialize + ?Sized>(value: &T, out: &mut Sha256) {
        let _ = serde_json::to_writer(out, value);
    }
    let mut hasher = Sha256::new();
    canonical(value, &mut hasher);
    hex::encode(&hasher.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn digest_ignores_key_order_and_number_form() {
        assert_eq!(
            digest(&json!({"a": 1, "b": [1, 2]})),
            digest(&json!({"b": [1, 2], "a": 1.0}))
        );
        assert_ne!(digest(&json!({"a": 1})), digest(&json!({"a": 2})));
    }

    #[test]
    fn digest_is_stable() {
        // Saved plans carry digests: the canonical text must never change. Reference: SHA-256
        // of `{"a":{"k":-3,"z":null,"é":true},"b":[1,2,2.5,"x\"y\\z\nw"]}`, first 16 bytes.
        let value = json!({"b": [1, 2.0, 2.5, "x\"y\\z\nw"], "a": {"z": null, "é": true, "k": -3}});
        assert_eq!(digest(&value), "f3870688b64037b28a028f727d12571d");
    }
}
