//! `.tgz` archives as `csctl diff` reads them from a registry (`csctl::archive::read_files`: in memory,
//! nothing is extracted to disk), and the layer titles `csctl pull` writes files by (`safe_title`: the only
//! names from a registry that become paths). The input is read as it is and, when it is not gzip already,
//! as a raw tar stream gzipped here, so the fuzzer reaches the tar headers (sizes, long names, pax,
//! links) directly.
//! Invariants beyond "no panic": an archive that reads expands to at most the limit; one whose paths are
//! plain relative paths, written again by csctl's own writer (its tar stream), reads back to the same files; a title that
//! passes `safe_title`, joined to the pull's directory, is a direct child of it with that very name (no
//! `..`, no absolute path, no separator escapes the directory).
#![no_main]

use std::io::Write as _;
use std::path::{Component, Path};

use csctl::archive::{self, Entry};
use csctl::oci::pull::safe_title;
use libfuzzer_sys::fuzz_target;

const MAX_TOTAL: u64 = 1 << 20;

/// gzip in stored blocks: csctl's level 9 would cost most of each run.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    gz.write_all(data).expect("gzip in memory");
    gz.finish().expect("gzip in memory")
}

fn title(t: &str) {
    if !safe_title(t) {
        return;
    }
    let root = Path::new("/srv/release");
    let p = root.join(t);
    assert_eq!(p.parent(), Some(root), "{t:?} is not a child of the root");
    assert_eq!(p.file_name().and_then(|f| f.to_str()), Some(t), "{t:?}");
    assert!(
        p.components()
            .skip(root.components().count())
            .all(|c| matches!(c, Component::Normal(_))),
        "{t:?}"
    );
}

/// A path csctl writes: relative, `/`-separated, no empty, `.` or `..` components.
fn plain(p: &str) -> bool {
    !p.is_empty() && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

fn read(tgz: &[u8]) {
    let Ok(files) = archive::read_files(tgz, MAX_TOTAL) else {
        return;
    };
    let total: u64 = files.values().map(|d| d.len() as u64).sum();
    assert!(total <= MAX_TOTAL, "{total} bytes read");
    for p in files.keys() {
        title(p);
    }
    if files.keys().all(|p| plain(p)) {
        let entries: Vec<Entry> = files
            .iter()
            .map(|(p, d)| Entry::file(p.clone(), d.clone()))
            .collect();
        for with_dirs in [false, true] {
            if let Ok(again) = archive::tar(&entries, with_dirs) {
                let back =
                    archive::read_files(&gzip(&again), MAX_TOTAL).expect("our own archive reads");
                assert_eq!(back, files, "with_dirs {with_dirs}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    read(data);
    if !data.starts_with(&[0x1f, 0x8b]) {
        read(&gzip(data));
    }
    if let Ok(t) = std::str::from_utf8(data) {
        title(t);
    }
});
