//! Reproducible `.tgz` archives: entries sorted bytewise, mtime 0, uid/gid 0, no user/group names, fixed
//! modes (files 0644, directories 0755), GNU headers, gzip without file name or time, compression level 9 of
//! the pinned pure-Rust zlib-rs backend (its version is pinned in Cargo.lock, so the bytes are too).
use std::io::Write;

use flate2::{Compression, GzBuilder};

/// A file to put into an archive.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path inside the archive, `/`-separated, no leading `/`.
    pub path: String,
    pub data: Vec<u8>,
}

/// Builds the archive. `with_dirs` adds directory entries (plain tarballs do, Helm chart archives do not).
pub fn tar_gz(entries: &[Entry], with_dirs: bool) -> std::io::Result<Vec<u8>> {
    let mut items: Vec<(String, Option<&[u8]>)> = entries
        .iter()
        .map(|e| (e.path.clone(), Some(e.data.as_slice())))
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

    let gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::new(9));
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    for (path, data) in items {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        match data {
            Some(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
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
    let gz = tar.into_inner()?;
    let mut out = gz.finish()?;
    out.flush()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn same_entries_in_any_order_give_the_same_bytes() {
        let a = Entry {
            path: "c/Chart.yaml".into(),
            data: b"name: c\n".to_vec(),
        };
        let b = Entry {
            path: "c/templates/x.yaml".into(),
            data: vec![0u8; 3000],
        };
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
