//! How results reach the user: progress on stderr, the result on stdout as text or JSON.
use std::io::Write;

use clap::ValueEnum;

/// The result format on stdout (`--format`). No doc comments on the variants: clap would print them in
/// `--help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Passed to every command.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub format: Format,
    pub quiet: bool,
}

impl Ctx {
    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// A progress line for a long step (stderr, so stdout stays parseable).
    pub fn progress(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            let _ = writeln!(std::io::stderr(), "{}", msg.as_ref());
        }
    }

    /// Prints the command's result: `text` in text mode, `json` (one document) in JSON mode.
    pub fn emit(&self, text: impl AsRef<str>, json: &serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = match self.format {
            Format::Text => write!(out, "{}", text.as_ref()),
            Format::Json => writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(json).unwrap_or_default()
            ),
        };
    }
}
