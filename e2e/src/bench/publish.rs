//! `bench publish`: `csctl publish` against two peers pushing the same files, oras-py and the Go `oras` CLI
//! (`oras.land/oras`, built by `.ci/install` from `e2e/go-peers/oras`), to a local distribution registry
//! (Debian `docker-registry`) on loopback.
//!
//! The release is the seed stack (`providers/beowulf/hpc/1-33`, built by `csctl create --mode hash`) plus a
//! node-image-sized blob of incompressible bytes (1 GiB by default). Per round, in alternation: csctl's first
//! push, oras-py's, oras's (each to a registry of its own, started empty for the round, and csctl with an
//! empty state directory: no digest cache, no mount candidates), then the republish of the unchanged files
//! by each, in the same order, to the same registries. Wall time of each client process, start to exit. The
//! benchmark checks what it measures: csctl's first push must upload every byte, its republish must report
//! "unchanged" and upload nothing; oras must say it uploaded every file on its first push and none on its
//! republish. Our ratio is against the peer with the best median.
//!
//! Nothing here listens beyond 127.0.0.1; the registries are stopped and their storage deleted every round.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

use super::{Metric, summary, table};
use crate::registry::Registry;

/// What to run; `quick()` checks that the harness still works in seconds.
#[derive(Debug, Clone)]
pub struct Options {
    pub rounds: usize,
    /// Size of the extra blob, MiB.
    pub blob_mib: usize,
    /// The csctl binary (default: `csctl` beside the running benchmark, i.e. the same target profile).
    pub csctl: Option<PathBuf>,
    /// The Python with oras-py (default: `$BEOWULF_PEERS_DIR/venv/bin/python`).
    pub python: Option<PathBuf>,
    /// The Go `oras` CLI (default: `$BEOWULF_PEERS_DIR/go/oras-current/oras`, built by `.ci/install`).
    pub oras: Option<PathBuf>,
}

impl Options {
    pub fn full() -> Self {
        Options {
            rounds: 5,
            blob_mib: 1024,
            csctl: None,
            python: None,
            oras: None,
        }
    }

    /// One round with a 64 MiB blob.
    pub fn quick() -> Self {
        Options {
            rounds: 1,
            blob_mib: 64,
            ..Options::full()
        }
    }
}

/// Ours first, then the peers; every round runs them in this order.
const CLIENTS: [&str; 3] = ["csctl", "oras-py", "oras"];

/// Runs `cmd` to completion; its wall time and stdout. Fails with both outputs if it fails.
fn timed(what: &str, cmd: &mut Command) -> anyhow::Result<(f64, Vec<u8>)> {
    let start = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {what}"))?;
    let took = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((took, out.stdout))
}

/// Incompressible, deterministic bytes (xorshift64), so nothing along the way can cheat by compressing.
fn write_blob(path: &Path, mib: usize) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(path)?);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for chunk in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&buf)?;
    }
    f.flush()?;
    Ok(())
}

/// oras-py's push of a directory's files with the given media types (`name=type` arguments): the same
/// layers csctl pushes. oras-py hashes each file, HEADs it, and uploads what is missing in one PUT.
const ORAS_PUSH: &str = r#"
import sys, os, oras.client
host, repo, tag, d = sys.argv[1:5]
types = dict(a.split("=", 1) for a in sys.argv[5:])
c = oras.client.OrasClient(hostname=host, insecure=True, tls_verify=False)
os.chdir(d)
files = [f"{n}:{types[n]}" for n in sorted(os.listdir("."))]
r = c.push(target=f"{host}/{repo}:{tag}", files=files, disable_path_validation=True,
           manifest_annotations={"kubernetesVersion": "bench"})
assert r.status_code in (200, 201), r.status_code
"#;

/// Finds the Go `oras` CLI and its version (`oras version`). Missing: says how `.ci/install` builds it.
fn oras_binary(given: Option<&Path>) -> anyhow::Result<(PathBuf, String)> {
    let oras = match given {
        Some(p) => {
            anyhow::ensure!(p.is_file(), "--oras {}: no such file", p.display());
            p.to_path_buf()
        }
        None => {
            let p = crate::peers_dir().join("go/oras-current/oras");
            if !p.is_file() {
                bail!(
                    "{} not found: the Go oras CLI is a test peer built by `bash .ci/install` (its step \"building \
                     oras\": `go build oras.land/oras/cmd/oras` in e2e/go-peers/oras, linked as go/oras-current); \
                     run that, or pass --oras PATH",
                    p.display()
                );
            }
            p
        }
    };
    let out = Command::new(&oras)
        .arg("version")
        .output()
        .with_context(|| format!("running {} version", oras.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} version failed ({}): rebuild it with `bash .ci/install` (or pass --oras PATH)",
        oras.display(),
        out.status
    );
    let version = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Version:").map(|v| v.trim().to_string()))
        .unwrap_or_else(|| "(unknown version)".into());
    Ok((oras, version))
}

/// The files the Go `oras` CLI says it uploaded (its `Uploaded  <digest> <name>` lines without a TTY).
fn oras_uploaded(stdout: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("Uploaded "))
        .filter_map(|rest| rest.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

/// The upstream layer media types (as csctl assigns them).
fn media_type(name: &str) -> &'static str {
    match name {
        "clusteraddon.yaml" => "application/vnd.scs.cluster-addon.config.layer.v1+yaml",
        "metadata.yaml" => "application/vnd.scs.metadata.layer.v1+yaml",
        "hashes.json" => "application/vnd.scs.hashes.layer.v1+yaml",
        n if n.ends_with(".tgz") && n.contains("cluster-addon") => {
            "application/vnd.scs.cluster-addon.layer.v1.tar+gzip"
        }
        n if n.ends_with(".tgz") && n.contains("cluster-class") => {
            "application/vnd.scs.cluster-class.v1.tar+gzip"
        }
        _ => "application/vnd.oci.image.layer.v1.tar",
    }
}

/// The newest modification time of the files under `dir` (recursively).
fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if let Ok(t) = m.modified() {
                newest = newest.max(Some(t));
            }
        }
    }
    newest
}

/// Finds the csctl to measure and refuses one older than its sources (a stale binary measures old code).
fn csctl_binary(given: Option<&Path>, root: &Path) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        anyhow::ensure!(p.is_file(), "--csctl {}: no such file", p.display());
        return Ok(p.to_path_buf());
    }
    let here = std::env::current_exe()?;
    let csctl = here.with_file_name("csctl");
    if !csctl.is_file() {
        bail!(
            "{} not found: build it first with `cargo build --release -p csctl` (or pass --csctl)",
            csctl.display()
        );
    }
    let built = std::fs::metadata(&csctl)?.modified()?;
    if let Some(src) = newest_mtime(&root.join("csctl/src"))
        && src > built
    {
        bail!(
            "{} is older than csctl/src: rebuild it with `cargo build --release -p csctl` (or pass --csctl)",
            csctl.display()
        );
    }
    Ok(csctl)
}

/// One client's registry, state and timings for a round.
struct Side {
    registry: Registry,
    repo: String,
}

/// `publish=<best peer / csctl> publish_vs_oras_py=<oras-py / csctl> publish_vs_oras=<oras / csctl>` from the
/// median times of each client (`key` is `publish` or `publish_republish`); above 1: csctl is faster.
fn ratio_fields(key: &str, medians: &[f64]) -> String {
    let best_peer = medians[1..].iter().copied().fold(f64::INFINITY, f64::min);
    let mut s = format!("{key}={:.2}", best_peer / medians[0]);
    for (name, m) in CLIENTS.iter().zip(medians).skip(1) {
        s.push_str(&format!(
            " {key}_vs_{}={:.2}",
            name.replace('-', "_"),
            m / medians[0]
        ));
    }
    s
}

/// Runs the benchmark; returns the summary line (without the `bench: ` prefix):
/// `publish=<best peer's time / csctl's, first push> publish_vs_oras_py=… publish_vs_oras=…
/// publish_republish=<same for the republish> publish_republish_vs_oras_py=… publish_republish_vs_oras=…`
/// (medians; above 1 means csctl is faster).
pub fn run(opts: &Options) -> anyhow::Result<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let csctl = csctl_binary(opts.csctl.as_deref(), &root)?;
    let python = opts
        .python
        .clone()
        .unwrap_or_else(|| crate::peers_dir().join("venv/bin/python"));
    let (oras, oras_go_version) = oras_binary(opts.oras.as_deref())?;
    let oras_version = Command::new(&python)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('oras'))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .with_context(|| {
            format!(
                "{} has no oras-py: run `bash .ci/install` (or pass --python)",
                python.display()
            )
        })?;
    let work = tempfile::tempdir()?;

    // The release: the seed stack, built by csctl, plus the big blob.
    let created = Command::new(&csctl)
        .args(["--format", "json", "create", "--mode", "hash", "-o"])
        .arg(work.path().join("release"))
        .arg(root.join("providers/beowulf/hpc/1-33"))
        .output()
        .context("running csctl create")?;
    if !created.status.success() {
        bail!(
            "csctl create failed: {}",
            String::from_utf8_lossy(&created.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&created.stdout)?;
    let release = PathBuf::from(
        v["releases"][0]["path"]
            .as_str()
            .context("csctl create printed no release path")?,
    );
    let tag = release
        .file_name()
        .and_then(|n| n.to_str())
        .context("release directory without a name")?
        .to_string();
    eprintln!("bench publish: writing a {} MiB blob ...", opts.blob_mib);
    write_blob(&release.join("node-image.raw"), opts.blob_mib)?;
    let mut names: Vec<String> = std::fs::read_dir(&release)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    let total: u64 = names
        .iter()
        .map(|n| std::fs::metadata(release.join(n)).map(|m| m.len()))
        .sum::<Result<u64, _>>()?;
    let mib = total as f64 / f64::from(1 << 20);
    eprintln!(
        "bench publish: {tag}, {} files, {total} bytes; csctl {} vs oras-py {oras_version} vs oras {oras_go_version} \
         ({}); {} round(s)",
        names.len(),
        csctl.display(),
        oras.display(),
        opts.rounds
    );

    let ours_cmd = |side: &Side, state: &Path| {
        let mut c = Command::new(&csctl);
        c.args(["--format", "json", "publish"])
            .arg(&release)
            .args([
                "--to",
                &format!("oci://{}/{}", side.registry.addr, side.repo),
            ])
            .env("HOME", state)
            .env("XDG_STATE_HOME", state.join("state"))
            .env_remove("OCI_REPOSITORY")
            .env_remove("OCI_USERNAME")
            .env_remove("OCI_PASSWORD")
            .env_remove("OCI_ACCESS_TOKEN")
            .env_remove("DOCKER_CONFIG");
        c
    };
    let oras_cmd = |side: &Side, state: &Path| {
        let mut c = Command::new(&python);
        c.arg("-c")
            .arg(ORAS_PUSH)
            .args([
                side.registry.addr.as_str(),
                side.repo.as_str(),
                tag.as_str(),
            ])
            .arg(&release)
            .env("HOME", state);
        for n in &names {
            c.arg(format!("{n}={}", media_type(n)));
        }
        c
    };
    // The Go CLI with its defaults (OCI image manifest v1.1, 5 blobs in flight); it hashes each file, HEADs
    // it and uploads what is missing (POST, then one PUT of the whole file).
    let oras_go_cmd = |side: &Side, state: &Path| {
        let mut c = Command::new(&oras);
        c.args([
            "push",
            "--plain-http",
            "--no-tty",
            "--disable-path-validation",
        ])
        .args(["--annotation", "kubernetesVersion=bench"])
        .arg(format!("{}/{}:{tag}", side.registry.addr, side.repo))
        .args(names.iter().map(|n| format!("{n}:{}", media_type(n))))
        .current_dir(&release)
        .env("HOME", state)
        .env_remove("DOCKER_CONFIG");
        c
    };
    let client_cmd = |k: usize, side: &Side, state: &Path| match k {
        0 => ours_cmd(side, state),
        1 => oras_cmd(side, state),
        _ => oras_go_cmd(side, state),
    };

    let n = CLIENTS.len();
    let mut first = vec![Vec::new(); n];
    let mut again = vec![Vec::new(); n];
    let mut throughput = vec![Vec::new(); n];
    let mut registry_cpu = vec![Vec::new(); n];
    for round in 1..=opts.rounds {
        let dir = work.path().join(format!("round-{round}"));
        let sides: Vec<Side> = CLIENTS
            .iter()
            .map(|name| {
                Ok(Side {
                    registry: Registry::start(&dir.join(format!("registry-{name}")))?,
                    repo: format!("bench/{name}"),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let states: Vec<PathBuf> = CLIENTS
            .iter()
            .map(|name| dir.join(format!("home-{name}")))
            .collect();
        for s in &states {
            std::fs::create_dir_all(s)?;
        }
        // First pushes, A B C.
        for k in 0..n {
            let cpu_before = sides[k].registry.cpu_seconds();
            let (t, out) = timed(
                &format!("{} push", CLIENTS[k]),
                &mut client_cmd(k, &sides[k], &states[k]),
            )?;
            if k == 0 {
                let v: serde_json::Value = serde_json::from_slice(&out)?;
                let p = &v["published"][0];
                let uploaded = p["uploadedBytes"].as_u64().unwrap_or(0);
                anyhow::ensure!(
                    p["status"] == "published" && uploaded >= total,
                    "csctl's first push must upload all {total} bytes: {v}"
                );
            }
            if k == 2 {
                let uploaded = oras_uploaded(&out);
                anyhow::ensure!(
                    names.iter().all(|n| uploaded.contains(n)),
                    "oras's first push must upload every file ({names:?}); it said:\n{}",
                    String::from_utf8_lossy(&out)
                );
            }
            registry_cpu[k].push(sides[k].registry.cpu_seconds() - cpu_before);
            first[k].push(t);
            throughput[k].push(mib / t);
        }
        // Republish of the unchanged release, A B C.
        for k in 0..n {
            let (t, out) = timed(
                &format!("{} push (unchanged)", CLIENTS[k]),
                &mut client_cmd(k, &sides[k], &states[k]),
            )?;
            if k == 0 {
                let v: serde_json::Value = serde_json::from_slice(&out)?;
                anyhow::ensure!(
                    v["published"][0]["status"] == "unchanged",
                    "csctl's republish must find the release unchanged: {v}"
                );
            }
            if k == 2 {
                let uploaded = oras_uploaded(&out);
                anyhow::ensure!(
                    names.iter().all(|n| !uploaded.contains(n)),
                    "oras's republish must upload none of the unchanged files; it said:\n{}",
                    String::from_utf8_lossy(&out)
                );
            }
            again[k].push(t);
        }
        let each = |v: &[Vec<f64>], digits: usize| {
            CLIENTS
                .iter()
                .zip(v)
                .map(|(name, t)| format!("{name} {:.digits$} s", t[round - 1]))
                .collect::<Vec<_>>()
                .join(", ")
        };
        eprintln!(
            "round {round}: first push {}; republish {}",
            each(&first, 2),
            each(&again, 3)
        );
        drop(sides);
        // Two copies of the blob per round; do not let them pile up.
        std::fs::remove_dir_all(&dir)?;
    }

    let metrics = [
        Metric {
            name: format!("first push, {mib:.0} MiB"),
            unit: "s",
            higher_is_better: false,
            values: first.clone(),
        },
        Metric {
            name: "first push throughput".into(),
            unit: "MiB/s",
            higher_is_better: true,
            values: throughput,
        },
        Metric {
            name: "registry CPU during the first push".into(),
            unit: "s",
            higher_is_better: false,
            values: registry_cpu,
        },
        Metric {
            name: "republish, unchanged".into(),
            unit: "s",
            higher_is_better: false,
            values: again.clone(),
        },
    ];
    println!("\n{}", table(&CLIENTS, &metrics));
    println!(
        "(ours = csctl; ratios per round are csctl/peer: below 1 is better for times, above 1 for throughput; \
         peers: oras-py {oras_version}, oras {oras_go_version})"
    );
    let medians = |v: &[Vec<f64>]| v.iter().map(|t| summary(t).0).collect::<Vec<_>>();
    Ok(format!(
        "{} {}",
        ratio_fields("publish", &medians(&first)),
        ratio_fields("publish_republish", &medians(&again))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_match_the_upstream_names() {
        assert_eq!(
            media_type("hashes.json"),
            "application/vnd.scs.hashes.layer.v1+yaml"
        );
        assert_eq!(
            media_type("beowulf-hpc-1-33-cluster-class-v1.tgz"),
            "application/vnd.scs.cluster-class.v1.tar+gzip"
        );
        assert_eq!(
            media_type("node-image.raw"),
            "application/vnd.oci.image.layer.v1.tar"
        );
    }

    #[test]
    fn ratios_are_against_the_best_peer_and_each_peer() {
        assert_eq!(
            ratio_fields("publish", &[2.0, 3.0, 2.5]),
            "publish=1.25 publish_vs_oras_py=1.50 publish_vs_oras=1.25"
        );
        assert_eq!(
            ratio_fields("publish_republish", &[1.0, 0.5, 4.0]),
            "publish_republish=0.50 publish_republish_vs_oras_py=0.50 publish_republish_vs_oras=4.00"
        );
    }

    #[test]
    fn oras_upload_lines_name_the_files() {
        let out = b"Preparing a.raw\nUploading 76e434e17778 a.raw\nUploaded  76e434e17778 a.raw\n\
Uploaded  44136fa355b3 application/vnd.oci.empty.v1+json\nPushed [registry] 127.0.0.1:5000/b/o:t\n";
        assert_eq!(
            oras_uploaded(out),
            ["a.raw", "application/vnd.oci.empty.v1+json"]
        );
        assert!(oras_uploaded(b"Preparing a.raw\nPushed [registry] x/y:t\n").is_empty());
    }

    #[test]
    fn a_missing_oras_says_how_to_get_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = oras_binary(Some(&dir.path().join("oras"))).unwrap_err();
        assert!(err.to_string().contains("--oras"), "{err}");
    }

    #[test]
    fn blob_is_deterministic_and_incompressible() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write_blob(&a, 1).unwrap();
        write_blob(&b, 1).unwrap();
        let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
        assert_eq!(a, b);
        assert_eq!(a.len(), 1 << 20);
        // No byte value dominates: roughly uniform, as random data is.
        let mut counts = [0usize; 256];
        for x in &a {
            counts[*x as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 3000 && c < 5200), "{counts:?}");
    }
}
