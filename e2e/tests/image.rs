//! The manager image as a user gets it: `images/build-binaries.sh` builds static `beowulf` and `csctl` for
//! linux/amd64 and linux/arm64 (Debian's cross toolchain), `beowulf release --binaries … --push` assembles the
//! image and pushes it to a distribution registry on loopback; then
//! - the registry holds an image index with both platforms (read back by `skopeo inspect --raw`), and the
//!   components file runs exactly that digest;
//! - a second release from the same binaries gives the same index digest;
//! - the amd64 image runs under podman (from the OCI layout, no pull from anywhere): `beowulf --version` and
//!   `csctl --version` print the release version;
//! - the arm64 image's `beowulf`, taken out of its layer, runs under `qemu-aarch64-static` and says its
//!   version.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::registry::Registry;
use e2e::{Scratch, require_root_and_peers, run};
use serde_json::Value;

const VERSION: &str = "v0.1.0";

/// The static binaries of both platforms, built by the script users run, in a target directory of their
/// own (the suite's is locked by the running `cargo test`).
fn binaries() -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image-binaries");
    run(Command::new("bash")
        .arg(e2e::repo_root().join("images/build-binaries.sh"))
        .arg(&out)
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("image-build"),
        ));
    out
}

fn release(out: &Path, binaries: &Path, registry: &Registry, push: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_e2e-beowulf"));
    cmd.args(["release", "--version", VERSION, "--out"])
        .arg(out)
        .arg("--binaries")
        .arg(binaries)
        .args([
            "--revision",
            "0123456789abcdef",
            "--image-repository",
            &format!("{}/beowulf-hpc/beowulf", registry.addr),
        ]);
    if push {
        cmd.arg("--push");
    }
    let output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    stderr
}

/// The `image:` of the manager Deployment in a release's components file.
fn components_image(out: &Path) -> String {
    let text = std::fs::read_to_string(
        out.join("infrastructure-beowulf")
            .join(VERSION)
            .join("infrastructure-components.yaml"),
    )
    .unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("image: "))
        .expect("the Deployment names an image");
    line.trim()
        .trim_start_matches("image: ")
        .trim_matches('\'')
        .to_string()
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

#[test]
fn release_pushes_a_reproducible_two_platform_image_that_runs() {
    require_root_and_peers();
    let dir = Scratch::new("image");
    let binaries = binaries();
    let registry = Registry::start(&dir.path().join("registry")).unwrap();

    let out = dir.path().join("out");
    let said = release(&out, &binaries, &registry, true);
    assert!(said.contains("linux/arm64: "), "{said}");

    // The registry holds the index, with both platforms.
    let image = format!("docker://{}/beowulf-hpc/beowulf:{VERSION}", registry.addr);
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &image])
        .output()
        .unwrap();
    assert!(raw.status.success(), "{raw:?}");
    let index: Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    assert_eq!(
        index["annotations"]["org.opencontainers.image.revision"],
        "0123456789abcdef"
    );
    let digest = sha256(&raw.stdout);

    // The components file runs exactly what was pushed.
    assert_eq!(
        components_image(&out),
        format!(
            "${{BEOWULF_IMAGE:={}/beowulf-hpc/beowulf:{VERSION}@{digest}}}",
            registry.addr
        )
    );

    // Same binaries, same image.
    let again = dir.path().join("again");
    release(&again, &binaries, &registry, false);
    assert_eq!(components_image(&again), components_image(&out));

    // The amd64 image runs, from the OCI layout the release wrote. Podman names the image after the layout's
    // path, which must be lowercase (a scratch directory's is not): a link to it. Its storage stays in the
    // scratch directory.
    let link = std::env::temp_dir().join(format!("beowulf-image-layout-{}", std::process::id()));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(out.join("image"), &link).unwrap();
    let layout = format!("oci:{}:{VERSION}", link.display());
    // runc, not podman's default crun: crun refuses hybrid cgroups (v1 controllers beside a v2 hierarchy), as
    // these machines have. Limits below the machine's hard limits: podman's defaults are above them, and
    // raising a hard limit is refused.
    let podman = |entrypoint: &str, args: &[&str]| {
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(dir.path().join("podman/root"))
            .arg("--runroot")
            .arg(dir.path().join("podman/run"))
            .args(["--runtime", "runc"])
            .args([
                "run",
                "--rm",
                "--network=none",
                "--ulimit=nofile=1024:1024",
                "--ulimit=nproc=1024:1024",
                "--platform=linux/amd64",
                "--entrypoint",
                entrypoint,
                &layout,
            ])
            .args(args);
        run(&mut cmd)
    };
    assert_eq!(podman("/beowulf", &["--version"]).trim(), "beowulf 0.1.0");
    assert_eq!(podman("/csctl", &["--version"]).trim(), "csctl 0.1.0");
    std::fs::remove_file(&link).unwrap();

    // The arm64 image's beowulf, out of its layer, under qemu-user.
    let arm64 = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "arm64")
        .unwrap();
    let blob = |d: &Value| {
        let hex = d.as_str().unwrap().trim_start_matches("sha256:");
        std::fs::read(out.join("image/blobs/sha256").join(hex)).unwrap()
    };
    let manifest: Value = serde_json::from_slice(&blob(&arm64["digest"])).unwrap();
    let config: Value = serde_json::from_slice(&blob(&manifest["config"]["digest"])).unwrap();
    assert_eq!(config["architecture"], "arm64");
    assert_eq!(config["config"]["User"], "65532:65532");
    let layer = blob(&manifest["layers"][0]["digest"]);
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(layer.as_slice()));
    let mut program = Vec::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some("beowulf") {
            entry.read_to_end(&mut program).unwrap();
        }
    }
    let path = dir.path().join("beowulf-arm64");
    std::fs::write(&path, program).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let version = run(Command::new("qemu-aarch64-static")
        .arg(&path)
        .arg("--version"));
    assert_eq!(version.trim(), "beowulf 0.1.0");
}
