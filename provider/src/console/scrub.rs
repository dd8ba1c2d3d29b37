//! What never leaves a console log: per-boot tokens (64 hex digits; the kernel prints its command line,
//! which carries the NoCloud URL with the token) and `key=value` secrets. Terminal control sequences are
//! dropped too, so a log is plain text.

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// Keys whose `key=value` / `key: value` values are secrets (matched case-insensitively as a substring of
/// the key).
const SECRET_KEYS: [&str; 5] = ["password", "passwd", "secret", "token", "apikey"];

/// A hex run this long or longer is treated as a secret (tokens are 64; hashes of 32+ go too, which costs
/// a debugging hint at most).
const HEX_RUN: usize = 32;

/// One console line, cleaned: control sequences and characters removed (tabs kept), secrets redacted.
pub fn line(raw: &[u8]) -> String {
    redact(&printable(raw))
}

/// Text without ANSI escape sequences (CSI `ESC [ … final`, and two-byte `ESC x`) and control characters.
fn printable(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: parameters and intermediates, up to the final byte (@ to ~); any other escape is
                // two characters.
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn redact(s: &str) -> String {
    let hex_free = redact_hex_runs(s);
    redact_secret_values(&hex_free)
}

fn redact_hex_runs(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_hexdigit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_hexdigit() {
                i += 1;
            }
            if i - start >= HEX_RUN {
                out.push_str(REDACTED);
            } else {
                out.push_str(&s[start..i]);
            }
        } else {
            // Copy up to the next hex digit (keeps multi-byte characters whole: hex digits are ASCII).
            let start = i;
            while i < b.len() && !b[i].is_ascii_hexdigit() {
                i += 1;
            }
            out.push_str(&s[start..i]);
        }
    }
    out
}

/// `…password=VALUE`, `…token: VALUE` and the like: VALUE (up to white space, `&`, `;` or `,`) redacted.
fn redact_secret_values(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let sep = bytes[i];
        if sep == b'=' || sep == b':' {
            let key_start = lower[..i]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'))
                .map_or(0, |p| p + 1);
            let key = &lower[key_start..i];
            if !key.is_empty() && SECRET_KEYS.iter().any(|k| key.contains(k)) {
                let mut v = i + 1;
                if sep == b':' {
                    while v < bytes.len() && bytes[v] == b' ' {
                        v += 1;
                    }
                }
                let mut end = v;
                while end < bytes.len() && !b" \t&;,\"'".contains(&bytes[end]) {
                    end += 1;
                }
                if end > v && &s[v..end] != REDACTED {
                    out.push_str(&s[copied..v]);
                    out.push_str(REDACTED);
                    copied = end;
                }
                i = end.max(i + 1);
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&s[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_in_urls_are_redacted() {
        let token = "feedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedface";
        let l = line(
            format!("[    0.000000] Command line: console=ttyS0 ds=nocloud;s=http://10.0.0.1:8080/nocloud/{token}/ quiet")
                .as_bytes(),
        );
        assert!(!l.contains(token), "{l}");
        assert_eq!(
            l,
            "[    0.000000] Command line: console=ttyS0 ds=nocloud;s=http://10.0.0.1:8080/nocloud/[redacted]/ quiet"
        );
        // Short hex (addresses, error codes) stays.
        assert_eq!(
            line(b"mem 0x000000007ffdffff usable"),
            "mem 0x000000007ffdffff usable"
        );
    }

    #[test]
    fn secret_values_are_redacted() {
        assert_eq!(
            line(b"root_password=hunter2 next=1"),
            "root_password=[redacted] next=1"
        );
        assert_eq!(line(b"BMC Token: abc123, ok"), "BMC Token: [redacted], ok");
        assert_eq!(line(b"ssh_pwauth: true"), "ssh_pwauth: true");
        assert_eq!(line(b"a=b c=d"), "a=b c=d");
    }

    #[test]
    fn control_sequences_go_and_text_stays() {
        assert_eq!(
            line(b"\x1b[2J\x1b[01;01HiPXE 1.21 -- Open Source\x07 Network\tBoot\r"),
            "iPXE 1.21 -- Open Source Network\tBoot"
        );
        assert_eq!(line("Grüße \u{fffd}".as_bytes()), "Grüße \u{fffd}");
        assert_eq!(line(b"bad \xff byte"), "bad \u{fffd} byte");
        assert_eq!(line(b"\x1b"), "");
    }
}
