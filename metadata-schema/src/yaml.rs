//! YAML with positions: a small document tree built from the parser's events, so that any problem found
//! in the data (by a JSON Schema, by a semantic check) can be reported at the line and column it came from.
//!
//! The tree is what the consumers of the files see: Kubernetes (kubectl), Helm and the cluster-stack-operator
//! read YAML with sigs.k8s.io/yaml on go-yaml v2, i.e. libyaml's YAML 1.1 rules. So plain scalars resolve
//! like go-yaml v2 (`yes`/`no`/`on`/`off`/`y`/`n` are booleans, `017` is octal, `0b101`, `1_000`; quoted and
//! block scalars are strings), `<<` merge keys are expanded in place as go-yaml does, a later duplicate key
//! replaces an earlier one, and what they refuse is a syntax error here too: `.inf`/`.nan` (no JSON for them),
//! null, sequence or mapping keys, a `%YAML` version other than 1.1, the YAML 1.2 escape `\/`.
//! `csctl/tests/yaml_differential.rs` compares this with sigs.k8s.io/yaml over a corpus.
use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, Tag};

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
    /// Keys in document order (unique: a later duplicate replaces the earlier value in place).
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

/// A mapping under construction: its entries, the pending key, which entries are `<<` merges.
struct MapFrame {
    node: Node,
    key: Option<Node>,
    key_is_merge: bool,
    merges: Vec<usize>,
    anchor: usize,
}

enum Frame {
    Seq(Node, usize),
    Map(MapFrame),
}

/// Parses every document of a YAML stream (empty documents are skipped).
pub fn parse_documents(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut docs = Vec::new();
    let mut finished: Option<Node> = None;

    while let Some(ev) = parser.next_event() {
        let (event, span) = ev.map_err(|e| SyntaxError {
            line: e.marker().line() as u64,
            column: e.marker().col() as u64 + 1,
            message: e.info().to_string(),
        })?;
        let (line, column) = (span.start.line() as u64, span.start.col() as u64 + 1);
        let error = |message: String| SyntaxError {
            line,
            column,
            message,
        };
        match event {
            Event::DocumentStart(_, Some(v)) if (v.major, v.minor) != (1, 1) => {
                return Err(error(format!(
                    "%YAML {}.{}: Kubernetes and Helm read YAML 1.1 only (libyaml: \"found incompatible \
                     YAML document\")",
                    v.major, v.minor
                )));
            }
            Event::DocumentEnd => {
                if let Some(doc) = finished.take()
                    && doc.value != Value::Null
                {
                    docs.push(doc);
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                if style == ScalarStyle::DoubleQuoted
                    && let (Some(from), Some(to)) =
                        (span.start.byte_offset(), span.end.byte_offset())
                    && text.get(from..to).is_some_and(has_slash_escape)
                {
                    return Err(error(
                        "the escape \\/ is YAML 1.2 only: Kubernetes and Helm (libyaml) reject it; \
                         write / alone"
                            .into(),
                    ));
                }
                let is_merge = style == ScalarStyle::Plain
                    && value == "<<"
                    && tag
                        .as_ref()
                        .is_none_or(|t| yaml_org_type(t).as_deref() == Some("merge"));
                let value = resolve(&value, style, tag.as_deref()).map_err(error)?;
                let node = Node {
                    value,
                    line,
                    column,
                };
                if anchor != 0 {
                    anchors.insert(anchor, node.clone());
                }
                if is_merge
                    && let Some(Frame::Map(m)) = stack.last_mut()
                    && m.key.is_none()
                {
                    m.key_is_merge = true;
                }
                push(&mut stack, node, &mut finished)?;
            }
            Event::Alias(id) => {
                let node = anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| error("alias to an unknown anchor".into()))?;
                push(&mut stack, node, &mut finished)?;
            }
            Event::SequenceStart(_, anchor, _) => stack.push(Frame::Seq(
                Node {
                    value: Value::Seq(Vec::new()),
                    line,
                    column,
                },
                anchor,
            )),
            Event::MappingStart(_, anchor, _) => stack.push(Frame::Map(MapFrame {
                node: Node {
                    value: Value::Map(Vec::new()),
                    line,
                    column,
                },
                key: None,
                key_is_merge: false,
                merges: Vec::new(),
                anchor,
            })),
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match stack.pop() {
                    Some(Frame::Seq(n, a)) => (n, a),
                    Some(Frame::Map(m)) => {
                        let anchor = m.anchor;
                        (finish_map(m)?, anchor)
                    }
                    None => continue,
                };
                if anchor != 0 {
                    anchors.insert(anchor, node.clone());
                }
                push(&mut stack, node, &mut finished)?;
            }
            _ => {}
        }
    }
    Ok(docs)
}
/// Adds a finished node to the container under construction (or makes it the document).
fn push(stack: &mut [Frame], node: Node, finished: &mut Option<Node>) -> Result<(), SyntaxError> {
    match stack.last_mut() {
        None => *finished = Some(node),
        Some(Frame::Seq(seq, _)) => {
            if let Value::Seq(items) = &mut seq.value {
                items.push(node);
            }
        }
        Some(Frame::Map(m)) => match m.key.take() {
            None => {
                // sigs.k8s.io/yaml turns keys into JSON object keys: scalars only, and not null.
                let bad = match node.value {
                    Value::Null => Some("a null"),
                    Value::Seq(_) => Some("a sequence"),
                    Value::Map(_) => Some("a mapping"),
                    _ => None,
                };
                if let Some(what) = bad
                    && !m.key_is_merge
                {
                    return Err(SyntaxError {
                        line: node.line,
                        column: node.column,
                        message: format!(
                            "{what} as a mapping key: Kubernetes and Helm (sigs.k8s.io/yaml) reject it"
                        ),
                    });
                }
                m.key = Some(node);
            }
            Some(k) => {
                if let Value::Map(entries) = &mut m.node.value {
                    if std::mem::take(&mut m.key_is_merge) {
                        m.merges.push(entries.len());
                    }
                    entries.push((k, node));
                }
            }
        },
    }
    Ok(())
}

/// Expands the `<<` merges of a finished mapping and makes its keys unique, as go-yaml v2 decodes a mapping:
/// entries apply in document order, a merge at its place (of a sequence of mappings, the last first, so the
/// first wins), each key replacing an earlier equal one.
fn finish_map(m: MapFrame) -> Result<Node, SyntaxError> {
    let Node {
        value,
        line,
        column,
    } = m.node;
    let Value::Map(entries) = value else {
        unreachable!("a map frame holds a map")
    };
    let mut out: Vec<(Node, Node)> = Vec::with_capacity(entries.len());
    let mut index: HashMap<String, usize> = HashMap::with_capacity(entries.len());
    let mut set = |k: Node, v: Node| match index.entry(k.key_string()) {
        std::collections::hash_map::Entry::Occupied(e) => out[*e.get()] = (k, v),
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(out.len());
            out.push((k, v));
        }
    };
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if !m.merges.contains(&i) {
            set(k, v);
            continue;
        }
        let not_mergeable = || SyntaxError {
            line: v.line,
            column: v.column,
            message: "a << merge needs a mapping or a sequence of mappings as its value".into(),
        };
        let sources: Vec<Node> = match &v.value {
            Value::Map(_) => vec![v.clone()],
            Value::Seq(items) => items.iter().rev().cloned().collect(),
            _ => return Err(not_mergeable()),
        };
        for source in sources {
            let Value::Map(merged) = source.value else {
                return Err(not_mergeable());
            };
            for (mk, mv) in merged {
                set(mk, mv);
            }
        }
    }
    Ok(Node {
        value: Value::Map(out),
        line,
        column,
    })
}

/// The type of a `tag:yaml.org,2002:` tag (`str`, `int`, `binary`, ...), however it was spelled.
fn yaml_org_type(tag: &Tag) -> Option<String> {
    const PREFIX: &str = "tag:yaml.org,2002:";
    format!("{}{}", tag.handle, tag.suffix)
        .strip_prefix(PREFIX)
        .map(str::to_string)
}

/// Whether the source of a double-quoted scalar uses the escape `\/`.
fn has_slash_escape(source: &str) -> bool {
    let mut chars = source.chars();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.next() == Some('/') {
            return true;
        }
    }
    false
}

/// A scalar's value as go-yaml v2 decodes it into an `interface{}`.
fn resolve(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    let Some(tag) = tag else {
        return Ok(if style == ScalarStyle::Plain {
            resolve_plain(text)?
        } else {
            Value::String(text.to_string())
        });
    };
    let want = yaml_org_type(tag);
    let resolved = match want.as_deref() {
        Some(t @ ("int" | "float" | "bool" | "null")) => (t, resolve_plain(text)?),
        // Other tags (`!!str`, `!!timestamp`, `!!binary`, local ones): the text as it is.
        _ => return Ok(Value::String(text.to_string())),
    };
    match resolved {
        ("int", v @ Value::Int(_))
        | ("float", v @ Value::Float(_))
        | ("bool", v @ Value::Bool(_))
        | ("null", v @ Value::Null) => Ok(v),
        ("float", Value::Int(i)) => Ok(Value::Float(i as f64)),
        (t, _) => Err(format!("cannot decode `{text}` as a !!{t}")),
    }
}

/// A plain scalar as go-yaml v2 resolves it (YAML 1.1): booleans `y`/`yes`/`on`/`true` and their opposites in
/// three spellings each, null `~`/`null`/empty, integers in Go's notations (`0x`, `0o`, `0b`, a leading `0`
/// for octal, `_` separators), floats; timestamps stay strings (what go-yaml gives an `interface{}`).
fn resolve_plain(s: &str) -> Result<Value, String> {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Ok(Value::Bool(true));
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Ok(Value::Bool(false));
        }
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => {
            return Err(format!(
                "`{s}` is a float JSON cannot hold: Kubernetes and Helm reject it (quote it for a string)"
            ));
        }
        _ => {}
    }
    let Some(first) = s.chars().next() else {
        return Ok(Value::Null);
    };
    if first == '.' {
        return Ok(go_float(s).map_or_else(|| Value::String(s.into()), Value::Float));
    }
    if !(first.is_ascii_digit() || first == '+' || first == '-') {
        return Ok(Value::String(s.into()));
    }
    let plain = s.replace('_', "");
    if let Some(i) = go_int(&plain) {
        return Ok(Value::Int(i));
    }
    if go_uint(&plain).is_some() {
        // Beyond i64 (go-yaml: a uint64): as a float, the same number to a JSON reader.
        return Ok(Value::Float(go_uint(&plain).unwrap_or_default() as f64));
    }
    if yaml_style_float(&plain)
        && let Some(f) = go_float(&plain)
    {
        return Ok(Value::Float(f));
    }
    Ok(Value::String(s.into()))
}

/// Go's `strconv.ParseInt(s, 0, 64)` (underscores already removed): sign, then `0x`, `0o`, `0b` or `0` for
/// octal.
fn go_int(s: &str) -> Option<i64> {
    let (neg, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let magnitude = go_uint(digits)?;
    if neg {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Go's `strconv.ParseUint(s, 0, 64)` (no sign).
fn go_uint(s: &str) -> Option<u64> {
    let lower = s.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1
        && let Some(d) = lower.strip_prefix('0')
    {
        (8, d)
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// go-yaml's `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn yaml_style_float(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => digits(frac),
        Some((int, frac)) => digits(int) && (frac.is_empty() || digits(frac)),
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e)));
    mantissa_ok && exponent_ok
}

/// Go's `strconv.ParseFloat(s, 64)` for the decimal notations go-yaml passes it; out of range is not a float.
fn go_float(s: &str) -> Option<f64> {
    if !s
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
    {
        return None;
    }
    s.parse::<f64>().ok().filter(|f| f.is_finite())
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
        let doc = parse_one("x: &a {k: v}\nz: *a\n").unwrap();
        assert_eq!(doc.to_json()["z"], serde_json::json!({"k": "v"}));
    }

    /// What go-yaml v2 (sigs.k8s.io/yaml, so kubectl and Helm) makes of it; the differential test
    /// (csctl/tests/yaml_differential.rs) checks the same against the real thing.
    #[test]
    fn reads_like_go_yaml_v2() {
        let doc = parse_one(
            "a: yes\nb: off\nc: 0644\nd: 0o17\ne: 0b101\nf: 1_000\ng: 1e3\nh: !!int \"12\"\ni: !custom 12\n\
             y: key\n",
        )
        .unwrap();
        assert_eq!(
            doc.to_json(),
            serde_json::json!({"a": true, "b": false, "c": 420, "d": 15, "e": 5, "f": 1000, "g": 1000.0,
                "h": 12, "i": "12", "true": "key"})
        );
        // Merge keys expand in place; a later key replaces an earlier one (and `get` agrees with `to_json`).
        let doc = parse_one("b: &b {x: 1, y0: 1}\nm:\n  x: 0\n  <<: [*b, {x: 2, z: 2}]\n  y0: 3\n")
            .unwrap();
        let m = doc.get("m").unwrap();
        assert_eq!(m.to_json(), serde_json::json!({"x": 1, "y0": 3, "z": 2}));
        assert_eq!(m.get("x").unwrap().to_json(), serde_json::json!(1));
        // What Kubernetes and Helm refuse.
        for bad in [
            "a: .inf\n",
            "a: .nan\n",
            "~: x\n",
            "[a]: x\n",
            "a: \"\\/\"\n",
            "%YAML 1.2\n---\na: 1\n",
            "<<: 1\n",
            "a: !!int x\n",
        ] {
            assert!(parse_one(bad).is_err(), "{bad:?} is accepted");
        }
        // Quoted, it is a string.
        assert_eq!(parse_one("a: '.inf'\n").unwrap().to_json()["a"], ".inf");
    }
}
