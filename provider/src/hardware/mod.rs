//! What a host is made of: the in-band inspection report (CPU, memory, disks, NICs, PCI devices, DMI), how it
//! is read from the wire and checked, and what the rest of the provider derives from it (disk and device
//! kinds, [`requirements`] for choosing hosts). No Kubernetes and no I/O here: the boot plane's HTTP server
//! parses reports with [`Hardware::from_report`], the standalone server persists them, the controllers copy
//! them into `BeowulfHost.status.hardware` (the types derive `JsonSchema` for that), and the claim reads them.
//!
//! The inspection image (`images/inspector`) collects the raw facts from `/proc` and `/sys` and posts them as
//! JSON; every interpretation (is this disk NVMe, is that PCI device a GPU) happens here, in Rust, where it is
//! tested — the collector stays a dumb reader. Adding a fact: a field here (optional, so older reports still
//! parse), its line in `images/inspector/init`, and the check in [`Hardware::from_report`].

pub mod out_of_band;
pub mod requirements;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The largest report the boot plane reads; a real one is a few KiB (a host with 24 disks and 8 GPUs: ~12 KiB).
pub const MAX_REPORT_BYTES: usize = 256 * 1024;
const MAX_ITEMS: usize = 1024;
const MAX_FLAGS: usize = 64;
const MAX_TEXT: usize = 256;

/// The report format version the inspector writes and this build reads.
pub const REPORT_VERSION: u32 = 1;

/// A host's hardware as its inspection reported it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Hardware {
    pub cpu: Cpu,
    pub memory: Memory,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<Nic>,
    /// Every PCI function, with its kind (GPU, InfiniBand, …) derived from class and vendor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pci: Vec<PciDevice>,
    /// DMI system information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemInfo>,
    /// LLDP neighbours of the NICs (switch and port), when the inspector saw any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lldp: Vec<LldpNeighbor>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cpu {
    /// `uname -m`: `x86_64`, `aarch64`.
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub sockets: u32,
    /// Physical cores, all sockets together.
    pub cores: u32,
    /// Logical CPUs (hardware threads), all sockets together.
    pub threads: u32,
    /// Instruction-set flags of note (`avx2`, `avx512f`, `aes`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    /// Installed memory in bytes.
    pub bytes: u64,
    /// What the kernel can use (MemTotal), in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usable_bytes: Option<u64>,
}

/// What a disk is, for choosing hosts: NVMe, or SATA/SAS/virtio by the kernel's rotational flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiskKind {
    Nvme,
    Ssd,
    Hdd,
}

impl DiskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskKind::Nvme => "nvme",
            DiskKind::Ssd => "ssd",
            DiskKind::Hdd => "hdd",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    /// The kernel's name (`nvme0n1`, `sda`, `vda`); not stable across boots — select by serial, WWN or path.
    pub name: String,
    pub size_bytes: u64,
    /// Derived from the name and `rotational`; never sent by the inspector.
    #[serde(default = "unknown_disk")]
    pub kind: DiskKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    /// The `/dev/disk/by-path/` name (`pci-0000:00:04.0`), stable while the hardware is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_path: Option<String>,
}

fn unknown_disk() -> DiskKind {
    DiskKind::Hdd
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Nic {
    pub name: String,
    pub mac: String,
    /// Link speed in Mbit/s; absent without a link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_mbps: Option<u32>,
    #[serde(default)]
    pub carrier: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
}

/// What a PCI function is, derived from its class code and vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PciKind {
    /// A display or 3D controller from a GPU vendor (NVIDIA, AMD, Intel).
    Gpu,
    /// Another display controller: a BMC's or an emulator's VGA.
    Display,
    /// An InfiniBand controller (class 0x0207).
    Infiniband,
    Network,
    Storage,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PciDevice {
    /// `0000:00:02.0`.
    pub address: String,
    /// The 24-bit class code, `0x030000`.
    pub class: String,
    /// `0x10de`.
    pub vendor: String,
    pub device: String,
    /// Derived from class and vendor; never sent by the inspector.
    #[serde(default = "other_pci")]
    pub kind: PciKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
}

fn other_pci() -> PciKind {
    PciKind::Other
}

/// GPU vendors by PCI vendor ID, and the names requirements may use for them.
pub const GPU_VENDORS: [(&str, &str); 3] =
    [("0x10de", "nvidia"), ("0x1002", "amd"), ("0x8086", "intel")];

impl PciDevice {
    fn classify(&self) -> PciKind {
        let class = u32::from_str_radix(self.class.trim_start_matches("0x"), 16).unwrap_or(0);
        let (base, sub) = (class >> 16, (class >> 8) & 0xff);
        match base {
            0x03 if GPU_VENDORS.iter().any(|(id, _)| *id == self.vendor) => PciKind::Gpu,
            0x03 => PciKind::Display,
            0x02 if sub == 0x07 => PciKind::Infiniband,
            0x02 => PciKind::Network,
            0x01 => PciKind::Storage,
            _ => PciKind::Other,
        }
    }

    /// The vendor's name for GPU requirements (`nvidia`), or its ID.
    pub fn vendor_name(&self) -> &str {
        GPU_VENDORS
            .iter()
            .find(|(id, _)| *id == self.vendor)
            .map(|(_, n)| *n)
            .unwrap_or(&self.vendor)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SystemInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bios_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LldpNeighbor {
    /// The local NIC.
    pub interface: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
}

/// A report that cannot be used. Says what is wrong; never echoes the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("the report is {0} bytes; at most {MAX_REPORT_BYTES} are read")]
    TooLarge(usize),
    #[error("the report is not the inspector's JSON: {0}")]
    Malformed(String),
    #[error("report version {0} is not supported (this build reads version {REPORT_VERSION})")]
    Version(u32),
    #[error("the report is implausible: {0}")]
    Invalid(String),
}

/// The wire form: the facts plus the version; derived fields are ignored if present.
#[derive(Deserialize)]
struct Report {
    version: u32,
    #[serde(flatten)]
    hardware: Hardware,
}

impl Hardware {
    /// Parses and checks an inspection report (the body the inspector posts), then derives disk and PCI kinds.
    /// Empty strings become absent values; anything implausible (no CPU, a bad MAC, control characters,
    /// oversized lists) refuses the whole report.
    pub fn from_report(body: &[u8]) -> Result<Hardware, ReportError> {
        if body.len() > MAX_REPORT_BYTES {
            return Err(ReportError::TooLarge(body.len()));
        }
        let report: Report = serde_json::from_slice(body).map_err(|e| {
            // serde_json's message names a line and column and the expected type, never the input itself.
            ReportError::Malformed(e.to_string())
        })?;
        if report.version != REPORT_VERSION {
            return Err(ReportError::Version(report.version));
        }
        let mut hw = report.hardware;
        hw.normalize()?;
        Ok(hw)
    }

    fn normalize(&mut self) -> Result<(), ReportError> {
        let invalid = |m: String| Err(ReportError::Invalid(m));
        let c = &mut self.cpu;
        text("cpu.architecture", &mut c.architecture)?;
        if c.architecture.is_empty() {
            return invalid("cpu.architecture is empty".into());
        }
        opt_text("cpu.model", &mut c.model)?;
        if c.threads == 0 || c.threads > 65_536 || c.sockets == 0 || c.sockets > 64 {
            return invalid(format!("{} sockets with {} threads", c.sockets, c.threads));
        }
        if c.cores == 0 || c.cores > c.threads {
            return invalid(format!("{} cores for {} threads", c.cores, c.threads));
        }
        if c.flags.len() > MAX_FLAGS {
            return invalid(format!("{} CPU flags (at most {MAX_FLAGS})", c.flags.len()));
        }
        for f in &mut c.flags {
            text("cpu.flags", f)?;
        }
        if self.memory.bytes == 0 {
            return invalid("memory.bytes is 0".into());
        }
        for (what, n) in [
            ("disks", self.disks.len()),
            ("nics", self.nics.len()),
            ("pci", self.pci.len()),
            ("lldp", self.lldp.len()),
        ] {
            if n > MAX_ITEMS {
                return invalid(format!("{n} {what} (at most {MAX_ITEMS})"));
            }
        }
        for d in &mut self.disks {
            text("disks.name", &mut d.name)?;
            for (field, v) in [
                ("disks.model", &mut d.model),
                ("disks.serial", &mut d.serial),
                ("disks.wwn", &mut d.wwn),
                ("disks.byPath", &mut d.by_path),
            ] {
                opt_text(field, v)?;
            }
            // The kernel's `wwid` is a WWN only in its NAA/EUI forms; `t10.…` and `nvme.…` are made up from the
            // model and serial (QEMU's disks have nothing else), which are recorded on their own.
            if d.wwn.as_deref().is_some_and(|w| {
                !(w.starts_with("naa.") || w.starts_with("eui.") || w.starts_with("0x"))
            }) {
                d.wwn = None;
            }
            d.kind = if d.name.starts_with("nvme") {
                DiskKind::Nvme
            } else if d.rotational == Some(false) {
                DiskKind::Ssd
            } else {
                DiskKind::Hdd
            };
        }
        for n in &mut self.nics {
            text("nics.name", &mut n.name)?;
            opt_text("nics.driver", &mut n.driver)?;
            match n.mac.parse::<crate::boot::MacAddr>() {
                Ok(mac) => n.mac = mac.to_string(),
                Err(_) => return invalid(format!("NIC {} has MAC {:?}", n.name, n.mac)),
            }
        }
        for p in &mut self.pci {
            for (field, v) in [
                ("pci.address", &mut p.address),
                ("pci.class", &mut p.class),
                ("pci.vendor", &mut p.vendor),
                ("pci.device", &mut p.device),
            ] {
                text(field, v)?;
                *v = v.to_ascii_lowercase();
            }
            opt_text("pci.driver", &mut p.driver)?;
            p.kind = p.classify();
        }
        if let Some(s) = &mut self.system {
            for (field, v) in [
                ("system.vendor", &mut s.vendor),
                ("system.product", &mut s.product),
                ("system.serial", &mut s.serial),
                ("system.biosVersion", &mut s.bios_version),
            ] {
                opt_text(field, v)?;
            }
        }
        for l in &mut self.lldp {
            text("lldp.interface", &mut l.interface)?;
            opt_text("lldp.switch", &mut l.switch)?;
            opt_text("lldp.port", &mut l.port)?;
        }
        Ok(())
    }

    /// GPUs (display controllers of a GPU vendor).
    pub fn gpus(&self) -> impl Iterator<Item = &PciDevice> {
        self.pci.iter().filter(|p| p.kind == PciKind::Gpu)
    }

    /// One line for the status page and logs: `x86_64, 2 sockets/4 cores/8 threads, 16 GiB, 2 disks (1 nvme),
    /// 2 NICs, 1 GPU`.
    pub fn summary(&self) -> String {
        let nvme = self
            .disks
            .iter()
            .filter(|d| d.kind == DiskKind::Nvme)
            .count();
        let gpus = self.gpus().count();
        let ib = self
            .pci
            .iter()
            .filter(|p| p.kind == PciKind::Infiniband)
            .count();
        let mut s = format!(
            "{}, {} socket{}/{} cores/{} threads, {}, {} disk{}",
            self.cpu.architecture,
            self.cpu.sockets,
            plural(self.cpu.sockets as usize),
            self.cpu.cores,
            self.cpu.threads,
            human_bytes(self.memory.bytes),
            self.disks.len(),
            plural(self.disks.len()),
        );
        if nvme > 0 {
            s.push_str(&format!(" ({nvme} nvme)"));
        }
        s.push_str(&format!(
            ", {} NIC{}",
            self.nics.len(),
            plural(self.nics.len())
        ));
        if gpus > 0 {
            s.push_str(&format!(", {gpus} GPU{}", plural(gpus)));
        }
        if ib > 0 {
            s.push_str(&format!(", {ib} InfiniBand"));
        }
        s
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `16 GiB`, `768 MiB`, `1.5 TiB`: binary units, at most one decimal.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Trims `v` and refuses control characters and overlong text (a report is shown on pages and in conditions).
fn text(field: &str, v: &mut String) -> Result<(), ReportError> {
    let t = v.trim();
    if t.len() > MAX_TEXT {
        return Err(ReportError::Invalid(format!(
            "{field} is {} bytes long (at most {MAX_TEXT})",
            t.len()
        )));
    }
    if t.chars().any(char::is_control) {
        return Err(ReportError::Invalid(format!(
            "{field} contains control characters"
        )));
    }
    if t.len() != v.len() {
        *v = t.to_string();
    }
    Ok(())
}

fn opt_text(field: &str, v: &mut Option<String>) -> Result<(), ReportError> {
    if let Some(s) = v {
        text(field, s)?;
        if s.is_empty() {
            *v = None;
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
