//! Harness for the end-to-end suite: network namespaces, QEMU machines, BMC simulators, an OCI registry.
//!
//! Everything a test starts lives in a network namespace it creates (unique per test and process), is started
//! as a child process the harness owns, is waited for by polling with a deadline, and is stopped and removed on
//! drop.
#![allow(clippy::unwrap_used)]

pub mod bench;
pub mod bench_bmc;
pub mod bmc_proxy;
pub mod hpc;
pub mod inspector;
pub mod ipmi_sim;
pub mod kube;
pub mod pods;
pub mod pxe;
pub mod pyghmi_bmc;
pub mod qemu_bmc;
pub mod registry;
pub mod serial_wire;
pub mod sushy;

pub mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub use harness::{Netns, Proc, poll, try_run, veth};

/// The last `n` lines of `s` (a log or console, for a failure message).
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `cond` every 50 ms until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, cond: impl FnMut() -> Option<T>) -> T {
    poll(what, timeout, cond).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs a command to completion and panics with its output if it fails; returns its stdout.
pub fn run(cmd: &mut Command) -> String {
    try_run(cmd).unwrap_or_else(|e| panic!("{e:#}"))
}

/// `$CARGO_TARGET_DIR`, else the `target` directory of the running binary (`target/<profile>/…`), else the
/// repository's `target/`: where built images are cached between runs.
pub fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|a| a.file_name().is_some_and(|n| n == "target"))
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| repo_root().join("target"))
}

/// Runs csctl's `create` or `publish` in this process, as `csctl ARGS…` would (progress off), panicking with
/// the error when it fails.
pub fn csctl(args: &[&std::ffi::OsStr]) {
    use clap::Parser as _;
    let cli = csctl::cli::Cli::try_parse_from(
        [std::ffi::OsStr::new("csctl")].iter().chain(args).copied(),
    )
    .unwrap_or_else(|e| panic!("csctl {args:?}: {e}"));
    let ctx = csctl::output::Ctx {
        format: cli.format,
        quiet: true,
    };
    let plan = match &cli.command {
        csctl::cli::Command::Create(a) => a.resolve(),
        csctl::cli::Command::Publish(a) => a.resolve(),
        _ => panic!("e2e::csctl runs create and publish only, not {args:?}"),
    };
    csctl::commands::run(
        &ctx,
        &plan.unwrap_or_else(|e| panic!("csctl {args:?}: {e:#}")),
    )
    .unwrap_or_else(|e| panic!("csctl {args:?}: {e:#}"));
}

/// The one release directory `csctl create --output OUT` wrote.
pub fn release_dir(out: &Path) -> PathBuf {
    std::fs::read_dir(out)
        .unwrap_or_else(|e| panic!("{}: {e}", out.display()))
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap_or_else(|| {
            panic!(
                "csctl create wrote no release directory in {}",
                out.display()
            )
        })
}

/// Runs the CI variant of the image recipe `images/<recipe>/build.sh` into `<target_dir>/images/<recipe>-ci`
/// (the recipe reuses an intact output of the same recipe hash: minutes the first time only); returns that
/// directory.
pub fn build_ci_image(recipe: &str) -> PathBuf {
    let out = target_dir().join(format!("images/{recipe}-ci"));
    run(Command::new("bash")
        .arg(repo_root().join("images").join(recipe).join("build.sh"))
        .arg(&out)
        .env("VARIANT", "ci")
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit()));
    out
}

/// The demos run `beowulf` (the boot plane, `beowulf bmc`) as themselves re-executed with `__beowulf` first:
/// in such a child this runs the CLI and returns its result; in the demo itself, `None`.
pub fn run_as_beowulf_child() -> Option<anyhow::Result<()>> {
    use clap::Parser as _;
    let mut args = std::env::args_os();
    let _ = args.next();
    if args.next().is_none_or(|a| a != "__beowulf") {
        return None;
    }
    let cli = beowulf::cli::Cli::parse_from(std::iter::once("beowulf".into()).chain(args));
    Some(
        tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(beowulf::cli::run(cli))),
    )
}

/// The command that runs this binary as `beowulf` (see [`run_as_beowulf_child`]).
pub fn self_as_beowulf() -> anyhow::Result<Vec<std::ffi::OsString>> {
    Ok(vec![std::env::current_exe()?.into(), "__beowulf".into()])
}

/// Where test peers live (`.ci/install`).
pub fn peers_dir() -> PathBuf {
    std::env::var_os("BEOWULF_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/beowulf-peers"))
}

/// A scratch directory for one test (logs of every process it ran, certificates, kubeconfigs): removed
/// when dropped, unless `BEOWULF_E2E_KEEP` is set — then it is kept and its path printed.
pub struct Scratch {
    path: PathBuf,
    _remove: Option<tempfile::TempDir>,
}

impl Scratch {
    pub fn new(test: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix(&format!("beowulf-{test}-"))
            .tempdir()
            .unwrap();
        if std::env::var_os("BEOWULF_E2E_KEEP").is_some() {
            let path = dir.keep();
            eprintln!("{test}: keeping {}", path.display());
            return Scratch {
                path,
                _remove: None,
            };
        }
        Scratch {
            path: dir.path().to_path_buf(),
            _remove: Some(dir),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The repository root (for `images/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The panicking forms the tests use.
impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        Proc::try_spawn(name, cmd).unwrap_or_else(|e| panic!("{e:#} ({cmd:?})"))
    }
}

impl Netns {
    /// Creates `bw-<test>-<pid>` (panics on failure).
    pub fn new(test: &str) -> Netns {
        Netns::create(&format!("bw-{test}-{}", std::process::id()))
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// `ip -n <ns> <args>`; panics on failure, returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        self.try_ip(args).unwrap_or_else(|e| panic!("{e:#}"))
    }
}

/// Is the test running with what the end-to-end suite needs (root, QEMU)? CI always is; a developer without
/// root gets a clear failure instead of a confusing one.
pub fn require_root_and_peers() {
    let uid = run(Command::new("id").arg("-u"));
    assert_eq!(
        uid.trim(),
        "0",
        "the end-to-end suite needs root (network namespaces, taps, DHCP port 67)"
    );
    for tool in ["qemu-system-x86_64", "dnsmasq", "curl", "timeout"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "{tool} is missing: run `bash .ci/install`"
        );
    }
}
