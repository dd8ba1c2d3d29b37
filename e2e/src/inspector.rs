//! The in-band hardware inspection image (`images/inspector`): built into a directory, booted directly (QEMU's
//! `-kernel`/`-initrd`, no PXE) on a machine the caller shapes with QEMU arguments, its report read from the
//! console (the JSON between `INSPECTOR: BEGIN` and `INSPECTOR: END`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Proc, run, wait_for};

/// The `timeout` around QEMU (seconds); a boot takes 5–20 s under TCG.
pub const QEMU_TIMEOUT_S: u64 = 120;

/// The built image.
#[derive(Debug, Clone)]
pub struct Inspector {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// What one boot of the inspector produced.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// Everything the machine wrote to its serial console.
    pub console: String,
    /// The report: the JSON between the markers.
    pub report: serde_json::Value,
    /// From starting QEMU to its exit (the machine powered itself off).
    pub elapsed: Duration,
}

/// Builds the inspector image (`images/inspector/build.sh`) into `dir`.
pub fn build(dir: &Path) -> Inspector {
    run(Command::new("bash")
        .arg(crate::repo_root().join("images/inspector/build.sh"))
        .arg(dir)
        .stdout(Stdio::null()));
    Inspector {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.gz"),
    }
}

impl Inspector {
    /// Boots the image on a QEMU machine (TCG, no reboot, serial console to `dir/serial-<name>.log`) shaped by
    /// `qemu_args` (CPUs, memory, disks, NICs, SMBIOS), with `append` added to the kernel command line, and
    /// waits for it to power off. Without a `-nic`/`-netdev` in `qemu_args` the machine has no NIC (QEMU's
    /// default one would reach out). Panics with the console when QEMU fails or the report is missing.
    pub fn boot(&self, dir: &Path, name: &str, append: &str, qemu_args: &[&str]) -> Inspection {
        let serial = dir.join(format!("serial-{name}.log"));
        std::fs::write(&serial, b"").unwrap();
        // No LLDP sender here: do not wait for one (the PXE lab tests LLDP with lldpd).
        let mut cmdline = "console=ttyS0,115200 quiet panic=-1 beowulf.lldp_wait=0".to_string();
        if !append.is_empty() {
            cmdline.push(' ');
            cmdline.push_str(append);
        }
        let mut cmd = Command::new("timeout");
        cmd.arg(QEMU_TIMEOUT_S.to_string())
            .args(["qemu-system-x86_64", "-accel", "tcg", "-kernel"])
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            .arg("-append")
            .arg(&cmdline)
            .args([
                "-nographic",
                "-no-reboot",
                "-monitor",
                "none",
                "-display",
                "none",
            ])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()));
        if !qemu_args
            .iter()
            .any(|a| matches!(*a, "-nic" | "-netdev" | "-net"))
        {
            cmd.args(["-nic", "none"]);
        }
        let stderr = std::fs::File::create(dir.join(format!("qemu-{name}.log"))).unwrap();
        cmd.args(qemu_args).stdout(Stdio::null()).stderr(stderr);
        let start = Instant::now();
        let mut qemu = Proc::spawn(&format!("qemu {name}"), &mut cmd);
        let status = wait_for(
            &format!("{name} to power off"),
            Duration::from_secs(QEMU_TIMEOUT_S + 10),
            || qemu.exited(),
        );
        let elapsed = start.elapsed();
        let console = String::from_utf8_lossy(&std::fs::read(&serial).unwrap()).into_owned();
        assert!(
            status.success(),
            "qemu {name} exited with {status} after {elapsed:?} (124: the timeout); QEMU said: {}\nconsole:\n{console}",
            std::fs::read_to_string(dir.join(format!("qemu-{name}.log"))).unwrap_or_default()
        );
        let report = report_from_console(&console)
            .unwrap_or_else(|e| panic!("{name}: {e}; console:\n{console}"));
        Inspection {
            console,
            report,
            elapsed,
        }
    }
}

/// The JSON between the `INSPECTOR: BEGIN` and `INSPECTOR: END` lines of a console (serial consoles end lines
/// with `\r\n`).
pub fn report_from_console(console: &str) -> Result<serde_json::Value, String> {
    let mut lines = console.lines().map(str::trim);
    if !lines.any(|l| l == "INSPECTOR: BEGIN") {
        return Err("no `INSPECTOR: BEGIN` line".into());
    }
    let mut json = String::new();
    for l in lines {
        if l == "INSPECTOR: END" {
            return serde_json::from_str(&json).map_err(|e| format!("the report is not JSON: {e}"));
        }
        json.push_str(l);
    }
    Err("no `INSPECTOR: END` line".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_read_between_the_markers() {
        let console = "SeaBIOS\r\nINSPECTOR: memory x\r\nINSPECTOR: BEGIN\r\n{\"version\":1,\r\n\"lldp\":[]}\r\nINSPECTOR: END\r\nINSPECTOR: powering off\r\n";
        assert_eq!(
            report_from_console(console).unwrap(),
            serde_json::json!({"version": 1, "lldp": []})
        );
        assert!(report_from_console("INSPECTOR: BEGIN\n{}\n").is_err());
        assert!(report_from_console("{}\nINSPECTOR: END\n").is_err());
        assert!(report_from_console("INSPECTOR: BEGIN\n{\nINSPECTOR: END\n").is_err());
    }
}
