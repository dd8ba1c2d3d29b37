//! The manager's container image, assembled without a container engine: for each platform one gzip layer
//! (the static `beowulf` and `csctl` binaries, the iPXE binaries the boot plane serves by default at
//! `/usr/lib/ipxe`, `/etc/passwd` with the non-root user), an image config and a manifest; over them an OCI
//! image index. Everything is written byte for byte by us (csctl's reproducible archives, JSON in a fixed key
//! order, no timestamps), so the same binaries give the same index digest.
//!
//! The image's user is `65532:65532` (nonroot): csctl, `beowulf bmc`, `release` and a manager without the
//! boot plane need nothing more. The boot plane does: the components file's Deployment runs the container as
//! UID 0 with every capability dropped but `NET_BIND_SERVICE` (DHCP 67, TFTP 69), `NET_RAW` (the DHCP socket
//! bound to its interface) and `NET_ADMIN` — Kubernetes does not raise capabilities it adds into the effective
//! set of a non-root process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use csctl::archive::{self, Entry};
use csctl::oci::Digest;
use csctl::oci::manifest::{INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use serde_json::json;

use super::Version;

/// Layer, config and what the image index holds.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// The platforms the image is built for, as `linux/<arch>` (and the binaries' directory names,
/// `linux-<arch>`).
pub const ARCHITECTURES: [&str; 2] = ["amd64", "arm64"];
/// The programs in the image, at `/`.
pub const PROGRAMS: [&str; 2] = ["beowulf", "csctl"];
/// The iPXE binaries put at `/usr/lib/ipxe` (the manager's default `--tftp-root`), from Debian's `ipxe`.
pub const IPXE_FILES: [&str; 3] = ["undionly.kpxe", "snponly.efi", "ipxe.efi"];
/// UID/GID of the image's default user.
pub const NONROOT: u32 = 65532;
/// `org.opencontainers.image.source`.
pub const SOURCE: &str = "https://github.com/beowulf-hpc/beowulf";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "{path}: {source} (--binaries DIR must hold linux-amd64/ and linux-arm64/ with the static `beowulf` and \
         `csctl` of each platform; images/build-binaries.sh builds them)"
    )]
    Binary {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not an {arch} ELF executable (its machine field says {found}); put the {arch} build there"
    )]
    WrongArchitecture {
        path: PathBuf,
        arch: &'static str,
        found: String,
    },
    #[error(
        "{path}: {source} (--ipxe-dir must hold undionly.kpxe, snponly.efi and ipxe.efi: apt-get install ipxe)"
    )]
    Ipxe {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("building the image layer: {0}")]
    Archive(std::io::Error),
}

/// What goes into the image.
#[derive(Debug, Clone)]
pub struct ImageInputs {
    /// `linux-<arch>/{beowulf,csctl}` for each of [`ARCHITECTURES`].
    pub binaries: PathBuf,
    pub ipxe_dir: PathBuf,
    /// `org.opencontainers.image.revision` (the source commit), when known.
    pub revision: Option<String>,
}

/// A blob of the image: a layer, a config or a platform manifest.
#[derive(Debug, Clone)]
pub struct Blob {
    pub digest: Digest,
    pub media_type: &'static str,
    pub data: Vec<u8>,
}

impl Blob {
    fn new(media_type: &'static str, data: Vec<u8>) -> Self {
        Blob {
            digest: Digest::of_bytes(&data),
            media_type,
            data,
        }
    }

    fn descriptor(&self) -> serde_json::Value {
        json!({"mediaType": self.media_type, "digest": self.digest.as_str(), "size": self.data.len()})
    }
}

/// The assembled image: blobs in push order (each layer and config before the manifest naming it), then the
/// index.
#[derive(Debug, Clone)]
pub struct Image {
    pub blobs: Vec<Blob>,
    /// The image index, the image's digest of record.
    pub index: Blob,
    /// Compressed layer size per architecture, bytes.
    pub layer_sizes: BTreeMap<&'static str, u64>,
}

/// Builds the image for `version` from `inputs`.
pub fn build(version: &Version, inputs: &ImageInputs) -> Result<Image, ImageError> {
    let mut ipxe = Vec::new();
    for name in IPXE_FILES {
        let path = inputs.ipxe_dir.join(name);
        let data = std::fs::read(&path).map_err(|source| ImageError::Ipxe { path, source })?;
        ipxe.push(Entry::file(format!("usr/lib/ipxe/{name}"), data));
    }
    let labels = labels(version, inputs.revision.as_deref());
    let mut blobs = Vec::new();
    let mut manifests = Vec::new();
    let mut layer_sizes = BTreeMap::new();
    for arch in ARCHITECTURES {
        let mut entries = vec![
            Entry::file(
                "etc/passwd",
                format!(
                    "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n"
                )
                .into_bytes(),
            ),
            Entry::file(
                "etc/group",
                format!("root:x:0:\nnonroot:x:{NONROOT}:\n").into_bytes(),
            ),
        ];
        for program in PROGRAMS {
            let path = inputs.binaries.join(format!("linux-{arch}")).join(program);
            let data = std::fs::read(&path).map_err(|source| ImageError::Binary {
                path: path.clone(),
                source,
            })?;
            check_elf(&path, &data, arch)?;
            entries.push(Entry::executable(program, data));
        }
        entries.extend(ipxe.iter().cloned());
        let tar = archive::tar(&entries, true).map_err(ImageError::Archive)?;
        let diff_id = Digest::of_bytes(&tar);
        let layer = Blob::new(
            LAYER_MEDIA_TYPE,
            archive::gzip(&tar).map_err(ImageError::Archive)?,
        );
        layer_sizes.insert(arch, layer.data.len() as u64);
        let config = Blob::new(
            CONFIG_MEDIA_TYPE,
            to_vec(&json!({
                "architecture": arch,
                "os": "linux",
                "config": {
                    "User": format!("{NONROOT}:{NONROOT}"),
                    "Entrypoint": ["/beowulf"],
                    "Env": ["PATH=/"],
                    "WorkingDir": "/",
                    "Labels": labels,
                },
                "rootfs": {"type": "layers", "diff_ids": [diff_id.as_str()]},
            })),
        );
        let manifest = Blob::new(
            MANIFEST_MEDIA_TYPE,
            to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": MANIFEST_MEDIA_TYPE,
                "config": config.descriptor(),
                "layers": [layer.descriptor()],
                "annotations": labels,
            })),
        );
        let mut descriptor = manifest.descriptor();
        descriptor["platform"] = json!({"architecture": arch, "os": "linux"});
        manifests.push(descriptor);
        blobs.extend([layer, config, manifest]);
    }
    let index = Blob::new(
        INDEX_MEDIA_TYPE,
        to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": manifests,
            "annotations": labels,
        })),
    );
    Ok(Image {
        blobs,
        index,
        layer_sizes,
    })
}

/// The OCI labels (also the manifests' and the index's annotations).
fn labels(version: &Version, revision: Option<&str>) -> BTreeMap<&'static str, String> {
    let mut labels = BTreeMap::from([
        ("org.opencontainers.image.source", SOURCE.to_string()),
        ("org.opencontainers.image.version", version.tag.clone()),
        (
            "org.opencontainers.image.licenses",
            env!("CARGO_PKG_LICENSE").to_string(),
        ),
        ("org.opencontainers.image.title", "beowulf".to_string()),
        (
            "org.opencontainers.image.description",
            "Beowulf: the Cluster API bare-metal provider and boot plane, and csctl".to_string(),
        ),
    ]);
    if let Some(r) = revision {
        labels.insert("org.opencontainers.image.revision", r.to_string());
    }
    labels
}

/// Compact JSON; serde_json's maps keep keys sorted (or in insertion order), either way fixed.
fn to_vec(v: &serde_json::Value) -> Vec<u8> {
    // A Value of strings, numbers and maps always serialises.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Refuses a binary of the wrong architecture before it goes into an image that would fail with "exec
/// format error" on a node.
fn check_elf(path: &Path, data: &[u8], arch: &'static str) -> Result<(), ImageError> {
    // ELF: magic, then e_machine (little-endian u16) at offset 18. x86-64 is 62, AArch64 183.
    let expected: u16 = match arch {
        "amd64" => 62,
        _ => 183,
    };
    let found = if data.len() >= 20 && data.starts_with(b"\x7fELF") {
        let machine = u16::from_le_bytes([data[18], data[19]]);
        if machine == expected {
            return Ok(());
        }
        match machine {
            62 => "x86-64".to_string(),
            183 => "AArch64".to_string(),
            m => format!("machine {m}"),
        }
    } else {
        "not an ELF file".to_string()
    };
    Err(ImageError::WrongArchitecture {
        path: path.to_path_buf(),
        arch,
        found,
    })
}

/// Stores the image in `store` (an OCI layout or a registry repository), the index tagged `tag`: blobs
/// first, then each platform's manifest, then the index, so nothing ever names what is not there yet.
/// Returns the index digest.
pub async fn publish(
    image: &Image,
    store: &csctl::oci::Store,
    tag: &str,
) -> Result<Digest, csctl::oci::OciError> {
    for blob in &image.blobs {
        if blob.media_type == MANIFEST_MEDIA_TYPE {
            store
                .put_manifest(None, &blob.data, MANIFEST_MEDIA_TYPE, None)
                .await?;
        } else {
            store.push_blob_bytes(&blob.data).await?;
        }
    }
    store
        .put_manifest(Some(tag), &image.index.data, INDEX_MEDIA_TYPE, None)
        .await
}

/// `REPOSITORY:TAG@sha256:…`: what the components file runs.
pub fn reference(repository: &str, version: &Version, image: &Image) -> String {
    format!("{repository}:{}@{}", version.tag, image.index.digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(machine: u16) -> Vec<u8> {
        let mut d = b"\x7fELF".to_vec();
        d.resize(18, 0);
        d.extend(machine.to_le_bytes());
        d.extend([0u8; 64]);
        d
    }

    fn inputs(dir: &Path) -> ImageInputs {
        for (arch, machine) in [("amd64", 62), ("arm64", 183)] {
            let d = dir.join(format!("bin/linux-{arch}"));
            std::fs::create_dir_all(&d).unwrap();
            for p in PROGRAMS {
                std::fs::write(d.join(p), elf(machine)).unwrap();
            }
        }
        std::fs::create_dir_all(dir.join("ipxe")).unwrap();
        for f in IPXE_FILES {
            std::fs::write(dir.join("ipxe").join(f), f.as_bytes()).unwrap();
        }
        ImageInputs {
            binaries: dir.join("bin"),
            ipxe_dir: dir.join("ipxe"),
            revision: Some("abc123".into()),
        }
    }

    #[test]
    fn the_same_inputs_give_the_same_index_digest_and_the_index_names_both_platforms() {
        let dir = tempfile::tempdir().unwrap();
        let v = Version::parse("v0.1.0").unwrap();
        let one = build(&v, &inputs(dir.path())).unwrap();
        let two = build(&v, &inputs(dir.path())).unwrap();
        assert_eq!(one.index.digest, two.index.digest);
        let index: serde_json::Value = serde_json::from_slice(&one.index.data).unwrap();
        let platforms: Vec<_> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["platform"]["architecture"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(platforms, ["amd64", "arm64"]);
        assert_eq!(
            index["annotations"]["org.opencontainers.image.revision"],
            "abc123"
        );
        // Every manifest the index names is among the blobs, as is everything each manifest names.
        for m in index["manifests"].as_array().unwrap() {
            let blob = one
                .blobs
                .iter()
                .find(|b| b.digest.as_str() == m["digest"])
                .unwrap();
            let manifest: serde_json::Value = serde_json::from_slice(&blob.data).unwrap();
            for d in [&manifest["config"], &manifest["layers"][0]] {
                let b = one
                    .blobs
                    .iter()
                    .find(|b| b.digest.as_str() == d["digest"])
                    .unwrap();
                assert_eq!(d["size"], b.data.len());
            }
        }
    }

    #[test]
    fn a_binary_of_the_other_platform_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = inputs(dir.path());
        std::fs::write(inputs.binaries.join("linux-arm64/csctl"), elf(62)).unwrap();
        let e = build(&Version::parse("v0.1.0").unwrap(), &inputs).unwrap_err();
        assert!(
            e.to_string()
                .contains("linux-arm64/csctl is not an arm64 ELF")
                && e.to_string().contains("x86-64"),
            "{e}"
        );
    }

    #[test]
    fn missing_ipxe_files_say_which_package_has_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut inputs = inputs(dir.path());
        inputs.ipxe_dir = dir.path().join("nowhere");
        let e = build(&Version::parse("v0.1.0").unwrap(), &inputs).unwrap_err();
        assert!(e.to_string().contains("apt-get install ipxe"), "{e}");
    }
}
