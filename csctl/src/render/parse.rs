//! Lexing and parsing of the Go text/template subset (see `mod.rs` for what is supported).
use super::RenderError;

#[derive(Debug, Clone)]
pub enum Node {
    Text(String),
    /// `{{ pipeline }}` (output) or `{{ $x := pipeline }}` (no output).
    Action(Pipe),
    If {
        branches: Vec<(Pipe, Vec<Node>)>,
        otherwise: Vec<Node>,
    },
    Range {
        pipe: Pipe,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
    With {
        pipe: Pipe,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
    Template {
        name: String,
        pipe: Option<Pipe>,
        line: usize,
    },
}

#[derive(Debug, Clone)]
pub struct Pipe {
    /// Variables declared (`$x :=`) or assigned (`$x =`), and which of the two.
    pub decl: Vec<String>,
    pub assign: bool,
    pub cmds: Vec<Cmd>,
    pub line: usize,
}

#[derive(Debug, Clone)]
pub struct Cmd {
    pub args: Vec<Arg>,
}

#[derive(Debug, Clone)]
pub enum Arg {
    /// `.` followed by fields (`.Values.x` → ["Values", "x"]; `.` → []).
    Dot(Vec<String>),
    /// `$name.field...` (`$` alone is the root).
    Var(String, Vec<String>),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    /// A function name.
    Ident(String),
    /// `(pipeline).field...`
    Sub(Box<Pipe>, Vec<String>),
}

/// A parsed template file: its top-level nodes and the `define`d templates in it.
pub struct Parsed {
    pub nodes: Vec<Node>,
    pub defines: Vec<(String, Vec<Node>)>,
}

#[derive(Debug)]
enum Tok {
    Text(String),
    Action(String, usize),
}

fn line_of(src: &str, pos: usize) -> usize {
    src[..pos].bytes().filter(|&b| b == b'\n').count() + 1
}

fn lex(src: &str, file: &str) -> Result<Vec<Tok>, RenderError> {
    let mut toks = Vec::new();
    let mut rest = 0usize;
    let mut trim_next = false;
    while let Some(off) = src[rest..].find("{{") {
        let start = rest + off;
        let mut text = src[rest..start].to_string();
        let mut inner_start = start + 2;
        let trim_left = src[inner_start..].starts_with("- ")
            || src[inner_start..].starts_with("-\n")
            || src[inner_start..].starts_with("-\t");
        if trim_left {
            text = text.trim_end().to_string();
            inner_start += 1;
        }
        if trim_next {
            text = text.trim_start().to_string();
        }
        toks.push(Tok::Text(text));
        let line = line_of(src, start);
        // Find the closing `}}`, skipping over string literals and comments.
        let body = &src[inner_start..];
        let end_rel = if body.trim_start().starts_with("/*") {
            let c = body
                .find("*/")
                .ok_or_else(|| RenderError::new(file, line, "unclosed comment"))?;
            body[c..].find("}}").map(|e| c + e)
        } else {
            find_close(body)
        }
        .ok_or_else(|| RenderError::new(file, line, "unclosed action: missing `}}`"))?;
        let mut inner = &body[..end_rel];
        let trim_right = inner.ends_with(" -") || inner.ends_with("\n-") || inner.ends_with("\t-");
        if trim_right {
            inner = &inner[..inner.len() - 1];
        }
        trim_next = trim_right;
        let inner = inner.trim();
        if !(inner.starts_with("/*") && inner.ends_with("*/")) {
            toks.push(Tok::Action(inner.to_string(), line));
        }
        rest = inner_start + end_rel + 2;
    }
    let mut text = src[rest..].to_string();
    if trim_next {
        text = text.trim_start().to_string();
    }
    toks.push(Tok::Text(text));
    Ok(toks)
}

fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b[i + 1] == b'}' => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Words of an action, respecting string literals and parentheses.
#[derive(Debug, Clone, PartialEq)]
enum W {
    Word(String),
    Str(String),
    Open,
    Close,
    Pipe,
    Decl,
    Assign,
    Comma,
    /// `.Field.Field` right after `)`.
    Fields(String),
}

fn words(s: &str, file: &str, line: usize) -> Result<Vec<W>, RenderError> {
    let mut out = Vec::new();
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        match ch {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push(W::Open);
                i += 1;
            }
            ')' => {
                out.push(W::Close);
                i += 1;
                // `(pipeline).Field`: a field chain right after `)`, with no space, belongs to the parenthesised
                // expression; `(pipeline) .Field` is a second argument (Go's lexer tells them apart the same way).
                if c.get(i) == Some(&'.')
                    && c.get(i + 1)
                        .is_some_and(|ch| ch.is_alphanumeric() || *ch == '_')
                {
                    let mut v = String::new();
                    while i < c.len() && (c[i] == '.' || c[i].is_alphanumeric() || c[i] == '_') {
                        v.push(c[i]);
                        i += 1;
                    }
                    out.push(W::Fields(v));
                }
            }
            '|' => {
                out.push(W::Pipe);
                i += 1;
            }
            ',' => {
                out.push(W::Comma);
                i += 1;
            }
            ':' if c.get(i + 1) == Some(&'=') => {
                out.push(W::Decl);
                i += 2;
            }
            '=' => {
                out.push(W::Assign);
                i += 1;
            }
            '"' => {
                let mut v = String::new();
                i += 1;
                while i < c.len() && c[i] != '"' {
                    if c[i] == '\\' && i + 1 < c.len() {
                        i += 1;
                        // Go's escapes: \a \b \f \n \r \t \v, \xHH, \uHHHH, \UHHHHHHHH, octal \NNN.
                        let hex = |i: &mut usize, n: usize| -> Result<char, RenderError> {
                            let digits: String =
                                c.get(*i + 1..*i + 1 + n).unwrap_or(&[]).iter().collect();
                            let ch = u32::from_str_radix(&digits, 16)
                                .ok()
                                .filter(|_| digits.len() == n)
                                .and_then(char::from_u32)
                                .ok_or_else(|| {
                                    RenderError::new(
                                        file,
                                        line,
                                        format!("bad escape in string: \\{}{digits}", c[*i]),
                                    )
                                })?;
                            *i += n;
                            Ok(ch)
                        };
                        let ch = match c[i] {
                            'a' => '\u{7}',
                            'b' => '\u{8}',
                            'f' => '\u{c}',
                            'n' => '\n',
                            'r' => '\r',
                            't' => '\t',
                            'v' => '\u{b}',
                            'x' => hex(&mut i, 2)?,
                            'u' => hex(&mut i, 4)?,
                            'U' => hex(&mut i, 8)?,
                            d @ '0'..='7' => {
                                let digits: String =
                                    c.get(i..i + 3).unwrap_or(&[]).iter().collect();
                                let n = u32::from_str_radix(&digits, 8)
                                    .ok()
                                    .filter(|n| digits.len() == 3 && *n < 256)
                                    .ok_or_else(|| {
                                        RenderError::new(
                                            file,
                                            line,
                                            format!("bad escape in string: \\{d}"),
                                        )
                                    })?;
                                i += 2;
                                char::from_u32(n).unwrap_or('\u{fffd}')
                            }
                            other => other,
                        };
                        v.push(ch);
                    } else {
                        v.push(c[i]);
                    }
                    i += 1;
                }
                if i >= c.len() {
                    return Err(RenderError::new(file, line, "unterminated string"));
                }
                i += 1;
                out.push(W::Str(v));
            }
            '`' => {
                let mut v = String::new();
                i += 1;
                while i < c.len() && c[i] != '`' {
                    v.push(c[i]);
                    i += 1;
                }
                i += 1;
                out.push(W::Str(v));
            }
            _ => {
                let mut v = String::new();
                while i < c.len()
                    && !" \t\n\r()|,\"`".contains(c[i])
                    && !(c[i] == ':' && c.get(i + 1) == Some(&'='))
                {
                    if c[i] == '=' && !v.is_empty() {
                        break;
                    }
                    v.push(c[i]);
                    i += 1;
                }
                out.push(W::Word(v));
            }
        }
    }
    Ok(out)
}

struct P<'a> {
    w: Vec<W>,
    i: usize,
    file: &'a str,
    line: usize,
}

impl P<'_> {
    fn err(&self, msg: impl Into<String>) -> RenderError {
        RenderError::new(self.file, self.line, msg)
    }

    fn pipe(&mut self, in_parens: bool) -> Result<Pipe, RenderError> {
        let mut decl = Vec::new();
        let mut assign = false;
        // `$a := ` / `$a, $b := ` / `$a = `
        let save = self.i;
        let mut names = Vec::new();
        while let Some(W::Word(w)) = self.w.get(self.i) {
            if !w.starts_with('$') {
                break;
            }
            names.push(w.clone());
            self.i += 1;
            if self.w.get(self.i) == Some(&W::Comma) {
                self.i += 1;
                continue;
            }
            break;
        }
        match self.w.get(self.i) {
            Some(W::Decl) if !names.is_empty() => {
                decl = names;
                self.i += 1;
            }
            Some(W::Assign) if !names.is_empty() => {
                decl = names;
                assign = true;
                self.i += 1;
            }
            _ => self.i = save,
        }
        let mut cmds = vec![];
        loop {
            let mut args = Vec::new();
            loop {
                match self.w.get(self.i).cloned() {
                    None => break,
                    Some(W::Pipe) => break,
                    Some(W::Close) if in_parens => break,
                    Some(W::Close) => return Err(self.err("unexpected `)`")),
                    Some(W::Open) => {
                        self.i += 1;
                        let inner = self.pipe(true)?;
                        if self.w.get(self.i) != Some(&W::Close) {
                            return Err(self.err("missing `)`"));
                        }
                        self.i += 1;
                        let mut fields = Vec::new();
                        if let Some(W::Fields(w)) = self.w.get(self.i) {
                            fields = w[1..].split('.').map(str::to_string).collect();
                            self.i += 1;
                        }
                        args.push(Arg::Sub(Box::new(inner), fields));
                    }
                    Some(W::Str(s)) => {
                        self.i += 1;
                        args.push(Arg::Str(s));
                    }
                    Some(W::Word(w)) => {
                        self.i += 1;
                        args.push(self.word(&w)?);
                    }
                    Some(other) => return Err(self.err(format!("unexpected {other:?}"))),
                }
            }
            if args.is_empty() {
                return Err(self.err("empty command in pipeline"));
            }
            cmds.push(Cmd { args });
            if self.w.get(self.i) == Some(&W::Pipe) {
                self.i += 1;
                continue;
            }
            break;
        }
        Ok(Pipe {
            decl,
            assign,
            cmds,
            line: self.line,
        })
    }

    fn word(&self, w: &str) -> Result<Arg, RenderError> {
        let fields = |s: &str| -> Vec<String> {
            s.split('.')
                .filter(|f| !f.is_empty())
                .map(str::to_string)
                .collect()
        };
        Ok(match w {
            "true" => Arg::Bool(true),
            "false" => Arg::Bool(false),
            "nil" => Arg::Nil,
            _ if w.starts_with('.') => Arg::Dot(fields(w)),
            _ if w.starts_with('$') => {
                let (name, rest) = match w.find('.') {
                    Some(p) => (&w[..p], &w[p..]),
                    None => (w, ""),
                };
                Arg::Var(name.to_string(), fields(rest))
            }
            _ if w.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+') => {
                if let Ok(i) = w.parse::<i64>() {
                    Arg::Int(i)
                } else if let Ok(f) = w.parse::<f64>() {
                    Arg::Float(f)
                } else {
                    return Err(self.err(format!("bad number {w:?}")));
                }
            }
            _ if w.starts_with('\'') => {
                return Err(self.err(format!(
                    "character constants ({w}) are not supported by csctl's renderer"
                )));
            }
            _ if w.chars().all(|c| c.is_alphanumeric() || c == '_') => Arg::Ident(w.to_string()),
            _ => return Err(self.err(format!("cannot parse {w:?}"))),
        })
    }
}

fn parse_pipe(s: &str, file: &str, line: usize) -> Result<Pipe, RenderError> {
    let mut p = P {
        w: words(s, file, line)?,
        i: 0,
        file,
        line,
    };
    let pipe = p.pipe(false)?;
    if p.i != p.w.len() {
        return Err(p.err(format!("unexpected {:?} in {s:?}", p.w[p.i])));
    }
    Ok(pipe)
}

/// What ended a list of nodes.
#[allow(clippy::enum_variant_names)] // `End::End` is the `{{ end }}` keyword
enum End {
    Eof,
    End,
    Else(String, usize),
}

struct Parser<'a> {
    toks: std::vec::IntoIter<Tok>,
    file: &'a str,
    defines: Vec<(String, Vec<Node>)>,
}

impl Parser<'_> {
    fn list(&mut self) -> Result<(Vec<Node>, End), RenderError> {
        let mut nodes = Vec::new();
        while let Some(tok) = self.toks.next() {
            let (action, line) = match tok {
                Tok::Text(t) => {
                    if !t.is_empty() {
                        nodes.push(Node::Text(t));
                    }
                    continue;
                }
                Tok::Action(a, l) => (a, l),
            };
            let (kw, rest) = match action.split_once(|c: char| c.is_whitespace()) {
                Some((k, r)) => (k, r.trim()),
                None => (action.as_str(), ""),
            };
            match kw {
                "end" => return Ok((nodes, End::End)),
                "else" => return Ok((nodes, End::Else(rest.to_string(), line))),
                "if" => {
                    let mut branches = vec![(parse_pipe(rest, self.file, line)?, Vec::new())];
                    let mut otherwise = Vec::new();
                    loop {
                        let (body, end) = self.list()?;
                        if let Some(last) = branches.last_mut() {
                            last.1 = body;
                        }
                        match end {
                            End::End => break,
                            End::Else(cond, l) => {
                                if let Some(c) = cond.strip_prefix("if ") {
                                    branches
                                        .push((parse_pipe(c.trim(), self.file, l)?, Vec::new()));
                                } else if cond.is_empty() {
                                    let (body, end) = self.list()?;
                                    if !matches!(end, End::End) {
                                        return Err(RenderError::new(
                                            self.file,
                                            l,
                                            "expected {{ end }} after {{ else }}",
                                        ));
                                    }
                                    otherwise = body;
                                    break;
                                } else {
                                    return Err(RenderError::new(
                                        self.file,
                                        l,
                                        format!(
                                            "`else {cond}` is not supported by csctl's renderer (only `else` and `else if`)"
                                        ),
                                    ));
                                }
                            }
                            End::Eof => {
                                return Err(RenderError::new(
                                    self.file,
                                    line,
                                    "`if` without `end`",
                                ));
                            }
                        }
                    }
                    // A branch body may legitimately be empty; the loop above assigns bodies in order.
                    nodes.push(Node::If {
                        branches,
                        otherwise,
                    });
                }
                "range" | "with" => {
                    let pipe = parse_pipe(rest, self.file, line)?;
                    let (body, end) = self.list()?;
                    let otherwise = match end {
                        End::End => Vec::new(),
                        End::Else(c, l) if c.is_empty() => {
                            let (o, end) = self.list()?;
                            if !matches!(end, End::End) {
                                return Err(RenderError::new(self.file, l, "expected {{ end }}"));
                            }
                            o
                        }
                        End::Else(c, l) => {
                            return Err(RenderError::new(
                                self.file,
                                l,
                                format!(
                                    "`else {c}` inside {kw} is not supported by csctl's renderer"
                                ),
                            ));
                        }
                        End::Eof => {
                            return Err(RenderError::new(
                                self.file,
                                line,
                                format!("`{kw}` without `end`"),
                            ));
                        }
                    };
                    nodes.push(if kw == "range" {
                        Node::Range {
                            pipe,
                            body,
                            otherwise,
                        }
                    } else {
                        Node::With {
                            pipe,
                            body,
                            otherwise,
                        }
                    });
                }
                "define" => {
                    let name = match words(rest, self.file, line)?.first() {
                        Some(W::Str(s)) => s.clone(),
                        _ => {
                            return Err(RenderError::new(
                                self.file,
                                line,
                                "define needs a quoted name",
                            ));
                        }
                    };
                    let (body, end) = self.list()?;
                    if !matches!(end, End::End) {
                        return Err(RenderError::new(self.file, line, "`define` without `end`"));
                    }
                    self.defines.push((name, body));
                }
                "template" => {
                    let ws = words(rest, self.file, line)?;
                    let name = match ws.first() {
                        Some(W::Str(s)) => s.clone(),
                        _ => {
                            return Err(RenderError::new(
                                self.file,
                                line,
                                "template needs a quoted name",
                            ));
                        }
                    };
                    let after = rest.trim_start();
                    let after = &after[after.find(['"', '`']).map(|p| p + 1).unwrap_or(0)..];
                    let after = &after[after.find(['"', '`']).map(|p| p + 1).unwrap_or(0)..];
                    let pipe = if after.trim().is_empty() {
                        None
                    } else {
                        Some(parse_pipe(after.trim(), self.file, line)?)
                    };
                    nodes.push(Node::Template { name, pipe, line });
                }
                "block" | "break" | "continue" => {
                    return Err(RenderError::new(
                        self.file,
                        line,
                        format!(
                            "`{kw}` is not supported by csctl's renderer (see README, \"What csctl can render\")"
                        ),
                    ));
                }
                _ => nodes.push(Node::Action(parse_pipe(&action, self.file, line)?)),
            }
        }
        Ok((nodes, End::Eof))
    }
}

/// Parses a whole template file.
pub fn parse(src: &str, file: &str) -> Result<Parsed, RenderError> {
    let toks = lex(src, file)?;
    let mut p = Parser {
        toks: toks.into_iter(),
        file,
        defines: Vec::new(),
    };
    let (nodes, end) = p.list()?;
    match end {
        End::Eof => Ok(Parsed {
            nodes,
            defines: p.defines,
        }),
        End::End => Err(RenderError::new(file, 0, "unexpected {{ end }}")),
        End::Else(_, l) => Err(RenderError::new(file, l, "unexpected {{ else }}")),
    }
}
