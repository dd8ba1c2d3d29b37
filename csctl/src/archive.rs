//! Reproducible `.tgz` archives: entries sorted bytewise, mtime 0, uid/gid 0, no user/group names, fixed
//! modes (files 0644 unless an entry says otherwise, directories 0755), GNU headers, gzip without file name
//! or time, compression level 9 of the pinned pure-Rust zlib-rs backend (its version is pinned in
//! Cargo.lock, so the bytes are too). The same code packs Helm charts, addon archives and the layers of
//! Beowulf's container images.
use std::io::Write;

use flate2::{Compression, GzBuilder};

/// A file to put into an archive.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path inside the archive, `/`-separated, no leading `/`.
    pub path: String,
    pub data: Vec<u8>,
    /// Permission bits (0o644 for plain files, 0o755 for programs).
    pub mode: u32,
}

impl Entry {
    /// A plain file, mode 0644.
    pub fn file(path: impl Into<String>, data: Vec<u8>) -> Self {
        Entry {
            path: path.into(),
            data,
            mode: 0o644,
        }
    }

    /// A program, mode 0755.
    pub fn executable(path: impl Into<String>, data: Vec<u8>) -> Self {
        Entry {
            path: path.into(),
            data,
            mode: 0o755,
        }
    }
}

/// Builds the archive. `with_dirs` adds directory entries (plain tarballs do, Helm chart archives do not).
pub fn tar_gz(entries: &[Entry], with_dirs: bool) -> std::io::Result<Vec<u8>> {
    gzip(&tar(entries, with_dirs)?)
}

/// The uncompressed tar stream of [`tar_gz`] (an image layer's digest of record, its `diff_id`, is taken
/// over these bytes).
pub fn tar(entries: &[Entry], with_dirs: bool) -> std::io::Result<Vec<u8>> {
    // (path, Some((contents, mode)) for a file or None for a directory)
    type Item<'a> = (String, Option<(&'a [u8], u32)>);
    let mut items: Vec<Item> = entries
        .iter()
        .map(|e| (e.path.clone(), Some((e.data.as_slice(), e.mode))))
        .collect();
    if with_dirs {
        let mut dirs = std::collections::BTreeSet::new();
        for e in entries {
            let mut p = e.path.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                dirs.insert(format!("{parent}/"));
                p = parent;
            }
        }
        items.extend(dirs.into_iter().map(|d| (d, None)));
    }
    items.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));

    let mut tar = tar::Builder::new(Vec::new());
    tar.mode(tar::HeaderMode::Deterministic);
    for (path, data) in items {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        match data {
            Some((data, mode)) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(mode);
                header.set_size(data.len() as u64);
                tar.append_data(&mut header, &path, data)?;
            }
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                tar.append_data(&mut header, &path, std::io::empty())?;
            }
        }
    }
    tar.into_inner()
}

/// gzip without file name or time, level 9.
pub fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::new(9));
    gz.write_all(data)?;
    let mut out = gz.finish()?;
    out.flush()?;
    Ok(out)
}

/// The regular files of a `.tgz` (path → contents), in memory; other entries (directories, links) are
/// skipped. An archive that expands to more than `max_total` bytes is refused before it is read whole (a
/// gzip bomb), as is one that is not a gzipped tar.
pub fn read_files(
    tgz: &[u8],
    max_total: u64,
) -> std::io::Result<std::collections::BTreeMap<String, Vec<u8>>> {
    use std::io::Read;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    let mut out = std::collections::BTreeMap::new();
    let mut total = 0u64;
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.to_string_lossy().into_owned();
        total += entry.size();
        if total > max_total {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("archive expands to more than {max_total} bytes"),
            ));
        }
        let mut data = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut data)?;
        out.insert(path, data);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn same_entries_in_any_order_give_the_same_bytes() {
        let a = Entry::file("c/Chart.yaml", b"name: c\n".to_vec());
        let b = Entry::file("c/templates/x.yaml", vec![0u8; 3000]);
        let one = tar_gz(&[a.clone(), b.clone()], true).unwrap();
        let two = tar_gz(&[b, a], true).unwrap();
        assert_eq!(one, two);
        // gzip header: no FNAME flag, mtime 0, OS 255.
        assert_eq!(&one[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255]);

        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(one.as_slice()));
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header();
            assert_eq!(h.mtime().unwrap(), 0);
            assert_eq!(h.uid().unwrap(), 0);
            assert_eq!(h.username().unwrap(), Some(""));
            let mode = h.mode().unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut buf = Vec::new();
            e.read_to_end(&mut buf).unwrap();
            seen.push((path, mode, buf.len()));
        }
        assert_eq!(
            seen,
            [
                ("c/".to_string(), 0o755, 0),
                ("c/Chart.yaml".to_string(), 0o644, 8),
                ("c/templates/".to_string(), 0o755, 0),
                ("c/templates/x.yaml".to_string(), 0o644, 3000)
            ]
        );
    }
}
