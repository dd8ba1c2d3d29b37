//! Local disks a live node keeps: what a host or machine declares ([`LocalDisk`]), the plan its boot carries
//! ([`DiskPlan`], resolved against the inspected hardware), what the node reports back ([`DiskReport`]), and
//! how a host is cleaned on release ([`Cleaning`]). No Kubernetes and no I/O here: the inventory, the API types,
//! the boot plane and the engine all use these.
//!
//! The node does the disk work, not the server: a live image cannot be trusted to a server's idea of what is on
//! a disk it has not seen since the last boot. The contract with the node image (docs/architecture.md, "Local
//! disks") is one kernel argument per disk, `beowulf.disk=<name>,<serial|wwn|byPath>=<id>,<mount path>,<fs>`,
//! and one line per disk posted to `/disks/<token>`. A disk is formatted only when it holds no signature at all
//! (`blkid -p` finds nothing); a filesystem labelled `bw-<name>` is ours and mounted as it is; anything else is
//! foreign and left untouched, never mounted.

use std::collections::HashSet;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::hardware::{DiskKind, Hardware};

/// At most this many local disks per host (each is one kernel argument).
pub const MAX_DISKS: usize = 8;
/// The longest disk name: its filesystem label `bw-<name>` must fit ext4's 16 bytes.
pub const MAX_NAME: usize = 12;
/// The largest disk report the boot plane reads (a line per disk).
pub const MAX_REPORT_BYTES: usize = 16 * 1024;
const MAX_ID: usize = 128;
const MAX_DETAIL: usize = 200;
/// Mount points a declaration may not use: the live system's own.
const RESERVED_MOUNTS: [&str; 7] = ["/", "/proc", "/sys", "/dev", "/run", "/boot", "/tmp"];

/// A local disk to keep, mounted at `mountPath`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalDisk {
    /// A short name (lower-case letters, digits and `-`, at most 12): the filesystem's label is `bw-<name>`.
    pub name: String,
    /// Where the node mounts it, for example `/var/lib/etcd` or `/scratch`.
    pub mount_path: String,
    /// The filesystem made on a blank disk.
    #[serde(default)]
    pub filesystem: Filesystem,
    /// Which disk: a stable identifier (exactly one of `serial`, `wwn`, `byPath`), or properties (`kind`,
    /// `minSizeBytes`) that pick a disk from the host's inspected hardware.
    pub disk: DiskSelector,
    /// A host without such a disk (or not inspected yet) runs without it, from RAM, instead of failing to
    /// provision: for a stack whose nodes may or may not have disks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    #[default]
    Ext4,
}

impl Filesystem {
    pub fn as_str(self) -> &'static str {
        match self {
            Filesystem::Ext4 => "ext4",
        }
    }
}

/// Which disk to use. Never a kernel name (`/dev/sdb`): those change between boots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiskSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    /// The `/dev/disk/by-path/` name, for example `pci-0000:00:05.0-nvme-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_path: Option<String>,
    /// With no identifier: a disk of this kind from the inspected hardware.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<DiskKind>,
    /// With no identifier: a disk at least this large from the inspected hardware.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size_bytes: Option<u64>,
}

/// A stable identifier of one disk, as the node finds it in `/sys`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DiskId {
    Serial(String),
    Wwn(String),
    ByPath(String),
}

impl fmt::Display for DiskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskId::Serial(s) => write!(f, "serial={s}"),
            DiskId::Wwn(s) => write!(f, "wwn={s}"),
            DiskId::ByPath(s) => write!(f, "byPath={s}"),
        }
    }
}

/// One disk of a boot's plan: a declaration with its disk identified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskPlan {
    pub name: String,
    pub id: DiskId,
    pub mount_path: String,
    pub filesystem: Filesystem,
}

impl DiskPlan {
    /// The kernel argument that tells the node about this disk.
    pub fn kernel_arg(&self) -> String {
        format!(
            "beowulf.disk={},{},{},{}",
            self.name,
            self.id,
            self.mount_path,
            self.filesystem.as_str()
        )
    }
}

/// The kernel arguments of a plan (empty for none): one `beowulf.disk=` per disk, `beowulf.clean=` for a
/// cleaning boot, and `beowulf.disks_url=` where the node posts its report (`report_url`, with the boot's token).
pub fn kernel_args(plan: &[DiskPlan], cleaning: Option<Cleaning>, report_url: &str) -> String {
    if plan.is_empty() {
        return String::new();
    }
    let mut args: Vec<String> = plan.iter().map(DiskPlan::kernel_arg).collect();
    if let Some(c) = cleaning {
        args.push(format!("beowulf.clean={}", c.as_str()));
    }
    args.push(format!("beowulf.disks_url={report_url}"));
    args.join(" ")
}

/// What happens to a host's local disks when its machine releases it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Cleaning {
    /// Nothing: the next machine on the host finds the data (host reuse in rollouts).
    #[default]
    None,
    /// A cleaning boot removes our filesystems' signatures (fast; the blocks stay).
    Metadata,
    /// A cleaning boot zeroes our disks entirely.
    Wipe,
}

impl Cleaning {
    pub fn as_str(self) -> &'static str {
        match self {
            Cleaning::None => "none",
            Cleaning::Metadata => "metadata",
            Cleaning::Wipe => "wipe",
        }
    }
}

/// A declaration that cannot be used, saying which and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("local disk {name:?}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("at most {MAX_DISKS} local disks; {0} declared")]
    TooMany(usize),
    #[error(
        "local disk {0:?} selects its disk by properties, and the host has no inspection report yet: inspect it first or give a serial, wwn or byPath"
    )]
    NotInspected(String),
    #[error("local disk {name:?}: no disk on the host matches {wanted} (inspected: {inspected})")]
    NoMatch {
        name: String,
        wanted: String,
        inspected: String,
    },
}

fn invalid(name: &str, reason: impl Into<String>) -> StorageError {
    StorageError::Invalid {
        name: name.to_string(),
        reason: reason.into(),
    }
}

fn id_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:+-".contains(&b))
}

impl LocalDisk {
    /// The label its filesystem carries (what marks it as ours).
    pub fn label(&self) -> String {
        format!("bw-{}", self.name)
    }

    fn check(&self) -> Result<(), StorageError> {
        let n = &self.name;
        if n.is_empty()
            || n.len() > MAX_NAME
            || !n
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            || n.starts_with('-')
        {
            return Err(invalid(
                n,
                format!("the name must be 1 to {MAX_NAME} lower-case letters, digits or '-'"),
            ));
        }
        let p = &self.mount_path;
        if let Some(r) = RESERVED_MOUNTS
            .iter()
            .find(|r| p == *r || (**r != "/" && p.starts_with(&format!("{r}/"))))
        {
            return Err(invalid(
                n,
                format!("mountPath {p:?} is the live system's own ({r}); choose another"),
            ));
        }
        let parts: Vec<&str> = p.split('/').skip(1).collect();
        if !p.starts_with('/')
            || p.ends_with('/')
            || parts.iter().any(|c| {
                c.is_empty()
                    || *c == "."
                    || *c == ".."
                    || !c
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            })
        {
            return Err(invalid(
                n,
                format!(
                    "mountPath {p:?} must be an absolute path of letters, digits, '.', '_' and '-' (no '..', no trailing '/')"
                ),
            ));
        }
        let s = &self.disk;
        let ids = [&s.serial, &s.wwn, &s.by_path];
        let given = ids.iter().filter(|i| i.is_some()).count();
        if given > 1 {
            return Err(invalid(
                n,
                "give one of serial, wwn and byPath, not several",
            ));
        }
        if given == 1 && (s.kind.is_some() || s.min_size_bytes.is_some()) {
            return Err(invalid(
                n,
                "a disk given by serial, wwn or byPath takes no kind or minSizeBytes",
            ));
        }
        if given == 0 && s.kind.is_none() && s.min_size_bytes.is_none() {
            return Err(invalid(
                n,
                "say which disk: serial, wwn or byPath, or kind and/or minSizeBytes",
            ));
        }
        for v in ids.into_iter().flatten() {
            if !id_ok(v) {
                return Err(invalid(
                    n,
                    format!(
                        "disk identifier {v:?} must be 1 to {MAX_ID} letters, digits or '._:+-' (a serial with spaces: use wwn or byPath)"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn stable_id(&self) -> Option<DiskId> {
        let s = &self.disk;
        s.serial
            .clone()
            .map(DiskId::Serial)
            .or_else(|| s.wwn.clone().map(DiskId::Wwn))
            .or_else(|| s.by_path.clone().map(DiskId::ByPath))
    }
}

/// Checks declarations on their own (names, paths, selectors, no two alike): what a loader does before it
/// accepts them.
pub fn check(disks: &[LocalDisk]) -> Result<(), StorageError> {
    if disks.len() > MAX_DISKS {
        return Err(StorageError::TooMany(disks.len()));
    }
    let (mut names, mut paths, mut ids) = (HashSet::new(), HashSet::new(), HashSet::new());
    for d in disks {
        d.check()?;
        if !names.insert(&d.name) {
            return Err(invalid(&d.name, "declared twice"));
        }
        if !paths.insert(&d.mount_path) {
            return Err(invalid(
                &d.name,
                format!("mountPath {:?} is another disk's too", d.mount_path),
            ));
        }
        if let Some(id) = d.stable_id()
            && !ids.insert(id.clone())
        {
            return Err(invalid(&d.name, format!("disk {id} is another's too")));
        }
    }
    Ok(())
}

/// The plan for a boot: every declaration with its disk identified. A stable identifier is used as given (and,
/// when the host was inspected, must name one of its disks); properties pick, in declaration order, the
/// smallest matching disk not taken yet, named by its serial, else WWN, else by-path.
pub fn resolve(
    disks: &[LocalDisk],
    hardware: Option<&Hardware>,
) -> Result<Vec<DiskPlan>, StorageError> {
    check(disks)?;
    let inventory = hardware.map(|hw| &hw.disks[..]).unwrap_or(&[]);
    let id_of = |d: &crate::hardware::Disk| {
        d.serial
            .clone()
            .map(DiskId::Serial)
            .or_else(|| d.wwn.clone().map(DiskId::Wwn))
            .or_else(|| d.by_path.clone().map(DiskId::ByPath))
    };
    let has = |d: &crate::hardware::Disk, id: &DiskId| match id {
        DiskId::Serial(s) => d.serial.as_ref() == Some(s),
        DiskId::Wwn(s) => d.wwn.as_ref() == Some(s),
        DiskId::ByPath(s) => d.by_path.as_ref() == Some(s),
    };
    let inspected = || {
        let all: Vec<String> = inventory
            .iter()
            .map(|d| {
                let id = id_of(d).map(|i| i.to_string()).unwrap_or_default();
                format!("{} {} {} B {id}", d.name, d.kind.as_str(), d.size_bytes)
            })
            .collect();
        if all.is_empty() {
            "no disks".to_string()
        } else {
            all.join("; ")
        }
    };
    // Disks given by identifier first, so properties never pick a disk another declaration names.
    let mut taken: Vec<DiskId> = disks.iter().filter_map(LocalDisk::stable_id).collect();
    let mut plan = Vec::with_capacity(disks.len());
    for d in disks {
        let id = match d.stable_id() {
            Some(id) => {
                if hardware.is_some() && !inventory.iter().any(|disk| has(disk, &id)) {
                    if d.optional {
                        continue;
                    }
                    return Err(StorageError::NoMatch {
                        name: d.name.clone(),
                        wanted: id.to_string(),
                        inspected: inspected(),
                    });
                }
                id
            }
            None => {
                if hardware.is_none() {
                    if d.optional {
                        continue;
                    }
                    return Err(StorageError::NotInspected(d.name.clone()));
                }
                let s = &d.disk;
                let pick = inventory
                    .iter()
                    .filter(|disk| s.kind.is_none_or(|k| disk.kind == k))
                    .filter(|disk| s.min_size_bytes.is_none_or(|m| disk.size_bytes >= m))
                    .filter_map(|disk| id_of(disk).map(|id| (disk.size_bytes, id)))
                    .filter(|(_, id)| !taken.contains(id))
                    .min_by(|a, b| {
                        a.0.cmp(&b.0)
                            .then_with(|| a.1.to_string().cmp(&b.1.to_string()))
                    });
                let Some((_, id)) = pick else {
                    if d.optional {
                        continue;
                    }
                    let mut wanted = Vec::new();
                    if let Some(k) = s.kind {
                        wanted.push(format!("kind {}", k.as_str()));
                    }
                    if let Some(m) = s.min_size_bytes {
                        wanted.push(format!("at least {m} bytes"));
                    }
                    return Err(StorageError::NoMatch {
                        name: d.name.clone(),
                        wanted: format!(
                            "{} (and not taken by another local disk)",
                            wanted.join(", ")
                        ),
                        inspected: inspected(),
                    });
                };
                taken.push(id.clone());
                id
            }
        };
        plan.push(DiskPlan {
            name: d.name.clone(),
            id,
            mount_path: d.mount_path.clone(),
            filesystem: d.filesystem,
        });
    }
    Ok(plan)
}

/// What the node did with one planned disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiskOutcome {
    /// It was blank: formatted and mounted.
    Formatted,
    /// It held our filesystem: mounted as it was, data kept.
    Mounted,
    /// It holds something we were not told to take: left untouched, not mounted.
    Foreign,
    /// No disk with that identifier.
    Missing,
    /// Formatting or mounting failed.
    Failed,
    /// A cleaning boot removed our filesystem (`metadata`) or zeroed the disk (`wipe`).
    Wiped,
}

impl DiskOutcome {
    const ALL: [DiskOutcome; 6] = [
        DiskOutcome::Formatted,
        DiskOutcome::Mounted,
        DiskOutcome::Foreign,
        DiskOutcome::Missing,
        DiskOutcome::Failed,
        DiskOutcome::Wiped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DiskOutcome::Formatted => "formatted",
            DiskOutcome::Mounted => "mounted",
            DiskOutcome::Foreign => "foreign",
            DiskOutcome::Missing => "missing",
            DiskOutcome::Failed => "failed",
            DiskOutcome::Wiped => "wiped",
        }
    }

    fn parse(s: &str) -> Option<DiskOutcome> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// The disk is usable (mounted) or, in a cleaning boot, clean.
    pub fn ok(self) -> bool {
        matches!(
            self,
            DiskOutcome::Formatted | DiskOutcome::Mounted | DiskOutcome::Wiped
        )
    }
}

/// One line of a node's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiskResult {
    pub name: String,
    pub outcome: DiskOutcome,
    /// The kernel's name for it in that boot (`vdb`), when found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// What the node saw: the foreign filesystem's type and label, the failing command's message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// A node's report on its planned disks: `<name> <outcome> <device|-> [detail]`, one line per disk.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct DiskReport(pub Vec<DiskResult>);

/// A report the boot plane refuses (400, saying why); nothing is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("line {0}: expected '<name> <outcome> <device|-> [detail]'")]
    Malformed(usize),
    #[error(
        "line {line}: unknown outcome {outcome:?} (formatted, mounted, foreign, missing, failed or wiped)"
    )]
    Outcome { line: usize, outcome: String },
    #[error("line {line}: disk {name:?} is not in this boot's plan")]
    NotPlanned { line: usize, name: String },
    #[error("disk {0:?} is reported twice")]
    Twice(String),
    #[error("the report is not UTF-8 text")]
    NotText,
}

impl DiskReport {
    /// Parses a node's report against the boot's plan: every line names a planned disk, once; details are
    /// cut to printable ASCII of bounded length (they end up in conditions and events).
    pub fn parse(body: &[u8], plan: &[DiskPlan]) -> Result<DiskReport, ReportError> {
        let text = std::str::from_utf8(body).map_err(|_| ReportError::NotText)?;
        let mut out: Vec<DiskResult> = Vec::new();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let n = i + 1;
            let mut f = line.trim().splitn(4, ' ');
            let (Some(name), Some(outcome), Some(device)) = (f.next(), f.next(), f.next()) else {
                return Err(ReportError::Malformed(n));
            };
            let outcome = DiskOutcome::parse(outcome).ok_or_else(|| ReportError::Outcome {
                line: n,
                outcome: outcome.chars().take(32).collect(),
            })?;
            if !plan.iter().any(|p| p.name == name) {
                return Err(ReportError::NotPlanned {
                    line: n,
                    name: name.chars().take(32).collect(),
                });
            }
            if out.iter().any(|r| r.name == name) {
                return Err(ReportError::Twice(name.to_string()));
            }
            let device = (device != "-" && id_ok(device)).then(|| device.to_string());
            let detail: String = f
                .next()
                .unwrap_or("")
                .chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .take(MAX_DETAIL)
                .collect();
            out.push(DiskResult {
                name: name.to_string(),
                outcome,
                device,
                detail,
            });
        }
        Ok(DiskReport(out))
    }

    /// Planned disks the node did not report on (it stopped early, or its image does not know the contract).
    pub fn unreported<'a>(&self, plan: &'a [DiskPlan]) -> Vec<&'a str> {
        plan.iter()
            .filter(|p| !self.0.iter().any(|r| r.name == p.name))
            .map(|p| p.name.as_str())
            .collect()
    }

    /// The `LocalDisks` condition for this report on `plan`: `(ok, reason, message)`.
    pub fn condition(&self, plan: &[DiskPlan]) -> (bool, &'static str, String) {
        let bad: Vec<&DiskResult> = self.0.iter().filter(|r| !r.outcome.ok()).collect();
        let unreported = self.unreported(plan);
        let line = |r: &DiskResult| {
            let at = plan
                .iter()
                .find(|p| p.name == r.name)
                .map(|p| format!(" ({})", p.id))
                .unwrap_or_default();
            let detail = if r.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", r.detail)
            };
            format!("{}{at} {}{detail}", r.name, r.outcome.as_str())
        };
        if let Some(first) = bad.first() {
            let reason = match first.outcome {
                DiskOutcome::Foreign => "ForeignFilesystem",
                DiskOutcome::Missing => "DiskMissing",
                _ => "DiskFailed",
            };
            let all: Vec<String> = bad.iter().map(|r| line(r)).collect();
            let advice = match first.outcome {
                DiskOutcome::Foreign => {
                    "a disk holding data it was not told to take is left untouched: clear it (wipefs) or select another disk"
                }
                DiskOutcome::Missing => {
                    "no disk has that identifier: check the host's inspected disks"
                }
                _ => "see the node's console",
            };
            let msg = format!("{}; {advice}", all.join("; "));
            return (false, reason, msg);
        }
        if !unreported.is_empty() {
            return (
                false,
                "NotReported",
                format!(
                    "the node did not report on {}: does its image carry the local-disk agent?",
                    unreported.join(", ")
                ),
            );
        }
        let all: Vec<String> = self.0.iter().map(line).collect();
        (true, "Ready", all.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardware::Disk;

    fn disk(name: &str, mount: &str, sel: DiskSelector) -> LocalDisk {
        LocalDisk {
            name: name.into(),
            mount_path: mount.into(),
            filesystem: Filesystem::Ext4,
            disk: sel,
            optional: false,
        }
    }

    #[test]
    fn an_optional_disk_the_host_lacks_is_left_out_of_the_plan() {
        let big = DiskSelector {
            min_size_bytes: Some(1 << 40),
            ..DiskSelector::default()
        };
        let mut scratch = disk("scratch", "/scratch", big);
        scratch.optional = true;
        let mut named = disk("etcd", "/var/lib/etcd", serial("NOPE"));
        named.optional = true;
        let keep = disk("keep", "/keep", serial("BIG"));
        let all = [scratch.clone(), named, keep];
        let plan = resolve(&all, Some(&hardware())).unwrap();
        assert_eq!(
            plan.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["keep"]
        );
        // Not inspected: the optional disk by properties is left out too; the one by serial is planned as given.
        let plan = resolve(&all, None).unwrap();
        assert_eq!(
            plan.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["etcd", "keep"]
        );
        // Not optional: the same lack is an error.
        scratch.optional = false;
        assert!(resolve(&[scratch], Some(&hardware())).is_err());
    }

    fn serial(s: &str) -> DiskSelector {
        DiskSelector {
            serial: Some(s.into()),
            ..DiskSelector::default()
        }
    }

    fn hw_disk(name: &str, kind: DiskKind, size: u64, serial: Option<&str>, path: &str) -> Disk {
        Disk {
            name: name.into(),
            size_bytes: size,
            kind,
            rotational: None,
            model: None,
            serial: serial.map(str::to_string),
            wwn: None,
            by_path: Some(path.into()),
        }
    }

    fn hardware() -> Hardware {
        Hardware {
            disks: vec![
                hw_disk(
                    "vda",
                    DiskKind::Hdd,
                    64 << 30,
                    Some("BIG"),
                    "pci-0000:00:04.0",
                ),
                hw_disk(
                    "nvme0n1",
                    DiskKind::Nvme,
                    8 << 30,
                    Some("NV8"),
                    "pci-0000:00:05.0-nvme-1",
                ),
                hw_disk(
                    "nvme1n1",
                    DiskKind::Nvme,
                    4 << 30,
                    None,
                    "pci-0000:00:06.0-nvme-1",
                ),
            ],
            ..Hardware::default()
        }
    }

    #[test]
    fn stable_identifiers_become_kernel_arguments() {
        let plan = resolve(
            &[
                disk("etcd", "/var/lib/etcd", serial("NV8")),
                disk(
                    "scratch",
                    "/scratch",
                    DiskSelector {
                        by_path: Some("pci-0000:00:04.0".into()),
                        ..DiskSelector::default()
                    },
                ),
            ],
            None,
        )
        .unwrap();
        assert_eq!(
            kernel_args(&plan, None, "http://b/disks/T"),
            "beowulf.disk=etcd,serial=NV8,/var/lib/etcd,ext4 beowulf.disk=scratch,byPath=pci-0000:00:04.0,/scratch,ext4 beowulf.disks_url=http://b/disks/T"
        );
        assert_eq!(
            kernel_args(&plan[..1], Some(Cleaning::Wipe), "http://b/disks/T"),
            "beowulf.disk=etcd,serial=NV8,/var/lib/etcd,ext4 beowulf.clean=wipe beowulf.disks_url=http://b/disks/T"
        );
        assert_eq!(
            kernel_args(&[], Some(Cleaning::Wipe), "http://b/disks/T"),
            ""
        );
    }

    #[test]
    fn properties_pick_the_smallest_free_matching_disk_of_the_inspected_hardware() {
        let hw = hardware();
        let nvme = DiskSelector {
            kind: Some(DiskKind::Nvme),
            ..DiskSelector::default()
        };
        let plan = resolve(
            &[
                disk("a", "/a", nvme.clone()),
                disk("b", "/b", nvme.clone()),
                disk("c", "/c", serial("BIG")),
            ],
            Some(&hw),
        )
        .unwrap();
        // The 4 GiB NVMe has no serial: it is named by its path.
        assert_eq!(plan[0].id, DiskId::ByPath("pci-0000:00:06.0-nvme-1".into()));
        assert_eq!(plan[1].id, DiskId::Serial("NV8".into()));
        assert_eq!(plan[2].id, DiskId::Serial("BIG".into()));
        // A third NVMe disk does not exist; the error lists what does.
        let err = resolve(
            &[
                disk("a", "/a", nvme.clone()),
                disk("b", "/b", nvme.clone()),
                disk("x", "/x", nvme),
            ],
            Some(&hw),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("local disk \"x\": no disk on the host matches kind nvme"),
            "{msg}"
        );
        assert!(
            msg.contains("nvme0n1 nvme 8589934592 B serial=NV8"),
            "{msg}"
        );
        // By size: the 64 GiB disk is the only one of at least 10 GiB.
        let big = DiskSelector {
            min_size_bytes: Some(10 << 30),
            ..DiskSelector::default()
        };
        let plan = resolve(&[disk("s", "/scratch", big.clone())], Some(&hw)).unwrap();
        assert_eq!(plan[0].id, DiskId::Serial("BIG".into()));
        // Properties need an inspection; an identifier unknown to the inspection is refused.
        assert_eq!(
            resolve(&[disk("s", "/scratch", big)], None).unwrap_err(),
            StorageError::NotInspected("s".into())
        );
        let err = resolve(&[disk("s", "/scratch", serial("NOPE"))], Some(&hw)).unwrap_err();
        assert!(err.to_string().contains("matches serial=NOPE"), "{err}");
    }

    #[test]
    fn bad_declarations_are_refused_saying_why() {
        let cases: Vec<(LocalDisk, &str)> = vec![
            (disk("Etcd", "/e", serial("S")), "lower-case"),
            (disk("much-too-long-name", "/e", serial("S")), "1 to 12"),
            (disk("e", "var/lib", serial("S")), "absolute path"),
            (disk("e", "/var/../etc", serial("S")), "no '..'"),
            (disk("e", "/scratch/", serial("S")), "trailing"),
            (disk("e", "/", serial("S")), "live system's own"),
            (disk("e", "/proc/x", serial("S")), "live system's own"),
            (disk("e", "/data", serial("has space")), "use wwn or byPath"),
            (disk("e", "/data", serial("a,b")), "letters, digits"),
            (
                disk("e", "/data", DiskSelector::default()),
                "say which disk",
            ),
            (
                disk(
                    "e",
                    "/data",
                    DiskSelector {
                        serial: Some("S".into()),
                        wwn: Some("W".into()),
                        ..DiskSelector::default()
                    },
                ),
                "not several",
            ),
            (
                disk(
                    "e",
                    "/data",
                    DiskSelector {
                        serial: Some("S".into()),
                        kind: Some(DiskKind::Ssd),
                        ..DiskSelector::default()
                    },
                ),
                "takes no kind",
            ),
        ];
        for (d, want) in cases {
            let err = check(std::slice::from_ref(&d)).unwrap_err().to_string();
            assert!(err.contains(want), "{d:?}: {err}");
        }
        let twice = check(&[disk("a", "/a", serial("S")), disk("b", "/b", serial("S"))]);
        assert!(twice.unwrap_err().to_string().contains("another's too"));
        let same_path = check(&[disk("a", "/a", serial("S")), disk("b", "/a", serial("T"))]);
        assert!(
            same_path
                .unwrap_err()
                .to_string()
                .contains("another disk's too")
        );
        let many: Vec<LocalDisk> = (0..9)
            .map(|i| {
                disk(
                    &format!("d{i}"),
                    &format!("/d{i}"),
                    serial(&format!("S{i}")),
                )
            })
            .collect();
        assert_eq!(check(&many).unwrap_err(), StorageError::TooMany(9));
    }

    fn plan() -> Vec<DiskPlan> {
        resolve(
            &[
                disk("etcd", "/var/lib/etcd", serial("A")),
                disk("scratch", "/scratch", serial("B")),
            ],
            None,
        )
        .unwrap()
    }

    #[test]
    fn a_report_is_read_against_the_plan() {
        let p = plan();
        let r = DiskReport::parse(
            b"etcd formatted vdb\nscratch foreign vdc TYPE=xfs LABEL=data\x07\n\n",
            &p,
        )
        .unwrap();
        assert_eq!(r.0[0].outcome, DiskOutcome::Formatted);
        assert_eq!(r.0[1].device.as_deref(), Some("vdc"));
        assert_eq!(
            r.0[1].detail, "TYPE=xfs LABEL=data",
            "control bytes dropped"
        );
        let (ok, reason, msg) = r.condition(&p);
        assert!(!ok);
        assert_eq!(reason, "ForeignFilesystem");
        assert!(
            msg.starts_with("scratch (serial=B) foreign: TYPE=xfs LABEL=data; a disk holding"),
            "{msg}"
        );

        let good = DiskReport::parse(b"etcd mounted vdb\nscratch formatted vdc\n", &p).unwrap();
        assert!(good.condition(&p).0);
        let half = DiskReport::parse(b"etcd mounted vdb\n", &p).unwrap();
        assert_eq!(half.condition(&p).1, "NotReported");

        for (body, want) in [
            (&b"etcd"[..], "expected"),
            (b"etcd exploded vdb", "unknown outcome"),
            (b"other mounted vdb", "not in this boot's plan"),
            (b"etcd mounted vdb\netcd mounted vdb", "twice"),
            (b"\xff\xfe", "not UTF-8"),
        ] {
            let err = DiskReport::parse(body, &p).unwrap_err().to_string();
            assert!(err.contains(want), "{body:?}: {err}");
        }
    }
}
