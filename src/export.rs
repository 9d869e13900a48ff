//! `ofctl export`: live objects written back out as manifest YAML, to adopt an existing
//! cluster. The specs are the providers' normalized form, so exporting and then planning the
//! export is a no-op. Secret values are never written: each becomes an `${env:...}`
//! placeholder, listed so the operator knows what to provide.

use serde_json::Value;
use yaml_rust2::yaml::Hash;
use yaml_rust2::{Yaml, YamlEmitter};

use crate::kind::KindInfo;
use crate::manifest::API_VERSION;
use crate::resource::Address;

/// One exported document and the environment variables its secrets now come from.
pub struct Exported {
    pub address: Address,
    pub yaml: String,
    pub env: Vec<String>,
}

fn env_name(address: &Address, pointer: &str) -> String {
    let raw = format!("OFCTL_SECRET_{}_{}_{}", address.kind, address.name, pointer);
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Replaces every sensitive value with an `${env:...}` placeholder (one per leaf, so the shape,
/// e.g. a list of `KEY=VALUE` env vars, stays valid for the schema) and escapes `${` in the
/// rest, which would read as a placeholder when the export is loaded again.
fn mask(value: &mut Value, info: &KindInfo, address: &Address, env: &mut Vec<String>) {
    crate::path::for_each_leaf(value, &mut |pointer, leaf| {
        if leaf.is_null() {
            return;
        }
        if !pointer.is_empty() && info.is_sensitive(pointer) {
            let name = env_name(address, pointer);
            *leaf = Value::String(format!("${{env:{name}}}"));
            env.push(name);
        } else if let Value::String(s) = leaf {
            if s.contains("${") {
                *s = s.replace("${", "$${");
            }
        }
    });
}

fn to_yaml(value: &Value) -> Yaml {
    match value {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            None => Yaml::Real(n.to_string()),
        },
        Value::String(s) => Yaml::String(s.clone()),
        Value::Array(items) => Yaml::Array(items.iter().map(to_yaml).collect()),
        Value::Object(map) => {
            let mut hash = Hash::new();
            for (k, v) in map {
                hash.insert(Yaml::String(k.clone()), to_yaml(v));
            }
            Yaml::Hash(hash)
        }
    }
}

/// Renders one live object as a manifest document.
pub fn document(address: &Address, info: &KindInfo, spec: &Value) -> Exported {
    let mut spec = spec.clone();
    let mut env = Vec::new();
    mask(&mut spec, info, address, &mut env);
    let mut doc = serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": address.kind,
        "metadata": { "name": address.name },
        "spec": spec,
    });
    // Before emitting: YAML quoting would escape a secret holding `"` or `\`.
    crate::redact::redact_value(&mut doc);
    let mut out = String::new();
    let mut emitter = YamlEmitter::new(&mut out);
    emitter.multiline_strings(true);
    // Writing to a String cannot fail.
    let _ = emitter.dump(&to_yaml(&doc));
    out.push('\n');
    Exported {
        address: address.clone(),
        yaml: crate::redact::redact(&out).into_owned(),
        env,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::{Compare, System};
    use serde_json::json;

    const INFO: KindInfo = KindInfo {
        kind: "KafkaConnector",
        system: System::Connect,
        compare: Compare::Exact,
        field_rules: &[],
        sensitive: &[],
        interpolate_spec_file: true,
    };

    #[test]
    fn secrets_become_env_placeholders_and_the_yaml_loads_back() {
        let address = Address::new("KafkaConnector", "pg-cdc");
        let spec = json!({"config": {
            "database.password": "hunter2",
            "connection.url": "jdbc:postgresql://db/app?user=u&password=pw-in-url",
            "x": "a ${b}",
            "n": 3
        }});
        let e = document(&address, &INFO, &spec);
        assert!(!e.yaml.contains("hunter2"), "{}", e.yaml);
        assert!(!e.yaml.contains("pw-in-url"), "{}", e.yaml);
        assert_eq!(
            e.env,
            vec!["OFCTL_SECRET_KAFKACONNECTOR_PG_CDC__CONFIG_DATABASE_PASSWORD"]
        );
        let docs = crate::manifest::yaml::parse_documents(&e.yaml).unwrap();
        let back = &docs[0].value;
        assert_eq!(back["metadata"]["name"], "pg-cdc");
        assert_eq!(back["spec"]["config"]["n"], 3);
        assert_eq!(back["spec"]["config"]["x"], "a $${b}");
    }

    #[test]
    fn a_secret_list_keeps_its_shape() {
        let info = KindInfo {
            sensitive: &["/env_vars"],
            ..INFO
        };
        let address = Address::new("TacticalScript", "s");
        let e = document(
            &address,
            &info,
            &json!({"env_vars": ["T=x1y2z3"], "args": []}),
        );
        assert!(!e.yaml.contains("x1y2z3"), "{}", e.yaml);
        assert_eq!(e.env, vec!["OFCTL_SECRET_TACTICALSCRIPT_S__ENV_VARS_0"]);
        let empty = document(&address, &info, &json!({"env_vars": []}));
        assert!(empty.env.is_empty(), "{}", empty.yaml);
    }
}
