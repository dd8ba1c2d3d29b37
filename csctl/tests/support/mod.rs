//! Test harness for the OCI tests: a real `docker-registry` (distribution 2.8) on a free loopback port, an
//! HTTP-aware proxy that counts requests and can stall one mid-flight (to interrupt a push at a chosen
//! point), release-directory builders, and the csctl binary with an isolated environment.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
pub mod proxy;
pub mod registry;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Polls `f` until it returns Some, or panics after `timeout` (no sleeps as synchronisation).
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The csctl binary with an environment that cannot see the machine's credentials or state.
pub fn csctl(home: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_csctl"));
    c.env("HOME", home)
        .env("XDG_STATE_HOME", home.join("state"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("CSCTL_OCI_LAYOUT", home.join("layout"))
        .env_remove("DOCKER_CONFIG")
        .env_remove("OCI_REPOSITORY")
        .env_remove("OCI_REGISTRY")
        .env_remove("OCI_USERNAME")
        .env_remove("OCI_PASSWORD")
        .env_remove("OCI_ACCESS_TOKEN")
        .env_remove("CSCTL_FORMAT")
        .current_dir(home);
    c
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(mut cmd: std::process::Command, stdin: Option<&str>) -> Output {
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn csctl");
    {
        let mut si = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            si.write_all(s.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Deterministic pseudo-random bytes (xorshift), so big test blobs do not compress and are reproducible.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn tgz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::new(6));
    let mut tar = tar::Builder::new(gz);
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, path, *data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// A release directory `<parent>/<prefix>-<version>` shaped like `csctl create` output (stable version
/// `vN`); `cluster_class_values` varies the chart, `big` adds a node-image-sized file of that many bytes.
pub fn make_release(
    parent: &Path,
    prefix: &str,
    version: &str,
    cluster_class_values: &str,
    big: usize,
) -> PathBuf {
    let dir = parent.join(format!("{prefix}-{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("metadata.yaml"),
        format!(
            "apiVersion: metadata.clusterstack.x-k8s.io/v1alpha1\nversions:\n  clusterStack: {version}\n  kubernetes: v1.33.4\n  components:\n    clusterAddon: v1\n    nodeImage: v1\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("hashes.json"),
        r#"{"clusterStack":"abcdefghijklmnop","clusterAddonDir":"q","clusterAddonValues":""}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("clusteraddon.yaml"),
        "apiVersion: clusteraddonconfig.x-k8s.io/v1alpha1\naddonStages: {}\n",
    )
    .unwrap();
    let cc = format!("{prefix}-cluster-class");
    std::fs::write(
        dir.join(format!("{cc}-{version}.tgz")),
        tgz(&[
            (
                &format!("{cc}/Chart.yaml"),
                format!("apiVersion: v2\nname: {cc}\nversion: {version}\n").as_bytes(),
            ),
            (
                &format!("{cc}/values.yaml"),
                cluster_class_values.as_bytes(),
            ),
        ]),
    )
    .unwrap();
    std::fs::write(
        dir.join(format!("{prefix}-cluster-addon-v1.tgz")),
        tgz(&[(
            "cni/Chart.yaml",
            b"apiVersion: v2\nname: cni\nversion: v1\n",
        )]),
    )
    .unwrap();
    if big > 0 {
        std::fs::write(dir.join("node-image.raw"), noise(big, 42)).unwrap();
    }
    dir
}

/// Every file of a flat directory with its bytes.
pub fn read_dir_files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

pub fn peers_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("BEOWULF_PEERS_DIR").unwrap_or_else(|_| "/opt/beowulf-peers".into()),
    )
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
