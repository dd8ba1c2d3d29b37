//! The subset of `.helmignore` that `helm package` applies and charts use: comments, blank lines, `*`/`?`
//! globs on the base name (patterns without `/`), globs on the relative path (patterns with `/`), and a
//! trailing `/` for directories. Negations (`!pattern`) are not supported and are reported.

#[derive(Debug, Default)]
pub struct HelmIgnore {
    patterns: Vec<(String, bool)>,
    /// Lines that use unsupported syntax.
    pub unsupported: Vec<String>,
}

impl HelmIgnore {
    pub fn parse(text: &str) -> Self {
        let mut out = Self::default();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with('!') || line.contains("**") {
                out.unsupported.push(line.to_string());
                continue;
            }
            let (pat, dir_only) = match line.strip_suffix('/') {
                Some(p) => (p.to_string(), true),
                None => (line.to_string(), false),
            };
            out.patterns
                .push((pat.trim_start_matches('/').to_string(), dir_only));
        }
        out
    }

    /// Is the file at `rel` (relative to the chart root) ignored?
    pub fn ignored(&self, rel: &str) -> bool {
        let parts: Vec<&str> = rel.split('/').collect();
        for (pat, dir_only) in &self.patterns {
            for i in 0..parts.len() {
                let is_dir = i + 1 < parts.len();
                if *dir_only && !is_dir {
                    continue;
                }
                let hit = if pat.contains('/') {
                    glob(pat, &parts[..=i].join("/"))
                } else {
                    glob(pat, parts[i])
                };
                if hit {
                    return true;
                }
            }
        }
        false
    }
}

/// `*` (any run of non-`/`), `?` (one non-`/` char), everything else literal.
fn glob(pat: &str, s: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let t: Vec<char> = s.chars().collect();
    fn go(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') => (0..=t.len())
                .take_while(|&i| i == 0 || t[i - 1] != '/')
                .any(|i| go(&p[1..], &t[i..])),
            Some('?') => t.first().is_some_and(|&c| c != '/') && go(&p[1..], &t[1..]),
            Some(c) => t.first() == Some(c) && go(&p[1..], &t[1..]),
        }
    }
    go(&p, &t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helm_default_patterns() {
        let h = HelmIgnore::parse(
            "# c\n.DS_Store\n.git/\n*.swp\n*~\n.vscode/\ntemplates/tmp-*.yaml\n!keep\n",
        );
        assert!(h.ignored("a/b.swp"));
        assert!(h.ignored(".git/config"));
        assert!(h.ignored("x~"));
        assert!(h.ignored("templates/tmp-1.yaml"));
        assert!(!h.ignored("templates/cluster-class.yaml"));
        assert!(!h.ignored(".helmignore"));
        assert!(!h.ignored(".gitkeep"));
        assert_eq!(h.unsupported, ["!keep"]);
    }
}
