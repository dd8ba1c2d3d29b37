//! Process and namespace plumbing shared by the end-to-end tests and the benchmarks. The core returns
//! `anyhow::Result` (the `bench` binary reports errors); the crate root re-exports it and adds the panicking
//! forms tests use (`Netns::new`, `Netns::ip`, `Proc::spawn`, `run`, `wait_for`).

use std::ffi::OsStr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Runs a command to completion; fails with its output if it fails. Returns its stdout.
pub fn try_run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `cond` every 50 ms until it returns `Some`, or fails after `timeout` naming `what`.
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A network namespace this process created; deleted (with every interface in it) on drop, after everything
/// still running in it has been stopped by its owners.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// `ip netns add <name>` with loopback up. Callers put the process id in `name` so that concurrent runs
    /// (and other tests on the machine) never share a namespace; a leftover of the same name (a crashed run
    /// of the same pid) is ours to remove.
    pub fn create(name: &str) -> anyhow::Result<Netns> {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        try_run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.try_ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n <ns> <args>`; returns its stdout.
    pub fn try_ip(&self, args: &[&str]) -> anyhow::Result<String> {
        try_run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A TCP socket listening at `addr` inside the namespace, owned by this process (a socket stays in the
    /// namespace it was made in): the part systemd plays for a `.socket` unit.
    pub fn listen_tcp(&self, addr: std::net::SocketAddr) -> anyhow::Result<std::net::TcpListener> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            // setns changes only the calling thread's namespace: a thread of its own, which then ends.
            s.spawn(|| {
                let ns = std::fs::File::open(&path)?;
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                Ok(std::net::TcpListener::bind(addr)?)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the thread binding {addr} in {path} panicked"))?
        })
    }

    /// A command that runs inside the namespace (`ip netns exec`).
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// A command that runs inside the namespace bounded by `timeout(1)`, so that nothing outlives a
    /// benchmark even if it is killed before its destructors run.
    pub fn command(&self, limit: Duration, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("timeout");
        c.arg(limit.as_secs().max(1).to_string())
            .args(["ip", "netns", "exec", &self.name])
            .arg(program);
        c
    }

    /// The path `setns(2)` needs to move a thread into this namespace.
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A veth pair between two namespaces, each end with an address and up.
pub fn veth(
    a: &Netns,
    a_if: &str,
    a_cidr: &str,
    b: &Netns,
    b_if: &str,
    b_cidr: &str,
) -> anyhow::Result<()> {
    try_run(Command::new("ip").args([
        "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ]))?;
    a.try_ip(&["addr", "add", a_cidr, "dev", a_if])?;
    b.try_ip(&["addr", "add", b_cidr, "dev", b_if])?;
    a.try_ip(&["link", "set", a_if, "up"])?;
    b.try_ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

/// A child process stopped on drop: SIGTERM (beowulf shuts down cleanly, `timeout` forwards it), then
/// SIGKILL after 3 s, then reaped.
pub struct Proc {
    pub name: String,
    pub child: Child,
}

impl Proc {
    /// Starts `cmd` with stdin from /dev/null.
    pub fn try_spawn(name: &str, cmd: &mut Command) -> anyhow::Result<Proc> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}: is it installed? (`bash .ci/install`)"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
        })
    }

    /// The exit status if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Fails when the process has already exited (a bad configuration, a port in use).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early: {status}", self.name);
        }
        Ok(())
    }

    pub fn stop(&mut self) {
        if self.exited().is_none() {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            while self.exited().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_run_reports_failure_with_output() {
        let err = try_run(Command::new("sh").args(["-c", "echo oops >&2; exit 3"])).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("oops"), "{msg}");
        assert_eq!(
            try_run(Command::new("sh").args(["-c", "echo hi"])).unwrap(),
            "hi\n"
        );
    }

    #[test]
    fn poll_times_out_and_returns_values() {
        assert!(poll("never", Duration::from_millis(120), || None::<()>).is_err());
        let mut n = 0;
        let v = poll("third try", Duration::from_secs(5), || {
            n += 1;
            (n == 3).then_some(n)
        })
        .unwrap();
        assert_eq!(v, 3);
    }

    #[test]
    fn proc_reports_early_exit_and_stops_on_drop() {
        let mut p = Proc::try_spawn("false", &mut Command::new("false")).unwrap();
        poll("false to exit", Duration::from_secs(5), || p.exited()).unwrap();
        assert!(p.check_alive().is_err());
        let mut s = Proc::try_spawn("sleep", Command::new("sleep").arg("60")).unwrap();
        s.check_alive().unwrap();
        s.stop();
        assert!(s.exited().is_some());
    }
}
