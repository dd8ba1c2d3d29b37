//! Pulling a release: every layer by its title into a temporary directory beside the destination, every
//! digest verified, then one rename. Hostile titles (absolute, `..`, separators) are refused before
//! anything is written.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::digest::Digest;
use super::error::OciError;
use super::manifest::{Descriptor, ImageManifest};
use super::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(
        "layer {digest} has an unsafe title {title:?}: a release file name must be a plain name (no /, \\, .. or absolute paths); refusing to write anything"
    )]
    UnsafeTitle { title: String, digest: Digest },
    #[error("two layers are titled {0:?}; refusing to write anything")]
    DuplicateTitle(String),
    #[error("{0} exists and is not empty; pass --force to replace it")]
    Exists(PathBuf),
    #[error(transparent)]
    Oci(#[from] OciError),
}

#[derive(Debug)]
pub struct Pulled {
    pub digest: Digest,
    pub files: Vec<(String, u64)>,
    pub skipped_untitled: usize,
}

/// A title is safe if it is one normal path component.
pub fn safe_title(title: &str) -> bool {
    !title.is_empty()
        && title != "."
        && title != ".."
        && !title.contains(['/', '\\', '\0'])
        && title.len() <= 255
}

/// Fetches and parses the manifest of `reference` (tag or digest) and checks every title.
pub async fn release_manifest(
    store: &Store,
    reference: &str,
) -> Result<(ImageManifest, Digest), PullError> {
    let (bytes, digest) = store.manifest(reference).await?;
    let manifest = ImageManifest::parse(&bytes, None).map_err(|source| OciError::Manifest {
        reference: format!("{}:{reference}", store.describe()),
        source,
    })?;
    let mut seen = BTreeSet::new();
    for layer in &manifest.layers {
        if let Some(title) = layer.title() {
            if !safe_title(title) {
                return Err(PullError::UnsafeTitle {
                    title: title.to_string(),
                    digest: layer.digest.clone(),
                });
            }
            if !seen.insert(title.to_string()) {
                return Err(PullError::DuplicateTitle(title.to_string()));
            }
        }
    }
    Ok((manifest, digest))
}

pub fn titled_layers(manifest: &ImageManifest) -> impl Iterator<Item = (&str, &Descriptor)> {
    manifest
        .layers
        .iter()
        .filter_map(|l| l.title().map(|t| (t, l)))
}

pub async fn pull(
    store: &Store,
    reference: &str,
    out: &Path,
    force: bool,
) -> Result<Pulled, PullError> {
    let (manifest, digest) = release_manifest(store, reference).await?;
    let out_exists_nonempty = out.is_dir()
        && std::fs::read_dir(out)
            .map_err(|e| OciError::io(out, e))?
            .next()
            .is_some();
    if (out_exists_nonempty || (out.exists() && !out.is_dir())) && !force {
        return Err(PullError::Exists(out.to_path_buf()));
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| OciError::io(&parent, e))?;
    // Same filesystem as the destination, so the final rename is atomic; removed on any error.
    let tmp = tempfile::Builder::new()
        .prefix(".csctl-pull-")
        .tempdir_in(&parent)
        .map_err(|e| OciError::io(&parent, e))?;
    let mut files = Vec::new();
    for (title, layer) in titled_layers(&manifest) {
        store
            .fetch_blob(&layer.digest, layer.size, &tmp.path().join(title), title)
            .await?;
        files.push((title.to_string(), layer.size));
    }
    let skipped_untitled = manifest.layers.len() - files.len();
    let staged = tmp.keep();
    let result = replace_dir(&staged, out);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staged);
    }
    result?;
    Ok(Pulled {
        digest,
        files,
        skipped_untitled,
    })
}

fn replace_dir(staged: &Path, out: &Path) -> Result<(), OciError> {
    if !out.exists() {
        return std::fs::rename(staged, out).map_err(|e| OciError::io(out, e));
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let old = parent.join(format!(
        ".csctl-old-{}-{}",
        out.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    std::fs::rename(out, &old).map_err(|e| OciError::io(out, e))?;
    if let Err(e) = std::fs::rename(staged, out) {
        let _ = std::fs::rename(&old, out);
        return Err(OciError::io(out, e));
    }
    if old.is_dir() {
        std::fs::remove_dir_all(&old).map_err(|e| OciError::io(&old, e))
    } else {
        std::fs::remove_file(&old).map_err(|e| OciError::io(&old, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles() {
        for bad in ["", ".", "..", "../x", "/etc/passwd", "a/b", "a\\b", "x\0"] {
            assert!(!safe_title(bad), "{bad:?}");
        }
        for good in ["metadata.yaml", "..hidden", "a..b.tgz"] {
            assert!(safe_title(good), "{good:?}");
        }
    }
}
