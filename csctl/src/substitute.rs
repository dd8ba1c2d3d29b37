//! upstream csctl's version markers: `<< .ClusterClassVersion >>`, `<< .ClusterAddonVersion >>`,
//! `<< .NodeImageVersion >>` (exact spacing), replaced in text files only. Binary files (e.g. vendored
//! `charts/*.tgz`) are left untouched, unlike upstream which templates (and can corrupt) them.
use metadata_schema::Version;

/// The three versions of a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseVersions {
    pub cluster_stack: Version,
    pub cluster_addon: Version,
    pub node_image: Version,
}

/// Text, not binary: valid UTF-8 without NUL bytes.
pub fn is_text(data: &[u8]) -> bool {
    !data.contains(&0) && std::str::from_utf8(data).is_ok()
}

/// Replaces the markers in `data` if it is text; returns binary data unchanged.
pub fn substitute(data: &[u8], v: &ReleaseVersions) -> Vec<u8> {
    if !is_text(data) {
        return data.to_vec();
    }
    let text = String::from_utf8_lossy(data);
    if !text.contains("<< .") {
        return data.to_vec();
    }
    text.replace("<< .ClusterClassVersion >>", &v.cluster_stack.dot())
        .replace("<< .ClusterAddonVersion >>", &v.cluster_addon.dot())
        .replace("<< .NodeImageVersion >>", &v.node_image.dot())
        .into_bytes()
}

/// Sets the top-level `version:` of a Chart.yaml, keeping everything else (comments, order) as written.
pub fn set_chart_version(chart_yaml: &[u8], version: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(chart_yaml);
    let mut out = String::with_capacity(text.len() + 16);
    let mut done = false;
    for line in text.split_inclusive('\n') {
        if !done && line.starts_with("version:") {
            out.push_str(&format!("version: {version}\n"));
            done = true;
        } else {
            out.push_str(line);
        }
    }
    if !done {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("version: {version}\n"));
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions() -> ReleaseVersions {
        ReleaseVersions {
            cluster_stack: Version::stable(3),
            cluster_addon: Version::stable(2),
            node_image: Version::parse_dot("v0-sha.abc").unwrap(),
        }
    }

    #[test]
    fn markers_in_text_only() {
        let t = substitute(
            b"a: << .ClusterClassVersion >>\nb: << .ClusterAddonVersion >>\nc: << .NodeImageVersion >>\nd: << .Other >>\n",
            &versions(),
        );
        assert_eq!(
            String::from_utf8(t).unwrap(),
            "a: v3\nb: v2\nc: v0-sha.abc\nd: << .Other >>\n"
        );
        let bin = b"\x1f\x8b\x00<< .ClusterClassVersion >>".to_vec();
        assert_eq!(substitute(&bin, &versions()), bin);
    }

    #[test]
    fn chart_version_is_replaced_in_place() {
        let c = set_chart_version(
            b"apiVersion: v2\n# keep\nname: x\nversion: 0.1.0\ndependencies:\n  - version: 1.0\n",
            "v4",
        );
        assert_eq!(
            String::from_utf8(c).unwrap(),
            "apiVersion: v2\n# keep\nname: x\nversion: v4\ndependencies:\n  - version: 1.0\n"
        );
        assert_eq!(
            set_chart_version(b"name: x", "v1"),
            b"name: x\nversion: v1\n"
        );
    }
}
