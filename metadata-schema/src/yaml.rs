//! YAML with positions: a small document tree built from the parser's events, so that any problem found
//! in the data (by a JSON Schema, by a semantic check) can be reported at the line and column it came from.
//!
//! Scalars resolve like YAML 1.2's core schema (plain `true`, `42`, `1.5`, `null`/`~`/empty; quoted and
//! block scalars are strings), which is what Kubernetes and Helm see.
use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle};

/// A node and where it starts (1-based line and column).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub line: u64,
    pub column: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Seq(Vec<Node>),
    /// Keys in document order.
    Map(Vec<(Node, Node)>),
}

/// A YAML syntax error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct SyntaxError {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

/// Parses every document of a YAML stream (empty documents are skipped).
pub fn parse_documents(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    // Stack of containers under construction: (node, pending key for maps, anchor id).
    enum Frame {
        Seq(Node, usize),
        Map(Node, Option<Node>, usize),
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut docs = Vec::new();
    let mut finished: Option<Node> = None;

    fn push(stack: &mut [Frame], node: Node, finished: &mut Option<Node>) {
        match stack.last_mut() {
            None => *finished = Some(node),
            Some(Frame::Seq(seq, _)) => {
                if let Value::Seq(items) = &mut seq.value {
                    items.push(node);
                }
            }
            Some(Frame::Map(map, key, _)) => match key.take() {
                None => *key = Some(node),
                Some(k) => {
                    if let Value::Map(entries) = &mut map.value {
                        entries.push((k, node));
                    }
                }
            },
        }
    }

    while let Some(ev) = parser.next_event() {
        let (event, span) = ev.map_err(|e| SyntaxError {
            line: e.marker().line() as u64,
            column: e.marker().col() as u64 + 1,
            message: e.info().to_string(),
        })?;
        let (line, column) = (span.start.line() as u64, span.start.col() as u64 + 1);
        match event {
            Event::DocumentEnd => {
                if let Some(doc) = finished.take()
                    && doc.value != Value::Null
                {
                    docs.push(doc);
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let forced_str = tag
                    .as_ref()
                    .is_some_and(|t| t.is_yaml_core_schema_tag("str"));
                let value = if style == ScalarStyle::Plain && !forced_str {
                    resolve_plain(&text)
                } else {
                    Value::String(text.into_owned())
                };
                let node = Node {
                    value,
                    line,
                    column,
                };
                if anchor != 0 {
                    anchors.insert(anchor, node.clone());
                }
                push(&mut stack, node, &mut finished);
            }
            Event::Alias(id) => {
                let node = anchors.get(&id).cloned().ok_or_else(|| SyntaxError {
                    line,
                    column,
                    message: "alias to an unknown anchor".into(),
                })?;
                push(&mut stack, node, &mut finished);
            }
            Event::SequenceStart(_, anchor, _) => stack.push(Frame::Seq(
                Node {
                    value: Value::Seq(Vec::new()),
                    line,
                    column,
                },
                anchor,
            )),
            Event::MappingStart(_, anchor, _) => stack.push(Frame::Map(
                Node {
                    value: Value::Map(Vec::new()),
                    line,
                    column,
                },
                None,
                anchor,
            )),
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match stack.pop() {
                    Some(Frame::Seq(n, a)) | Some(Frame::Map(n, _, a)) => (n, a),
                    None => continue,
                };
                if anchor != 0 {
                    anchors.insert(anchor, node.clone());
                }
                push(&mut stack, node, &mut finished);
            }
            _ => {}
        }
    }
    Ok(docs)
}

/// Parses a single-document YAML file (an empty file is `null`).
pub fn parse_one(text: &str) -> Result<Node, SyntaxError> {
    let mut docs = parse_documents(text)?;
    match docs.len() {
        0 => Ok(Node {
            value: Value::Null,
            line: 1,
            column: 1,
        }),
        1 => Ok(docs.remove(0)),
        _ => Err(SyntaxError {
            line: docs[1].line,
            column: docs[1].column,
            message: "expected a single YAML document, found several".into(),
        }),
    }
}

fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
        && let Ok(i) = s.parse::<i64>()
    {
        return Value::Int(i);
    }
    if let Some(hex) = s.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::Int(i);
    }
    if let Some(oct) = s.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Value::Int(i);
    }
    let looks_float = digits
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || c == '.')
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
        && digits.chars().any(|c| c.is_ascii_digit());
    if looks_float && let Ok(f) = s.parse::<f64>() {
        return Value::Float(f);
    }
    match digits {
        ".inf" | ".Inf" | ".INF" => {
            return Value::Float(if s.starts_with('-') {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            });
        }
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    Value::String(s.to_string())
}

impl Node {
    /// The node as JSON (map keys as strings).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or(J::Null),
            Value::String(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.key_string(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// A map key as a string (what JSON and Kubernetes use).
    pub fn key_string(&self) -> String {
        match &self.value {
            Value::String(s) => s.clone(),
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Seq(_) | Value::Map(_) => format!("{:?}", self.to_json()),
        }
    }

    /// The value at a map key.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.key_string() == key)
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The map key node for `key` (to point at the key rather than the value).
    pub fn get_key(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.key_string() == key)
                .map(|(k, _)| k),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// Where to report a problem about the value at `pointer`: scalars at the value itself, mappings and
    /// sequences at the key that holds them (a block mapping starts on the line after its key).
    pub fn locate_for_report(&self, pointer: &str) -> &Node {
        let target = self.locate(pointer);
        if matches!(target.value, Value::Map(_) | Value::Seq(_))
            && let Some((parent_ptr, last)) = pointer.rsplit_once('/')
        {
            let parent = self.locate(parent_ptr);
            let token = last.replace("~1", "/").replace("~0", "~");
            if let Some(key) = parent.get_key(&token)
                && parent.get(&token).is_some_and(|v| std::ptr::eq(v, target))
            {
                return key;
            }
        }
        target
    }

    /// The node at a JSON pointer (`/spec/template/0/name`), or the deepest existing ancestor.
    pub fn locate(&self, pointer: &str) -> &Node {
        let mut node = self;
        for raw in pointer.split('/').skip(1) {
            let token = raw.replace("~1", "/").replace("~0", "~");
            let next = match &node.value {
                Value::Map(_) => node.get(&token),
                Value::Seq(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_scalars() {
        let text = "a: 1\nb:\n  - x\n  - 'true'\n  - true\nc: ~\nd: 1.5\n";
        let doc = parse_one(text).unwrap();
        assert_eq!(
            doc.to_json(),
            serde_json::json!({"a": 1, "b": ["x", "true", true], "c": null, "d": 1.5})
        );
        let n = doc.locate("/b/1");
        assert_eq!((n.line, n.column), (4, 5));
        let n = doc.locate("/d");
        assert_eq!((n.line, n.column), (7, 4));
        // A missing child resolves to its deepest existing ancestor.
        let n = doc.locate("/b/9/x");
        assert_eq!(n.line, 3);
    }

    #[test]
    fn several_documents_and_syntax_errors() {
        let docs = parse_documents("---\na: 1\n---\n# only a comment\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
        let err = parse_one("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.line >= 1, "{err}");
        assert!(parse_one("a: 1\n---\nb: 2\n").is_err());
    }

    #[test]
    fn anchors_and_aliases() {
        let doc = parse_one("x: &a {k: v}\ny: *a\n").unwrap();
        assert_eq!(doc.to_json()["y"], serde_json::json!({"k": "v"}));
    }
}
