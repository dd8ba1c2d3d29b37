//! Errors that decide the exit code.
use std::fmt;

pub use metadata_schema::problem::{Problem, Severity};

/// The input is invalid (exit code 3). Carries every problem found, not just the first.
#[derive(Debug, thiserror::Error)]
pub struct InvalidInput {
    pub problems: Vec<Problem>,
}

impl InvalidInput {
    pub fn one(problem: Problem) -> Self {
        Self {
            problems: vec![problem],
        }
    }
}

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors: Vec<&Problem> = self
            .problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .collect();
        write!(f, "invalid input ({} problem(s))", errors.len())?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

/// The command line is inconsistent (exit code 2, like clap's own usage errors).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The problems were already reported on stdout; only the exit code is left to set.
#[derive(Debug, thiserror::Error)]
#[error("problems found (exit code {0})")]
pub struct Reported(pub u8);
