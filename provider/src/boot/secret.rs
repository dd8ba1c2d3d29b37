//! A string that must not leak: user-data, ignition configs, BMC passwords.

use std::fmt;

/// Secret text. `Debug` prints its length only; the value is reachable through [`Secret::expose`] alone, so a
/// stray `{:?}` in a log line or an error cannot print it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for the one place that must send it (an authenticated HTTP response, a BMC login).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<redacted, {} bytes>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts() {
        let s = Secret::new("#cloud-config\npassword: hunter2\n");
        let d = format!("{s:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("redacted"));
        assert_eq!(s.expose(), "#cloud-config\npassword: hunter2\n");
    }
}
