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
    let mut hasher = Sha256::new();
    canonical(value, &mut hasher);
    hex::encode(&hasher.finalize()[..16])
}

/// A digest of several values and texts in order, for telling whether inputs changed (not
/// kept or shown, unlike [`digest`]). Every item is tagged and length-prefixed, so no two
/// different sequences feed the same bytes; numbers go in as `f64`, so values
/// [`values_equal`] calls equal digest alike; object members go in their order, so the same
/// members in another order digest differently, which only costs a caller its shortcut.
#[derive(Default)]
pub struct Digester(Sha256);

impl Digester {
    pub fn value(&mut self, value: &Value) {
        match value {
            Value::Null => self.0.update(b"n"),
            Value::Bool(b) => self.0.update(if *b { b"t" } else { b"f" }),
            Value::Number(n) => {
                self.0.update(b"#");
                let f = n.as_f64().unwrap_or(f64::NAN);
                self.0.update(f.to_bits().to_le_bytes());
            }
            Value::String(s) => self.text(s),
            Value::Array(items) => {
                self.0.update(b"[");
                self.len(items.len());
                items.iter().for_each(|v| self.value(v));
            }
            Value::Object(map) => {
                self.0.update(b"{");
                self.len(map.len());
                for (k, v) in map {
                    self.text(k);
                    self.value(v);
                }
            }
        }
    }

    pub fn text(&mut self, text: &str) {
        self.0.update(b"s");
        self.len(text.len());
        self.0.update(text.as_bytes());
    }

    /// Bytes as they are (e.g. an answer's body as sent).
    pub fn bytes(&mut self, bytes: &[u8]) {
        self.0.update(b"b");
        self.len(bytes.len());
        self.0.update(bytes);
    }

    fn len(&mut self, len: usize) {
        self.0.update((len as u64).to_le_bytes());
    }

    pub fn finish(self) -> String {
        hex::encode(&self.0.finalize()[..16])
    }
}

/// Prefix of a [`keyed_digest`].
pub const KEYED_PREFIX: &str = "hmac:";

/// HMAC-SHA256 under `key` of the same canonical text as [`digest`]: without the key, a guess
/// of a value cannot be tested against it.
pub fn keyed_digest(value: &Value, key: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    // HMAC takes keys of any length.
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    canonical(value, &mut mac);
    format!(
        "{KEYED_PREFIX}{}",
        hex::encode(&mac.finalize().into_bytes()[..16])
    )
}

fn canonical<H: sha2::digest::Update>(value: &Value, out: &mut H) {
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
fn json_text<T: Serialize + ?Sized, H: sha2::digest::Update>(value: &T, out: &mut H) {
    struct Sink<'a, H>(&'a mut H);
    impl<H: sha2::digest::Update> std::io::Write for Sink<'_, H> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let _ = serde_json::to_writer(Sink(out), value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_digester_tells_sequences_apart_but_not_number_forms() {
        let of = |items: &[(&str, Value)]| {
            let mut d = Digester::default();
            for (text, value) in items {
                d.text(text);
                d.value(value);
            }
            d.finish()
        };
        let a = of(&[("x", json!({"a": 1, "b": [2, "3"]}))]);
        assert_eq!(a, of(&[("x", json!({"a": 1.0, "b": [2, "3"]}))]));
        assert_ne!(a, of(&[("x", json!({"a": 1, "b": [2, 3]}))]));
        assert_ne!(a, of(&[("x", json!({"a": 1, "b": [2, "3", null]}))]));
        assert_ne!(a, of(&[("y", json!({"a": 1, "b": [2, "3"]}))]));
        // Where one text ends and the next begins counts; so does nesting.
        assert_ne!(of(&[("ab", json!("c"))]), of(&[("a", json!("bc"))]));
        assert_ne!(of(&[("x", json!([[1], 2]))]), of(&[("x", json!([[1, 2]]))]));
    }

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

    #[test]
    fn keyed_digests_depend_on_the_key() {
        let value = json!({"password": "pw", "a": 1});
        let reordered = json!({"a": 1.0, "password": "pw"});
        assert_eq!(keyed_digest(&value, b"k1"), keyed_digest(&reordered, b"k1"));
        assert_ne!(keyed_digest(&value, b"k1"), keyed_digest(&value, b"k2"));
        assert!(keyed_digest(&value, b"k1").starts_with(KEYED_PREFIX));
        assert!(!keyed_digest(&value, b"k1").contains(&digest(&value)));
    }
}
