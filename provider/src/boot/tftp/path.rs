//! Confines requested file names to the TFTP root.
//!
//! PXE firmware often asks for `/undionly.kpxe`: one leading `/` means "the root" (as with tftpd-hpa's `-s`).
//! Anything else that could leave the root is refused: a second leading `/`, `..` components, and symlinks
//! whose target lies outside the root (the path is canonicalized and must stay under the canonical root).

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// Why a name was refused; maps onto TFTP error codes 1 and 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Error 1.
    NotFound,
    /// Error 2, with the reason sent to the client.
    AccessViolation(&'static str),
}

/// Resolves `name` under the canonical `root` without touching the file system beyond `root`.
pub fn confine(root: &Path, name: &str) -> Result<PathBuf, Refusal> {
    let rel = name.strip_prefix('/').unwrap_or(name);
    if rel.is_empty() {
        return Err(Refusal::NotFound);
    }
    let mut out = root.to_path_buf();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(Refusal::AccessViolation("\"..\" is not allowed")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(Refusal::AccessViolation("absolute paths are not allowed"));
            }
        }
    }
    Ok(out)
}

/// Opens `name` for reading if it is a regular file inside `root` (canonical). Blocking: call off the reactor.
pub fn open(root: &Path, name: &str) -> Result<(File, u64), Refusal> {
    let candidate = confine(root, name)?;
    let real = candidate.canonicalize().map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => Refusal::AccessViolation("permission denied"),
        _ => Refusal::NotFound,
    })?;
    if !real.starts_with(root) {
        return Err(Refusal::AccessViolation(
            "the path leads outside the TFTP root",
        ));
    }
    // O_NOFOLLOW: the canonical path has no symlinks; one swapped in since is refused, not followed.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&real)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Refusal::NotFound,
            _ => Refusal::AccessViolation("cannot open the file"),
        })?;
    let meta = file.metadata().map_err(|_| Refusal::NotFound)?;
    if !meta.is_file() {
        return Err(Refusal::NotFound);
    }
    Ok((file, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confine_strips_one_slash_and_refuses_escapes() {
        let root = Path::new("/srv/tftp");
        assert_eq!(
            confine(root, "/undionly.kpxe").unwrap(),
            root.join("undionly.kpxe")
        );
        assert_eq!(
            confine(root, "efi/./snponly.efi").unwrap(),
            root.join("efi/snponly.efi")
        );
        assert_eq!(
            confine(root, "//etc/passwd"),
            Err(Refusal::AccessViolation("absolute paths are not allowed"))
        );
        assert_eq!(
            confine(root, "../etc/passwd"),
            Err(Refusal::AccessViolation("\"..\" is not allowed"))
        );
        assert_eq!(
            confine(root, "efi/../../etc/passwd"),
            Err(Refusal::AccessViolation("\"..\" is not allowed"))
        );
        assert_eq!(confine(root, "/"), Err(Refusal::NotFound));
    }

    #[test]
    fn open_refuses_symlinks_out_of_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"secret").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("ok"), b"hello").unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("escape")).unwrap();
        std::os::unix::fs::symlink("../ok", root.join("sub/inside")).unwrap();

        let (_, len) = open(&root, "ok").unwrap();
        assert_eq!(len, 5);
        // A symlink that stays inside the root is fine.
        assert_eq!(open(&root, "sub/inside").unwrap().1, 5);
        assert_eq!(
            open(&root, "escape").unwrap_err(),
            Refusal::AccessViolation("the path leads outside the TFTP root")
        );
        assert_eq!(open(&root, "missing").unwrap_err(), Refusal::NotFound);
        assert_eq!(open(&root, "sub").unwrap_err(), Refusal::NotFound);
    }
}
