//! The template functions csctl supports (Go builtins and the Helm/Sprig functions charts commonly use).
use serde_json::Value;

use super::RenderError;
use super::exec::{Scope, print, truthy};
use super::yaml_out::to_yaml;

fn s(v: &Value) -> String {
    print(v)
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::Null => Some(0.0),
        _ => None,
    }
}

fn int(v: &Value) -> i64 {
    num(v).map(|f| f as i64).unwrap_or(0)
}

fn cmp(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => num(a)?.partial_cmp(&num(b)?),
    }
}

fn eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => num(a) == num(b),
        _ => a == b,
    }
}

/// Go's `fmt.Sprintf` for the verbs templates use: %s %d %v %q %f %%.
fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut it = format.chars().peekable();
    let mut i = 0;
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('%') => out.push('%'),
            Some(verb @ ('s' | 'd' | 'v' | 'q' | 'f' | 't')) => {
                let a = args.get(i).cloned().unwrap_or(Value::Null);
                i += 1;
                match verb {
                    'q' => out.push_str(&serde_json::to_string(&s(&a)).unwrap_or_default()),
                    'd' => out.push_str(&int(&a).to_string()),
                    'f' => out.push_str(&format!("{:.6}", num(&a).unwrap_or(0.0))),
                    _ => out.push_str(&s(&a)),
                }
            }
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Go's `encoding/json` (Sprig's `toJson`): keys sorted, `<`, `>`, `&`, U+2028 and U+2029 escaped, floats
/// without `.0` and in exponent form only below 1e-6 or from 1e21 (`1e-7`, `1e+21`).
fn go_json(v: &Value) -> String {
    fn string(s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                    out.push_str(&format!("\\u{:04x}", c as u32))
                }
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    fn float(f: f64) -> String {
        let a = f.abs();
        if a != 0.0 && !(1e-6..1e21).contains(&a) {
            let sci = format!("{f:e}");
            let (m, e) = sci.split_once('e').unwrap_or((&sci, "0"));
            match e.strip_prefix('-') {
                Some(neg) => format!("{m}e-{neg}"),
                None => format!("{m}e+{e}"),
            }
        } else {
            format!("{f}")
        }
    }
    fn emit(v: &Value, out: &mut String) {
        match v {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => match n.as_f64() {
                Some(f) if n.is_f64() && f.is_finite() => out.push_str(&float(f)),
                _ => out.push_str(&n.to_string()),
            },
            Value::String(s) => string(s, out),
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    emit(x, out);
                }
                out.push(']');
            }
            Value::Object(o) => {
                let mut keys: Vec<&String> = o.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    string(k, out);
                    out.push(':');
                    emit(&o[k], out);
                }
                out.push('}');
            }
        }
    }
    let mut out = String::new();
    emit(v, &mut out);
    out
}

fn indent(n: i64, text: &str) -> String {
    let pad = " ".repeat(n.max(0) as usize);
    text.split('\n')
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn need(
    name: &str,
    args: &[Value],
    n: usize,
    scope: &Scope<'_>,
    line: usize,
) -> Result<(), RenderError> {
    if args.len() < n {
        return Err(scope.err(
            line,
            format!("{name}: expected {n} argument(s), got {}", args.len()),
        ));
    }
    Ok(())
}

pub(super) fn call(
    scope: &mut Scope<'_>,
    name: &str,
    a: &[Value],
    line: usize,
) -> Result<Value, RenderError> {
    let str_v = |x: String| Value::String(x);
    Ok(match name {
        "default" => {
            need(name, a, 1, scope, line)?;
            match a.get(1) {
                Some(given) if truthy(given) => given.clone(),
                Some(_) => a[0].clone(),
                None => a[0].clone(),
            }
        }
        // Sprig's `quote`/`squote` skip nil arguments (`{{ .Values.missing | quote }}` is empty, not `""`).
        "quote" => str_v(
            a.iter()
                .filter(|v| !v.is_null())
                .map(|v| serde_json::to_string(&s(v)).unwrap_or_default())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        "squote" => str_v(
            a.iter()
                .filter(|v| !v.is_null())
                .map(|v| format!("'{}'", s(v)))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        "trunc" => {
            need(name, a, 2, scope, line)?;
            let n = int(&a[0]);
            let t: Vec<char> = s(&a[1]).chars().collect();
            let out: String = if n >= 0 {
                t.iter().take(n as usize).collect()
            } else {
                t[t.len().saturating_sub((-n) as usize)..].iter().collect()
            };
            str_v(out)
        }
        "trim" => {
            need(name, a, 1, scope, line)?;
            str_v(s(&a[0]).trim().to_string())
        }
        "trimSuffix" => {
            need(name, a, 2, scope, line)?;
            let t = s(&a[1]);
            let suf = s(&a[0]);
            str_v(t.strip_suffix(suf.as_str()).unwrap_or(&t).to_string())
        }
        "trimPrefix" => {
            need(name, a, 2, scope, line)?;
            let t = s(&a[1]);
            let pre = s(&a[0]);
            str_v(t.strip_prefix(pre.as_str()).unwrap_or(&t).to_string())
        }
        "upper" => str_v(s(a.first().unwrap_or(&Value::Null)).to_uppercase()),
        "lower" => str_v(s(a.first().unwrap_or(&Value::Null)).to_lowercase()),
        "title" => str_v(
            s(a.first().unwrap_or(&Value::Null))
                .split(' ')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join(" "),
        ),
        "printf" => {
            need(name, a, 1, scope, line)?;
            str_v(sprintf(&s(&a[0]), &a[1..]))
        }
        // Go's `fmt.Sprint`: a space between two operands when neither is a string.
        "print" => {
            let mut out = String::new();
            for (i, v) in a.iter().enumerate() {
                if i > 0 && !v.is_string() && !a[i - 1].is_string() {
                    out.push(' ');
                }
                out.push_str(&s(v));
            }
            str_v(out)
        }
        "println" => str_v(a.iter().map(s).collect::<Vec<_>>().join(" ") + "\n"),
        "toString" => str_v(s(a.first().unwrap_or(&Value::Null))),
        "int" | "int64" => Value::from(int(a.first().unwrap_or(&Value::Null))),
        "replace" => {
            need(name, a, 3, scope, line)?;
            str_v(s(&a[2]).replace(&s(&a[0]), &s(&a[1])))
        }
        "contains" => {
            need(name, a, 2, scope, line)?;
            Value::Bool(s(&a[1]).contains(&s(&a[0])))
        }
        "hasPrefix" => {
            need(name, a, 2, scope, line)?;
            Value::Bool(s(&a[1]).starts_with(&s(&a[0])))
        }
        "hasSuffix" => {
            need(name, a, 2, scope, line)?;
            Value::Bool(s(&a[1]).ends_with(&s(&a[0])))
        }
        "toYaml" => str_v(to_yaml(a.first().unwrap_or(&Value::Null))),
        "toJson" => str_v(go_json(a.first().unwrap_or(&Value::Null))),
        "indent" => {
            need(name, a, 2, scope, line)?;
            str_v(indent(int(&a[0]), &s(&a[1])))
        }
        "nindent" => {
            need(name, a, 2, scope, line)?;
            str_v(format!("\n{}", indent(int(&a[0]), &s(&a[1]))))
        }
        "eq" => {
            need(name, a, 2, scope, line)?;
            Value::Bool(a[1..].iter().any(|b| eq(&a[0], b)))
        }
        "ne" => {
            need(name, a, 2, scope, line)?;
            Value::Bool(!eq(&a[0], &a[1]))
        }
        "lt" | "le" | "gt" | "ge" => {
            need(name, a, 2, scope, line)?;
            let o = cmp(&a[0], &a[1]).ok_or_else(|| {
                scope.err(
                    line,
                    format!("{name}: cannot compare {} and {}", s(&a[0]), s(&a[1])),
                )
            })?;
            Value::Bool(match name {
                "lt" => o.is_lt(),
                "le" => o.is_le(),
                "gt" => o.is_gt(),
                _ => o.is_ge(),
            })
        }
        "and" => a
            .iter()
            .find(|v| !truthy(v))
            .or(a.last())
            .cloned()
            .unwrap_or(Value::Null),
        "or" => a
            .iter()
            .find(|v| truthy(v))
            .or(a.last())
            .cloned()
            .unwrap_or(Value::Null),
        "not" => Value::Bool(!truthy(a.first().unwrap_or(&Value::Null))),
        "empty" => Value::Bool(!truthy(a.first().unwrap_or(&Value::Null))),
        "len" => Value::from(match a.first() {
            Some(Value::String(x)) => x.len(),
            Some(Value::Array(x)) => x.len(),
            Some(Value::Object(x)) => x.len(),
            _ => 0,
        }),
        "index" => {
            need(name, a, 1, scope, line)?;
            let mut cur = a[0].clone();
            for k in &a[1..] {
                cur = match (&cur, k) {
                    (Value::Array(x), k) => x.get(int(k) as usize).cloned().ok_or_else(|| {
                        scope.err(
                            line,
                            format!("index {} out of range (length {})", int(k), x.len()),
                        )
                    })?,
                    (Value::Object(o), k) => o.get(&s(k)).cloned().unwrap_or(Value::Null),
                    _ => Value::Null,
                };
            }
            cur
        }
        "list" => Value::Array(a.to_vec()),
        "dict" => {
            let mut m = serde_json::Map::new();
            for pair in a.chunks(2) {
                m.insert(s(&pair[0]), pair.get(1).cloned().unwrap_or(Value::Null));
            }
            Value::Object(m)
        }
        "get" => {
            need(name, a, 2, scope, line)?;
            a[0].get(s(&a[1]))
                .cloned()
                .unwrap_or(Value::String(String::new()))
        }
        "hasKey" => {
            need(name, a, 2, scope, line)?;
            Value::Bool(a[0].get(s(&a[1])).is_some())
        }
        "join" => {
            need(name, a, 2, scope, line)?;
            let items = match &a[1] {
                Value::Array(x) => x.iter().map(s).collect::<Vec<_>>(),
                other => vec![s(other)],
            };
            str_v(items.join(&s(&a[0])))
        }
        "ternary" => {
            need(name, a, 3, scope, line)?;
            if truthy(&a[2]) {
                a[0].clone()
            } else {
                a[1].clone()
            }
        }
        "required" => {
            need(name, a, 2, scope, line)?;
            if !truthy(&a[1]) && !a[1].is_boolean() {
                return Err(scope.err(line, format!("required value missing: {}", s(&a[0]))));
            }
            a[1].clone()
        }
        "fail" => {
            return Err(scope.err(
                line,
                format!("fail: {}", s(a.first().unwrap_or(&Value::Null))),
            ));
        }
        "b64enc" => {
            use base64::Engine;
            str_v(
                base64::engine::general_purpose::STANDARD
                    .encode(s(a.first().unwrap_or(&Value::Null))),
            )
        }
        "sha256sum" => str_v(crate::hash::sha256_hex(
            s(a.first().unwrap_or(&Value::Null)).as_bytes(),
        )),
        "include" => {
            need(name, a, 1, scope, line)?;
            let dot = a.get(1).cloned().unwrap_or(Value::Null);
            str_v(scope.call_define(&s(&a[0]), &dot, line)?)
        }
        "tpl" | "lookup" => {
            return Err(scope.err(
                line,
                format!("`{name}` is not supported by csctl's renderer: it needs Helm or a cluster (see README, \"What csctl can render\")"),
            ));
        }
        other => {
            return Err(scope.err(
                line,
                format!("function `{other}` is not supported by csctl's renderer (see README, \"What csctl can render\")"),
            ));
        }
    })
}
