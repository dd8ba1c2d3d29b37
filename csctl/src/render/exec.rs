//! Executing parsed templates against JSON-like data.
use std::collections::HashMap;

use serde_json::Value;

use super::RenderError;
use super::funcs;
use super::parse::{self, Arg, Cmd, Node, Pipe};

/// Holds every parsed template file and every `define`.
#[derive(Default)]
pub struct Renderer {
    files: HashMap<String, Vec<Node>>,
    defines: HashMap<String, (String, Vec<Node>)>,
}

/// Per-execution state.
pub(super) struct Scope<'r> {
    pub r: &'r Renderer,
    pub file: String,
    vars: Vec<(String, Value)>,
    depth: usize,
}

/// Go's truthiness: false, 0, nil, and empty strings, lists and maps are false.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// How Go's `fmt` prints a value with `{{ }}`; nil prints as "" (Helm replaces `<no value>`).
pub fn print(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => go_float(f),
            _ => n.to_string(),
        },
        Value::Array(a) => format!("[{}]", a.iter().map(print).collect::<Vec<_>>().join(" ")),
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            format!(
                "map[{}]",
                keys.iter()
                    .map(|k| format!("{k}:{}", print(&o[*k])))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    }
}

/// Go's `%v` of a float64 (`strconv.FormatFloat(f, 'g', -1, 64)`): the shortest digits, in exponent form when
/// the exponent is below -4 or at least 6 (`2.0` → `2`, `1.5` → `1.5`, `1e6` → `1e+06`, `1e-5` → `1e-05`).
pub fn go_float(f: f64) -> String {
    if !f.is_finite() {
        return if f.is_nan() {
            "NaN".into()
        } else if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    // Rust's `{:e}` gives the shortest round-trip digits: `d.ddde[-]x`.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        let s = format!("{f}");
        s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
    }
}

fn field(v: &Value, fields: &[String]) -> Value {
    let mut cur = v.clone();
    for f in fields {
        cur = match &cur {
            Value::Object(o) => o.get(f).cloned().unwrap_or(Value::Null),
            _ => Value::Null,
        };
    }
    cur
}

impl Renderer {
    /// Parses a template file and records its `define`s.
    pub fn add(&mut self, name: &str, text: &str) -> Result<(), RenderError> {
        let parsed = parse::parse(text, name)?;
        for (n, body) in parsed.defines {
            self.defines.insert(n, (name.to_string(), body));
        }
        self.files.insert(name.to_string(), parsed.nodes);
        Ok(())
    }

    /// Renders a file added before with `data` as `.` and `$`.
    pub fn render(&self, name: &str, data: &Value) -> Result<String, RenderError> {
        let nodes = self
            .files
            .get(name)
            .ok_or_else(|| RenderError::new(name, 0, "no such template"))?;
        let mut scope = Scope {
            r: self,
            file: name.to_string(),
            vars: vec![("$".into(), data.clone())],
            depth: 0,
        };
        let mut out = String::new();
        scope.nodes(nodes, data, &mut out)?;
        Ok(out)
    }
}

impl Scope<'_> {
    pub fn err(&self, line: usize, msg: impl Into<String>) -> RenderError {
        RenderError::new(&self.file, line, msg)
    }

    /// Renders a named template (`include` / `template`).
    pub fn call_define(
        &mut self,
        name: &str,
        dot: &Value,
        line: usize,
    ) -> Result<String, RenderError> {
        let (file, body) = self
            .r
            .defines
            .get(name)
            .ok_or_else(|| self.err(line, format!("no template {name:?} is defined")))?;
        if self.depth > 64 {
            return Err(self.err(line, format!("template {name:?} recurses too deeply")));
        }
        let mut inner = Scope {
            r: self.r,
            file: file.clone(),
            vars: vec![("$".into(), dot.clone())],
            depth: self.depth + 1,
        };
        let mut out = String::new();
        inner.nodes(body, dot, &mut out)?;
        Ok(out)
    }

    fn nodes(&mut self, nodes: &[Node], dot: &Value, out: &mut String) -> Result<(), RenderError> {
        for n in nodes {
            self.node(n, dot, out)?;
        }
        Ok(())
    }

    fn block(&mut self, nodes: &[Node], dot: &Value, out: &mut String) -> Result<(), RenderError> {
        let mark = self.vars.len();
        let r = self.nodes(nodes, dot, out);
        self.vars.truncate(mark);
        r
    }

    fn node(&mut self, n: &Node, dot: &Value, out: &mut String) -> Result<(), RenderError> {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => {
                let v = self.pipe(p, dot)?;
                if p.decl.is_empty() {
                    out.push_str(&print(&v));
                }
            }
            Node::If {
                branches,
                otherwise,
            } => {
                for (cond, body) in branches {
                    let mark = self.vars.len();
                    let v = self.pipe(cond, dot)?;
                    if truthy(&v) {
                        let r = self.nodes(body, dot, out);
                        self.vars.truncate(mark);
                        return r;
                    }
                    self.vars.truncate(mark);
                }
                self.block(otherwise, dot, out)?;
            }
            Node::With {
                pipe,
                body,
                otherwise,
            } => {
                let mark = self.vars.len();
                let v = self.pipe(pipe, dot)?;
                let r = if truthy(&v) {
                    self.nodes(body, &v, out)
                } else {
                    self.nodes(otherwise, dot, out)
                };
                self.vars.truncate(mark);
                r?;
            }
            Node::Range {
                pipe,
                body,
                otherwise,
            } => {
                let mut p = pipe.clone();
                let decl = std::mem::take(&mut p.decl);
                let v = self.pipe(&p, dot)?;
                let items: Vec<(Value, Value)> = match &v {
                    Value::Array(a) => a
                        .iter()
                        .enumerate()
                        .map(|(i, x)| (Value::from(i), x.clone()))
                        .collect(),
                    Value::Object(o) => {
                        let mut keys: Vec<&String> = o.keys().collect();
                        keys.sort();
                        keys.into_iter()
                            .map(|k| (Value::String(k.clone()), o[k].clone()))
                            .collect()
                    }
                    Value::Number(n) if n.as_i64().is_some() => (0..n.as_i64().unwrap_or(0))
                        .map(|i| (Value::from(i), Value::from(i)))
                        .collect(),
                    Value::Null => Vec::new(),
                    other => {
                        return Err(self.err(
                            pipe.line,
                            format!("range can't iterate over {}", print(other)),
                        ));
                    }
                };
                if items.is_empty() {
                    return self.block(otherwise, dot, out);
                }
                for (k, item) in items {
                    let mark = self.vars.len();
                    match decl.len() {
                        0 => {}
                        1 => self.vars.push((decl[0].clone(), item.clone())),
                        _ => {
                            self.vars.push((decl[0].clone(), k));
                            self.vars.push((decl[1].clone(), item.clone()));
                        }
                    }
                    let r = self.nodes(body, &item, out);
                    self.vars.truncate(mark);
                    r?;
                }
            }
            Node::Template { name, pipe, line } => {
                let d = match pipe {
                    Some(p) => self.pipe(p, dot)?,
                    None => Value::Null,
                };
                let s = self.call_define(name, &d, *line)?;
                out.push_str(&s);
            }
        }
        Ok(())
    }

    fn var(&self, name: &str, line: usize) -> Result<Value, RenderError> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| self.err(line, format!("undefined variable {name}")))
    }

    pub fn pipe(&mut self, p: &Pipe, dot: &Value) -> Result<Value, RenderError> {
        let mut val: Option<Value> = None;
        for cmd in &p.cmds {
            val = Some(self.cmd(cmd, dot, val, p.line)?);
        }
        let v = val.unwrap_or(Value::Null);
        if !p.decl.is_empty() {
            let name = &p.decl[p.decl.len() - 1];
            if p.assign {
                let slot = self
                    .vars
                    .iter_mut()
                    .rev()
                    .find(|(n, _)| n == name)
                    .ok_or_else(|| {
                        RenderError::new(&self.file, p.line, format!("undefined variable {name}"))
                    })?;
                slot.1 = v.clone();
            } else {
                self.vars.push((name.clone(), v.clone()));
            }
        }
        Ok(v)
    }

    fn arg(&mut self, a: &Arg, dot: &Value, line: usize) -> Result<Value, RenderError> {
        Ok(match a {
            Arg::Dot(f) => field(dot, f),
            Arg::Var(n, f) => field(&self.var(n, line)?, f),
            Arg::Str(s) => Value::String(s.clone()),
            Arg::Int(i) => Value::from(*i),
            Arg::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Arg::Bool(b) => Value::Bool(*b),
            Arg::Nil => Value::Null,
            Arg::Sub(p, f) => field(&self.pipe(p, dot)?, f),
            Arg::Ident(name) => self.call(name, &[], dot, line)?,
        })
    }

    fn cmd(
        &mut self,
        c: &Cmd,
        dot: &Value,
        piped: Option<Value>,
        line: usize,
    ) -> Result<Value, RenderError> {
        if let Arg::Ident(name) = &c.args[0] {
            // `and`/`or` evaluate lazily in Go; evaluating all arguments is equivalent for our data.
            let mut args = Vec::with_capacity(c.args.len());
            for a in &c.args[1..] {
                args.push(self.arg(a, dot, line)?);
            }
            if let Some(p) = piped {
                args.push(p);
            }
            return self.call(name, &args, dot, line);
        }
        if c.args.len() > 1 || piped.is_some() {
            let what = match &c.args[0] {
                Arg::Dot(f) => format!(".{}", f.join(".")),
                Arg::Var(n, f) if f.is_empty() => n.clone(),
                Arg::Var(n, f) => format!("{n}.{}", f.join(".")),
                _ => "a value".to_string(),
            };
            return Err(self.err(
                line,
                format!(
                    "`{what}` is given arguments: methods (such as `.Files.Glob`, `.Files.Get`, \
                     `.Capabilities.APIVersions.Has`) are not supported by csctl's renderer (see README, \
                     \"What csctl can render\")"
                ),
            ));
        }
        self.arg(&c.args[0], dot, line)
    }

    fn call(
        &mut self,
        name: &str,
        args: &[Value],
        dot: &Value,
        line: usize,
    ) -> Result<Value, RenderError> {
        let _ = dot;
        funcs::call(self, name, args, line)
    }
}
