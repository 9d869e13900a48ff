//! YAML → JSON values that remember where every field came from.
//!
//! serde-based YAML parsers drop positions once a value is built, but every manifest error must
//! name a file and a line, so documents are built from the parser's marked event stream instead.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Line and column (both 1-based) of a node in its source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// One YAML document: its value and the position of every node, keyed by JSON pointer.
#[derive(Debug, Clone)]
pub struct Document {
    pub value: Value,
    pub positions: HashMap<String, Position>,
    pub start: Position,
}

impl Document {
    /// Position of the node at `pointer`, or of its nearest ancestor that has one.
    pub fn position_of(&self, pointer: &str) -> Position {
        let mut p = pointer.to_string();
        loop {
            if let Some(pos) = self.positions.get(&p) {
                return *pos;
            }
            match p.rfind('/') {
                Some(i) => p.truncate(i),
                None => return self.start,
            }
        }
    }
}

/// Deepest nesting accepted. Values are built, validated and dropped recursively, so without
/// a limit a few hundred kilobytes of `- - - ...` overflow the stack; serde_json (spec files)
/// stops at 128 too.
const MAX_DEPTH: usize = 128;

/// Most values that aliases may copy in one document. Each alias copies its anchor's whole
/// value, so a few lines of nested aliases ("billion laughs") would otherwise exhaust memory.
const MAX_ALIAS_NODES: usize = 100_000;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    pub message: String,
    pub position: Position,
}

/// Parses every document of a multi-document YAML stream.
pub fn parse_documents(source: &str) -> Result<Vec<Document>, YamlError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(source);
    // Events are pulled one by one: `Parser::load` recurses once per nesting level (so deep
    // input overflows the stack before the builder can refuse it) and asserts on bad input.
    loop {
        let (event, mark) = parser.next_token().map_err(|e| YamlError {
            message: with_hint(e.info()),
            position: within(source, to_position(e.marker())),
        })?;
        let end = event == Event::StreamEnd;
        builder.on_event(event, mark);
        if let Some(err) = builder.error.take() {
            return Err(err);
        }
        if end {
            return Ok(builder.documents);
        }
    }
}

/// The parser says what it expected; for the usual slips, also how to fix them.
fn with_hint(message: &str) -> String {
    const HINTS: &[(&str, &str)] = &[
        ("tab", "YAML indents with spaces only: replace the tab"),
        (
            "mapping values are not allowed",
            "quote a value that contains `: `, or check this line's indentation",
        ),
        ("did not find expected key", "check this line's indentation"),
        (
            "did not find expected '-'",
            "check this line's indentation: list items line up",
        ),
        (
            "unknown anchor",
            "define the anchor (&name) before its alias (*name), in the same document",
        ),
    ];
    match HINTS.iter().find(|(needle, _)| message.contains(needle)) {
        Some((_, hint)) => format!("{message} ({hint})"),
        None => message.to_string(),
    }
}

/// The scanner reports an error at the end of input on the line after a last line without a
/// newline, which editors cannot jump to; such errors point at the end of the last line.
fn within(source: &str, position: Position) -> Position {
    // YAML breaks lines at \n, \r\n and a lone \r.
    let breaks = source.matches('\n').count() + source.matches('\r').count()
        - source.matches("\r\n").count();
    let lines = breaks + 1;
    if position.line <= lines {
        return position;
    }
    let last = source.rsplit(['\n', '\r']).next().unwrap_or_default();
    Position {
        line: lines,
        column: last.chars().count() + 1,
    }
}

fn to_position(mark: &Marker) -> Position {
    Position {
        line: mark.line(),
        column: mark.col() + 1,
    }
}

enum Frame {
    Seq(Vec<Value>, String),
    Map {
        map: Map<String, Value>,
        pointer: String,
        pending_key: Option<String>,
        anchor: usize,
    },
}

#[derive(Default)]
struct Builder {
    documents: Vec<Document>,
    stack: Vec<Frame>,
    seq_anchors: Vec<usize>,
    /// Anchored values with their number of nodes.
    anchors: HashMap<usize, (Value, usize)>,
    /// Nodes copied by aliases so far in this document.
    alias_nodes: usize,
    positions: HashMap<String, Position>,
    doc_start: Position,
    root: Option<Value>,
    error: Option<YamlError>,
}

impl Builder {
    /// JSON pointer of the node about to be produced, if it is a value (not a mapping key).
    fn next_pointer(&self) -> Option<String> {
        match self.stack.last() {
            None => Some(String::new()),
            Some(Frame::Seq(items, ptr)) => Some(format!("{ptr}/{}", items.len())),
            Some(Frame::Map {
                pending_key: Some(k),
                pointer,
                ..
            }) => Some(format!("{pointer}/{}", crate::path::escape(k))),
            Some(Frame::Map {
                pending_key: None, ..
            }) => None,
        }
    }

    fn fail(&mut self, message: String, mark: Marker) {
        if self.error.is_none() {
            self.error = Some(YamlError {
                message,
                position: to_position(&mark),
            });
        }
    }

    fn anchor(&mut self, anchor: usize, value: &Value) {
        if anchor > 0 {
            self.anchors
                .insert(anchor, (value.clone(), count_nodes(value)));
        }
    }

    /// Refuses a collection that would nest deeper than [`MAX_DEPTH`].
    fn too_deep(&mut self, mark: Marker) -> bool {
        if self.stack.len() < MAX_DEPTH {
            return false;
        }
        self.fail(
            format!("nested more than {MAX_DEPTH} levels deep; flatten the structure"),
            mark,
        );
        true
    }

    fn push_value(&mut self, value: Value, mark: Marker) {
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Frame::Seq(items, _)) => items.push(value),
            Some(Frame::Map {
                map, pending_key, ..
            }) => match pending_key.take() {
                Some(key) => {
                    if map.contains_key(&key) {
                        let msg = format!("duplicate key `{key}` in mapping");
                        self.fail(msg, mark);
                        return;
                    }
                    map.insert(key, value);
                }
                None => match value {
                    Value::String(s) => *pending_key = Some(s),
                    Value::Null => *pending_key = Some(String::new()),
                    Value::Bool(_) | Value::Number(_) => *pending_key = Some(value.to_string()),
                    _ => self.fail("mapping keys must be scalars".into(), mark),
                },
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::DocumentStart => {
                self.positions.clear();
                self.anchors.clear();
                self.alias_nodes = 0;
                self.root = None;
                self.doc_start = to_position(&mark);
            }
            Event::DocumentEnd => {
                let value = self.root.take().unwrap_or(Value::Null);
                self.documents.push(Document {
                    value,
                    positions: std::mem::take(&mut self.positions),
                    start: self.doc_start,
                });
            }
            Event::Scalar(text, style, anchor, tag) => {
                let is_key = self.next_pointer().is_none();
                let value = if is_key {
                    // A key's line is where its field is reported, even when the value is a
                    // block that starts on the next line.
                    if let Some(Frame::Map { pointer, .. }) = self.stack.last() {
                        let ptr = format!("{pointer}/{}", crate::path::escape(&text));
                        self.positions.insert(ptr, to_position(&mark));
                    }
                    Value::String(text)
                } else {
                    scalar_value(text, style, tag.as_ref().map(|t| t.suffix.as_str()))
                };
                if let Some(ptr) = self.next_pointer() {
                    self.positions.insert(ptr, to_position(&mark));
                }
                self.anchor(anchor, &value);
                self.push_value(value, mark);
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some((_, nodes)) if self.alias_nodes + nodes > MAX_ALIAS_NODES => self.fail(
                    format!(
                        "aliases copy more than {MAX_ALIAS_NODES} values (nested aliases multiply); \
                         write the values out or use fewer aliases"
                    ),
                    mark,
                ),
                Some((v, nodes)) => {
                    let v = v.clone();
                    self.alias_nodes += nodes;
                    if let Some(ptr) = self.next_pointer() {
                        self.positions.insert(ptr, to_position(&mark));
                    }
                    self.push_value(v, mark)
                }
                None => self.fail("alias refers to an unknown anchor".into(), mark),
            },
            Event::SequenceStart(..) | Event::MappingStart(..) if self.too_deep(mark) => {}
            Event::SequenceStart(anchor, _) => match self.next_pointer() {
                Some(ptr) => {
                    self.positions
                        .entry(ptr.clone())
                        .or_insert(to_position(&mark));
                    self.seq_anchors.push(anchor);
                    self.stack.push(Frame::Seq(Vec::new(), ptr));
                }
                None => self.fail("mapping keys must be scalars".into(), mark),
            },
            Event::SequenceEnd => {
                if let Some(Frame::Seq(items, _)) = self.stack.pop() {
                    let value = Value::Array(items);
                    let anchor = self.seq_anchors.pop().unwrap_or(0);
                    self.anchor(anchor, &value);
                    self.push_value(value, mark);
                }
            }
            Event::MappingStart(anchor, _) => match self.next_pointer() {
                Some(ptr) => {
                    self.positions
                        .entry(ptr.clone())
                        .or_insert(to_position(&mark));
                    self.stack.push(Frame::Map {
                        map: Map::new(),
                        pointer: ptr,
                        pending_key: None,
                        anchor,
                    });
                }
                None => self.fail("mapping keys must be scalars".into(), mark),
            },
            Event::MappingEnd => {
                if let Some(Frame::Map { map, anchor, .. }) = self.stack.pop() {
                    let value = Value::Object(map);
                    self.anchor(anchor, &value);
                    self.push_value(value, mark);
                }
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
    }
}

/// Nodes in a value (itself included).
fn count_nodes(value: &Value) -> usize {
    1 + match value {
        Value::Array(items) => items.iter().map(count_nodes).sum(),
        Value::Object(map) => map.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// YAML 1.2 core schema resolution for plain scalars; quoted and block scalars are strings.
fn scalar_value(text: String, style: TScalarStyle, tag: Option<&str>) -> Value {
    if style != TScalarStyle::Plain || tag == Some("str") {
        return Value::String(text);
    }
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = text.parse::<i64>() {
        return Value::Number(i.into());
    }
    let looks_numeric = text
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
        && text.chars().any(|c| c.is_ascii_digit());
    if looks_numeric {
        if let Some(n) = text.parse::<f64>().ok().and_then(Number::from_f64) {
            return Value::Number(n);
        }
    }
    Value::String(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builds_values_with_positions() {
        let src = "a: 1\nb:\n  - x\n  - 'y'\n  - 2.5\nc: {d: true, e: null}\n---\nname: two\n";
        let docs = parse_documents(src).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(
            docs[0].value,
            json!({"a": 1, "b": ["x", "y", 2.5], "c": {"d": true, "e": null}})
        );
        assert_eq!(docs[0].positions["/b/1"].line, 4);
        assert_eq!(docs[0].positions["/c/e"].line, 6);
        assert_eq!(docs[1].value, json!({"name": "two"}));
        assert_eq!(docs[1].positions["/name"].line, 8);
        assert_eq!(docs[0].position_of("/b/9/zz").line, 2);
    }

    #[test]
    fn quoted_numbers_stay_strings() {
        let docs = parse_documents("port: \"8000\"\nv: 1.10\nw: 012\n").unwrap();
        assert_eq!(docs[0].value, json!({"port": "8000", "v": 1.1, "w": 12}));
    }

    #[test]
    fn reports_syntax_errors_with_line() {
        let err = parse_documents("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.position.line >= 2, "{err:?}");
    }

    #[test]
    fn rejects_duplicate_keys() {
        let err = parse_documents("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert!(err.message.contains("duplicate key `a`"));
        assert_eq!(err.position.line, 3);
    }

    #[test]
    fn errors_at_the_end_of_input_stay_in_the_file() {
        let err = parse_documents("a: [").unwrap_err();
        assert_eq!(err.position, Position { line: 1, column: 5 });
        let err = parse_documents("&*[").unwrap_err();
        assert_eq!(err.position.line, 1);
        let err = parse_documents("a:\r  - [").unwrap_err();
        assert_eq!(err.position, Position { line: 2, column: 6 });
    }

    #[test]
    fn common_slips_get_a_hint() {
        let err = parse_documents("a: 1\n\tb: 2\n").unwrap_err();
        assert!(err
            .message
            .ends_with("(YAML indents with spaces only: replace the tab)"));
        let err = parse_documents("a: b: c\n").unwrap_err();
        assert!(
            err.message.contains("quote a value that contains `: `"),
            "{err:?}"
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!("a:\n{}x\n", "- ".repeat(200_000));
        let err = parse_documents(&deep).unwrap_err();
        assert!(
            err.message.contains("nested more than 128 levels"),
            "{err:?}"
        );
        assert_eq!(err.position.line, 2);
        let ok = format!("a:\n{}x\n", "- ".repeat(MAX_DEPTH - 1));
        assert!(parse_documents(&ok).is_ok());
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut src = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            src.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let err = parse_documents(&src).unwrap_err();
        assert!(err.message.contains("aliases copy more than"), "{err:?}");
        assert_eq!(err.position.line, 5);
    }

    #[test]
    fn anchors_and_aliases_copy_values() {
        let docs = parse_documents("base: &b {x: 1}\nother: *b\n").unwrap();
        assert_eq!(docs[0].value, json!({"base": {"x": 1}, "other": {"x": 1}}));
    }
}
