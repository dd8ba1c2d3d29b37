//! Benchmark `publish` (not part of `cargo test`): prints its numbers and the ratio to the peer.
//! Run: `cargo build --release -p csctl && cargo run --release -p e2e --bin bench_publish`.
//! (A separate binary so it does not collide with the `bench` dispatcher other workloads are growing; it can
//! become `bench publish` once that lands.)
//!
//! The seed stack (`providers/beowulf/hpc/1-33`, built with `csctl create --mode hash`) plus a
//! 1 GiB node-image-sized blob, pushed to a fresh local distribution registry (Debian `docker-registry`) by
//! csctl and by oras-py (the same files and media types), in the same run; then both republish unchanged.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

#[derive(Parser)]
#[command(
    about = "csctl publish vs oras-py push: seed stack + a large blob to a local docker-registry (prints ratios)"
)]
struct Cli {
    /// Size of the extra blob in MiB.
    #[arg(long, default_value_t = 1024)]
    blob_mib: usize,
    /// The csctl binary (default: next to this binary, i.e. the same target profile).
    #[arg(long)]
    csctl: Option<PathBuf>,
    /// The Python with oras-py (default: $BEOWULF_PEERS_DIR/venv/bin/python).
    #[arg(long)]
    python: Option<PathBuf>,
}

struct Registry {
    child: Child,
    addr: String,
}

impl Registry {
    fn start(dir: &Path) -> anyhow::Result<Self> {
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\n",
                dir.join("data").display()
            ),
        )?;
        let log_path = dir.join("registry.log");
        let log = std::fs::File::create(&log_path)?;
        // At level warn the registry does not print its address; "info" does, so ask for it once.
        std::fs::write(
            &config,
            std::fs::read_to_string(&config)?.replace("level: warn", "level: info"),
        )?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("docker-registry not found: run `bash .ci/install`")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(at) = text.find("listening on ") {
                let rest = &text[at + 13..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
                    .unwrap_or(rest.len());
                return Ok(Registry {
                    child,
                    addr: rest[..end].to_string(),
                });
            }
            if Instant::now() > deadline {
                bail!("docker-registry did not start: {text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn timed(what: &str, cmd: &mut Command) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {what}"))?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "{what} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

fn write_blob(path: &Path, mib: usize) -> anyhow::Result<()> {
    // Incompressible, deterministic bytes (xorshift), so nothing along the way can cheat by compressing.
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

fn publish(blob_mib: usize, csctl: Option<PathBuf>, python: Option<PathBuf>) -> anyhow::Result<()> {
    let here = std::env::current_exe()?;
    let csctl = csctl.unwrap_or_else(|| here.with_file_name("csctl"));
    if !csctl.is_file() {
        bail!(
            "{} not found: build it first with `cargo build --release -p csctl` (or pass --csctl)",
            csctl.display()
        );
    }
    let peers = std::env::var("BEOWULF_PEERS_DIR").unwrap_or_else(|_| "/opt/beowulf-peers".into());
    let python = python.unwrap_or_else(|| PathBuf::from(peers).join("venv/bin/python"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let work = tempfile::tempdir()?;
    let env_home = work.path().join("home");
    std::fs::create_dir_all(&env_home)?;

    // The release: the seed stack, built by csctl, plus the big blob.
    let out = work.path().join("release");
    let created = Command::new(&csctl)
        .args(["--format", "json", "create", "--mode", "hash", "-o"])
        .arg(&out)
        .arg(root.join("providers/beowulf/hpc/1-33"))
        .output()?;
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
            .context("csctl create printed no path")?,
    );
    let tag = release
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    eprintln!("writing a {blob_mib} MiB blob ...");
    write_blob(&release.join("node-image.raw"), blob_mib)?;
    let mut names: Vec<String> = std::fs::read_dir(&release)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    let total: u64 = names
        .iter()
        .map(|n| {
            std::fs::metadata(release.join(n))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum();

    let reg_dir = work.path().join("registry");
    std::fs::create_dir_all(&reg_dir)?;
    let reg = Registry::start(&reg_dir)?;
    let ours = |repo: &str| {
        let mut c = Command::new(&csctl);
        c.args(["publish"])
            .arg(&release)
            .args(["--to", &format!("oci://{}/{repo}", reg.addr)])
            .env("HOME", &env_home)
            .env("XDG_STATE_HOME", env_home.join("state"))
            .env_remove("OCI_REPOSITORY")
            .env_remove("DOCKER_CONFIG");
        c
    };
    let oras = |repo: &str| {
        let mut c = Command::new(&python);
        c.arg("-c")
            .arg(ORAS_PUSH)
            .args([reg.addr.as_str(), repo, tag.as_str()])
            .arg(&release);
        for n in &names {
            c.arg(format!("{n}={}", media_type(n)));
        }
        c.env("HOME", &env_home);
        c
    };
    eprintln!(
        "pushing {} files, {total} bytes, to {} ...",
        names.len(),
        reg.addr
    );
    // Interleave so both see the same machine state; distinct repositories so nothing is shared.
    let t_oras = timed("oras-py push", &mut oras("bench/oras"))?;
    let t_ours = timed("csctl publish", &mut ours("bench/csctl"))?;
    let t_oras_again = timed("oras-py push (unchanged)", &mut oras("bench/oras"))?;
    let t_ours_again = timed("csctl publish (unchanged)", &mut ours("bench/csctl"))?;
    let mib = total as f64 / (1 << 20) as f64;
    println!(
        "publish: seed stack {tag} + {blob_mib} MiB blob ({} files, {total} bytes) to docker-registry 2.8 on loopback",
        names.len()
    );
    println!(
        "  first push:  csctl {:>8.2} s ({:>7.1} MiB/s)   oras-py {:>8.2} s ({:>7.1} MiB/s)   oras-py/csctl = {:.2}",
        t_ours.as_secs_f64(),
        mib / t_ours.as_secs_f64(),
        t_oras.as_secs_f64(),
        mib / t_oras.as_secs_f64(),
        t_oras.as_secs_f64() / t_ours.as_secs_f64()
    );
    println!(
        "  republish:   csctl {:>8.2} s                  oras-py {:>8.2} s                  oras-py/csctl = {:.2}",
        t_ours_again.as_secs_f64(),
        t_oras_again.as_secs_f64(),
        t_oras_again.as_secs_f64() / t_ours_again.as_secs_f64()
    );
    println!(
        "  (ratio > 1: csctl is faster; a csctl republish reuses cached digests and sends no blob)"
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    publish(cli.blob_mib, cli.csctl, cli.python)
}
