//! Helpers shared by the csctl integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// The `csctl` binary built by cargo.
pub fn csctl() -> Command {
    let mut c = Command::cargo_bin("csctl").expect("csctl binary");
    c.env_remove("CSCTL_FORMAT");
    c
}

/// `$CLUSTER_STACKS_FIXTURES_DIR`, or a failure that says how to get it.
pub fn fixtures_dir() -> PathBuf {
    let dir = std::env::var_os("CLUSTER_STACKS_FIXTURES_DIR").unwrap_or_else(|| {
        panic!(
            "CLUSTER_STACKS_FIXTURES_DIR is not set: point it at the Cluster Stacks fixtures \
             (README, \"Test data\"; CI's .ci/run sets it)"
        )
    });
    PathBuf::from(dir)
}

/// Copies a directory tree (files made writable; symlinks replaced by copies of what they lead to).
pub fn copy_tree(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from).follow_links(true) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(from).unwrap();
        let dest = to.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
            let mut perm = std::fs::metadata(&dest).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            std::fs::set_permissions(&dest, perm).unwrap();
        }
    }
}

/// The checked-in test stack (`tests/fixtures/golden-stack`), copied to `dir`.
pub fn golden_stack(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden-stack");
    copy_tree(&src, dir);
    dir.to_path_buf()
}

/// File name → bytes of every file in a directory (flat).
pub fn read_flat(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        out.insert(
            e.file_name().to_string_lossy().into_owned(),
            std::fs::read(e.path()).unwrap(),
        );
    }
    out
}

/// Relative path → bytes of every file of the chart in `dir` (symlinks followed, as csctl packages a chart).
pub fn chart_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir).follow_links(true) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let rel = e
                .path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            files.insert(rel, std::fs::read(e.path()).unwrap());
        }
    }
    files
}

/// The chart made of `files` (as [`chart_files`] reads them), for `csctl::render::render_chart`.
pub fn chart_of(files: &BTreeMap<String, Vec<u8>>) -> csctl::render::Chart<'_> {
    csctl::render::Chart {
        files: files
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect(),
    }
}

/// `(path, mode, contents)` of every entry of a .tgz.
pub fn tgz_entries(data: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(data));
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mode = e.header().mode().unwrap();
        let mut buf = Vec::new();
        e.read_to_end(&mut buf).unwrap();
        out.push((path, mode, buf));
    }
    out
}

/// Directory names under `dir`.
pub fn subdirs(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
