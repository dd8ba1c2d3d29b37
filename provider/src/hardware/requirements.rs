//! Hardware requirements of a machine (`BeowulfMachine.spec.hardwareRequirements`): which inspected hosts may
//! be claimed, and, when none may, which requirement excluded how many hosts.
//!
//! ```yaml
//! hardwareRequirements:
//!   architecture: x86_64        # exact match with the inspected CPU architecture
//!   cpuThreads: 64              # at least this many logical CPUs
//!   memory: 256Gi               # at least this much installed memory (a Kubernetes quantity)
//!   disks:                      # each entry: at least `count` (default 1) distinct disks matching it
//!     - {type: nvme, minSize: 1T, count: 1}
//!   gpus: {count: 1, vendor: nvidia}   # vendor optional: nvidia | amd | intel | a PCI vendor ID (0x10de)
//!   nicSpeedMbps: 25000         # at least one NIC linked at this speed or faster
//! ```
//!
//! Every field is optional. An empty requirements object matches every host, inspected or not; a non-empty
//! one never matches a host without `status.hardware`. Quantities are Kubernetes quantities as bytes (`256Gi`,
//! `1T`, `1.5Ti`, `1e12`, `1048576`), parsed here ([`parse_quantity`]) so this module needs neither kube nor
//! k8s-openapi. The CRD schema bounds the integers and types the quantities as int-or-string; the rest
//! (quantity syntax, counts of 0, GPU vendor names) is [`HardwareRequirements::validate`]'s.
//!
//! *Disk entries are matched greedily.* A disk counted for one entry does not count for another. Entries are
//! served most specific first — entries with a `type` before those without, then the larger `minSize` first,
//! then in the order written — and each takes the smallest free disks that match it, leaving the larger ones
//! to the entries after it. For entries of distinct types, or of one type with different sizes, that is
//! exactly what an exhaustive matching finds; in contrived mixes of typed and untyped entries an exhaustive
//! matching could accept a host the greedy assignment refuses (never the other way round). The entry reported
//! unmet is the first one, in that serving order, that found too few disks.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::{DiskKind, GPU_VENDORS, Hardware, PciDevice};

/// What a machine needs from its host's inspected hardware (`status.hardware`). Every field is optional; an
/// empty object matches every host, a non-empty one only inspected hosts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HardwareRequirements {
    /// The CPU architecture the inspection reported (`uname -m`: `x86_64`, `aarch64`), matched exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// At least this many logical CPUs (hardware threads), all sockets together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_threads: Option<u32>,
    /// At least this much installed memory: a quantity in bytes (`256Gi`, `512G`, `1073741824`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// Disks: each entry needs `count` disks of its own (a disk counted for one entry does not count for
    /// another).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskRequirement>,
    /// GPUs (display controllers of NVIDIA, AMD or Intel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<GpuRequirement>,
    /// At least one NIC linked at this speed (Mbit/s) or faster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic_speed_mbps: Option<u32>,
}

/// One entry of `hardwareRequirements.disks`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiskRequirement {
    /// `nvme`, `ssd` (non-rotational, not NVMe) or `hdd`; any kind when absent.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<DiskKind>,
    /// The smallest acceptable disk: a quantity in bytes (`1T`, `960G`, `800Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<Quantity>,
    /// How many such disks (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub count: Option<u32>,
}

/// `hardwareRequirements.gpus`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuRequirement {
    /// How many GPUs at least (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub count: Option<u32>,
    /// `nvidia`, `amd`, `intel`, or a PCI vendor ID (`0x10de`); any GPU vendor when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
}

impl DiskRequirement {
    pub fn count(&self) -> u32 {
        self.count.unwrap_or(1)
    }
}

impl GpuRequirement {
    pub fn count(&self) -> u32 {
        self.count.unwrap_or(1)
    }

    fn matches(&self, gpu: &PciDevice) -> bool {
        let Some(want) = &self.vendor else {
            return true;
        };
        let want = want.to_ascii_lowercase();
        if want.starts_with("0x") {
            gpu.vendor.eq_ignore_ascii_case(&want)
        } else {
            gpu.vendor_name().eq_ignore_ascii_case(&want)
        }
    }
}

/// A size as written in the spec: a Kubernetes quantity (`256Gi`) or a plain integer of bytes. Kept as
/// written, so conditions quote the user's own spelling; [`Quantity::bytes`] parses it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Quantity(pub String);

impl Quantity {
    pub fn bytes(&self) -> Result<u64, String> {
        parse_quantity(&self.0)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Quantity {
    fn from(s: &str) -> Self {
        Quantity(s.to_string())
    }
}

/// Any string or number is accepted here and judged by [`HardwareRequirements::validate`]: the API server
/// lets every int-or-string through, and a value this type refused to read would make the whole
/// BeowulfMachine unreadable to the controller (and a list of them fail), instead of one clear condition.
impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity (a string such as \"256Gi\", or an integer)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// An integer or a string, as Kubernetes writes quantities (`x-kubernetes-int-or-string`): YAML's `memory:
/// 1073741824` is an integer, `memory: 1Gi` a string, and both are meant.
impl JsonSchema for Quantity {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "x-kubernetes-int-or-string": true })
    }
}

const SUFFIXES: &str = "Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E, an exponent (e12) or none";

/// Parses a Kubernetes quantity as a whole number of bytes: digits with an optional fraction, then a binary
/// (`Ki` … `Ei`), decimal (`k` … `E`) or exponent (`e3`, `E3`) suffix, or none. Refuses negative values,
/// values that are not a whole number of bytes (`0.5`, `1.0000001Ki`), other suffixes (`m`, `GB`, `gi`) and
/// anything above `u64::MAX`.
pub fn parse_quantity(s: &str) -> Result<u64, String> {
    let unsigned = match s.as_bytes().first() {
        None => return Err("it is empty".into()),
        Some(b'-') => return Err("it is negative".into()),
        Some(b'+') => &s[1..],
        Some(_) => s,
    };
    let number_len = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_len);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return Err("it does not start with a number".into());
    }
    let frac = frac.trim_end_matches('0');
    let too_large = || format!("it is larger than {} bytes", u64::MAX);
    // value = mantissa × multiplier / divisor, in u128 so that every u64 result is computed exactly.
    let mut mantissa: u128 = 0;
    for d in int.bytes().chain(frac.bytes()) {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(u128::from(d - b'0')))
            .ok_or_else(too_large)?;
    }
    let mut divisor_exp = frac.len() as u32;
    let multiplier: u128 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 10u128.pow(3),
        "M" => 10u128.pow(6),
        "G" => 10u128.pow(9),
        "T" => 10u128.pow(12),
        "P" => 10u128.pow(15),
        "E" => 10u128.pow(18),
        _ => {
            let exp = suffix
                .strip_prefix(['e', 'E'])
                .and_then(|e| e.parse::<i32>().ok())
                .ok_or_else(|| format!("unknown suffix {suffix:?} (use {SUFFIXES})"))?;
            if exp < 0 {
                divisor_exp += exp.unsigned_abs();
                1
            } else {
                10u128
                    .checked_pow(exp.unsigned_abs())
                    .ok_or_else(too_large)?
            }
        }
    };
    let value = mantissa.checked_mul(multiplier).ok_or_else(too_large)?;
    let whole = || "it is not a whole number of bytes".to_string();
    let value = match 10u128.checked_pow(divisor_exp) {
        Some(divisor) if value % divisor == 0 => value / divisor,
        Some(_) => return Err(whole()),
        // A divisor beyond u128 leaves a whole number only for zero.
        None if value == 0 => 0,
        None => return Err(whole()),
    };
    u64::try_from(value).map_err(|_| too_large())
}

/// The first requirement a host does not meet. Displays as a predicate about one host ("has less than 256Gi
/// of memory"); [`Unmet::describe`] gives the plural form for [`explain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmet {
    /// The host has no `status.hardware` (never inspected) and the requirements are not empty.
    NotInspected,
    Architecture(String),
    CpuThreads(u32),
    Memory(Quantity),
    /// The entry at this index of `disks` (as written) found too few free matching disks.
    Disks(usize, DiskRequirement),
    Gpus(GpuRequirement),
    NicSpeed(u32),
}

impl Unmet {
    /// "has …" for one host, "have …" for several.
    pub fn describe(&self, plural: bool) -> String {
        let has = if plural { "have" } else { "has" };
        let few = |n: u32, one: &str, many: &str| {
            if n <= 1 {
                format!("no {one}")
            } else {
                format!("fewer than {n} {many}")
            }
        };
        let what = match self {
            Unmet::NotInspected => "not been inspected".to_string(),
            Unmet::Architecture(a) => format!("no {a} CPU"),
            Unmet::CpuThreads(n) => format!("fewer than {n} CPU threads"),
            Unmet::Memory(q) => format!("less than {q} of memory"),
            Unmet::Disks(_, d) => {
                let kind = d.kind.map_or(String::new(), |k| format!("{} ", k.as_str()));
                let size = d
                    .min_size
                    .as_ref()
                    .map_or(String::new(), |q| format!(" of at least {q}"));
                few(
                    d.count(),
                    &format!("{kind}disk{size}"),
                    &format!("{kind}disks{size}"),
                )
            }
            Unmet::Gpus(g) => {
                let vendor = g.vendor.as_ref().map_or(String::new(), |v| format!("{v} "));
                few(g.count(), &format!("{vendor}GPU"), &format!("{vendor}GPUs"))
            }
            Unmet::NicSpeed(m) => format!("no NIC of {m} Mbit/s or faster"),
        };
        format!("{has} {what}")
    }

    /// The order of the requirements as written; a host that was not inspected comes last.
    fn rank(&self) -> (u8, usize) {
        match self {
            Unmet::Architecture(_) => (0, 0),
            Unmet::CpuThreads(_) => (1, 0),
            Unmet::Memory(_) => (2, 0),
            Unmet::Disks(i, _) => (3, *i),
            Unmet::Gpus(_) => (4, 0),
            Unmet::NicSpeed(_) => (5, 0),
            Unmet::NotInspected => (6, 0),
        }
    }
}

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(false))
    }
}

impl HardwareRequirements {
    /// Requires nothing: matches every host, inspected or not.
    pub fn is_empty(&self) -> bool {
        self.architecture.is_none()
            && self.cpu_threads.is_none()
            && self.memory.is_none()
            && self.disks.is_empty()
            && self.gpus.is_none()
            && self.nic_speed_mbps.is_none()
    }

    /// Checks what the CRD schema cannot (quantity syntax, GPU vendor names, a blank architecture) and again
    /// what it does (counts of at least 1: objects stored under an older CRD, test APIs without schemas). The
    /// message names every bad field (`hardwareRequirements.disks[0].minSize: "1TB" is not a quantity: …`).
    pub fn validate(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        let quantity = |field: String, q: &Quantity, errors: &mut Vec<String>| {
            if let Err(why) = q.bytes() {
                errors.push(format!("{field}: {:?} is not a quantity: {why}", q.0));
            }
        };
        const P: &str = "hardwareRequirements";
        if self
            .architecture
            .as_ref()
            .is_some_and(|a| a.trim().is_empty())
        {
            errors.push(format!("{P}.architecture is empty"));
        }
        if let Some(m) = &self.memory {
            quantity(format!("{P}.memory"), m, &mut errors);
        }
        for (i, d) in self.disks.iter().enumerate() {
            if let Some(s) = &d.min_size {
                quantity(format!("{P}.disks[{i}].minSize"), s, &mut errors);
            }
            if d.count == Some(0) {
                errors.push(format!("{P}.disks[{i}].count is 0 (at least 1)"));
            }
        }
        if let Some(g) = &self.gpus {
            if g.count == Some(0) {
                errors.push(format!("{P}.gpus.count is 0 (at least 1)"));
            }
            if let Some(v) = &g.vendor
                && !known_vendor(v)
            {
                let names: Vec<&str> = GPU_VENDORS.iter().map(|(_, n)| *n).collect();
                errors.push(format!(
                    "{P}.gpus.vendor: {v:?} is neither {} nor a PCI vendor ID such as 0x10de",
                    names.join(", ")
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Whether a host with this inspected hardware (`None`: never inspected) meets the requirements; if not,
    /// the first requirement (in the order of the fields) it misses. Meant for validated requirements: a
    /// quantity that does not parse is never met.
    pub fn check(&self, hw: Option<&Hardware>) -> Result<(), Unmet> {
        if self.is_empty() {
            return Ok(());
        }
        let Some(hw) = hw else {
            return Err(Unmet::NotInspected);
        };
        if let Some(a) = &self.architecture
            && hw.cpu.architecture != *a
        {
            return Err(Unmet::Architecture(a.clone()));
        }
        if let Some(n) = self.cpu_threads
            && hw.cpu.threads < n
        {
            return Err(Unmet::CpuThreads(n));
        }
        if let Some(q) = &self.memory
            && !q.bytes().is_ok_and(|b| hw.memory.bytes >= b)
        {
            return Err(Unmet::Memory(q.clone()));
        }
        self.check_disks(hw)?;
        if let Some(g) = &self.gpus {
            let found = hw.gpus().filter(|p| g.matches(p)).count();
            if found < g.count() as usize {
                return Err(Unmet::Gpus(g.clone()));
            }
        }
        if let Some(m) = self.nic_speed_mbps
            && !hw.nics.iter().any(|n| n.speed_mbps.is_some_and(|s| s >= m))
        {
            return Err(Unmet::NicSpeed(m));
        }
        Ok(())
    }

    /// The greedy disk assignment described in the module documentation.
    fn check_disks(&self, hw: &Hardware) -> Result<(), Unmet> {
        let unmet = |i: usize| Unmet::Disks(i, self.disks[i].clone());
        let mut entries = Vec::with_capacity(self.disks.len());
        for (i, d) in self.disks.iter().enumerate() {
            let min = match &d.min_size {
                None => 0,
                Some(q) => q.bytes().map_err(|_| unmet(i))?,
            };
            entries.push((i, d.kind, min, d.count() as usize));
        }
        entries.sort_by_key(|&(i, kind, min, _)| (kind.is_none(), std::cmp::Reverse(min), i));
        // Free disks, smallest first, so each entry takes the smallest that fit.
        let mut free: Vec<(u64, DiskKind)> =
            hw.disks.iter().map(|d| (d.size_bytes, d.kind)).collect();
        free.sort_by_key(|&(size, _)| size);
        for (i, kind, min, count) in entries {
            let mut taken = 0;
            free.retain(|&(size, k)| {
                let fits = taken < count && size >= min && kind.is_none_or(|want| want == k);
                taken += usize::from(fits);
                !fits
            });
            if taken < count {
                return Err(unmet(i));
            }
        }
        Ok(())
    }
}

fn known_vendor(v: &str) -> bool {
    let v = v.to_ascii_lowercase();
    match v.strip_prefix("0x") {
        Some(id) => id.len() == 4 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        None => GPU_VENDORS.iter().any(|(_, name)| *name == v),
    }
}

/// For hosts that passed every other filter (free, online, available, selector, failure domain): why they do
/// not meet `reqs`, each host counted under its first unmet requirement, in the order of the requirements
/// (never-inspected hosts last). "no host meets the hardware requirements: 2 hosts have less than 256Gi of
/// memory, 1 host has not been inspected".
pub fn explain<'a>(
    reqs: &HardwareRequirements,
    hosts: impl IntoIterator<Item = Option<&'a Hardware>>,
) -> String {
    let mut met = 0usize;
    let mut groups: Vec<(Unmet, usize)> = Vec::new();
    for hw in hosts {
        match reqs.check(hw) {
            Ok(()) => met += 1,
            Err(u) => match groups.iter_mut().find(|(g, _)| *g == u) {
                Some((_, n)) => *n += 1,
                None => groups.push((u, 1)),
            },
        }
    }
    groups.sort_by_key(|(u, _)| u.rank());
    let reasons: Vec<String> = groups
        .iter()
        .map(|(u, n)| {
            let s = if *n == 1 { "" } else { "s" };
            format!("{n} host{s} {}", u.describe(*n != 1))
        })
        .collect();
    let reasons = reasons.join(", ");
    match (met, reasons.is_empty()) {
        (0, true) => "no host to check the hardware requirements against".to_string(),
        (0, false) => format!("no host meets the hardware requirements: {reasons}"),
        (1, true) => "1 host meets the hardware requirements".to_string(),
        (n, true) => format!("{n} hosts meet the hardware requirements"),
        (1, false) => format!("1 host meets the hardware requirements; {reasons}"),
        (n, false) => format!("{n} hosts meet the hardware requirements; {reasons}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardware::tests::sample_report;

    fn hw(mutate: impl FnOnce(&mut serde_json::Value)) -> Hardware {
        let mut v = sample_report();
        mutate(&mut v);
        Hardware::from_report(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    fn reqs(v: serde_json::Value) -> HardwareRequirements {
        serde_json::from_value(v).unwrap()
    }

    fn disk(name: &str, size: u64, rotational: bool) -> serde_json::Value {
        serde_json::json!({"name": name, "sizeBytes": size, "rotational": rotational})
    }

    const T: u64 = 1_000_000_000_000;
    const GI: u64 = 1 << 30;

    #[test]
    fn quantities_parse_like_kubernetes_as_whole_bytes() {
        for (s, want) in [
            ("0", 0),
            ("1048576", 1 << 20),
            ("+5", 5),
            ("256Gi", 256 * GI),
            ("1Ki", 1024),
            ("1Ei", 1 << 60),
            ("15Ei", 15 << 60),
            ("1k", 1000),
            ("1T", T),
            ("1E", 10u64.pow(18)),
            ("1.5Gi", 3 << 29),
            ("1.50Gi", 3 << 29),
            ("0.5Ki", 512),
            (".5k", 500),
            ("5.", 5),
            ("1e12", T),
            ("1E3", 1000),
            ("120e-1", 12),
            ("18446744073709551615", u64::MAX),
            ("0e-500", 0),
        ] {
            assert_eq!(parse_quantity(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn bad_quantities_are_refused_with_a_reason() {
        for (s, why) in [
            ("", "empty"),
            ("-1Gi", "negative"),
            ("-0", "negative"),
            ("0.5", "whole number"),
            ("1.1Ki", "whole number"),
            ("12e-1", "whole number"),
            ("1e-500", "whole number"),
            ("100m", "unknown suffix \"m\""),
            ("1GB", "unknown suffix \"GB\""),
            ("1gi", "unknown suffix \"gi\""),
            ("1 Gi", "unknown suffix \" Gi\""),
            ("Gi", "does not start with a number"),
            (".", "does not start with a number"),
            ("1.2.3", "does not start with a number"),
            ("16Ei", "larger than"),
            ("18446744073709551616", "larger than"),
            ("1e20", "larger than"),
            ("1e40", "larger than"),
            ("99999999999999999999999999999999999999999", "larger than"),
        ] {
            let e = parse_quantity(s).expect_err(s);
            assert!(e.contains(why), "{s:?}: {e}");
        }
    }

    #[test]
    fn yaml_shape_reads_camel_case_with_int_or_string_quantities() {
        let r: HardwareRequirements = serde_saphyr::from_str(
            "architecture: x86_64\ncpuThreads: 64\nmemory: 256Gi\n\
             disks:\n  - {type: nvme, minSize: 1T, count: 2}\n  - {minSize: 1099511627776}\n\
             gpus: {count: 1, vendor: nvidia}\nnicSpeedMbps: 25000\n",
        )
        .unwrap();
        assert_eq!(r.architecture.as_deref(), Some("x86_64"));
        assert_eq!(r.cpu_threads, Some(64));
        assert_eq!(r.memory, Some("256Gi".into()));
        assert_eq!(r.disks[0].kind, Some(DiskKind::Nvme));
        assert_eq!(r.disks[0].count(), 2);
        assert_eq!(r.disks[1].min_size, Some("1099511627776".into()));
        assert_eq!(r.disks[1].count(), 1);
        assert_eq!(r.gpus.as_ref().unwrap().vendor.as_deref(), Some("nvidia"));
        assert_eq!(r.nic_speed_mbps, Some(25000));
        r.validate().unwrap();
        // Numbers are never refused while reading (that would make the whole object unreadable).
        let r = reqs(serde_json::json!({"memory": -1, "disks": [{"minSize": 0.5}]}));
        assert_eq!(r.memory, Some("-1".into()));
        assert_eq!(
            r.validate().unwrap_err(),
            "hardwareRequirements.memory: \"-1\" is not a quantity: it is negative; \
             hardwareRequirements.disks[0].minSize: \"0.5\" is not a quantity: it is not a whole number of bytes"
        );
        // And the spec form round-trips.
        let back: HardwareRequirements =
            serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn validate_names_the_field() {
        let r = reqs(serde_json::json!({
            "architecture": " ",
            "memory": "256GB",
            "disks": [{"type": "ssd", "count": 0}],
            "gpus": {"count": 0, "vendor": "nvidea"},
        }));
        assert_eq!(
            r.validate().unwrap_err(),
            "hardwareRequirements.architecture is empty; \
             hardwareRequirements.memory: \"256GB\" is not a quantity: unknown suffix \"GB\" (use Ki, Mi, Gi, Ti, \
             Pi, Ei, k, M, G, T, P, E, an exponent (e12) or none); \
             hardwareRequirements.disks[0].count is 0 (at least 1); \
             hardwareRequirements.gpus.count is 0 (at least 1); \
             hardwareRequirements.gpus.vendor: \"nvidea\" is neither nvidia, amd, intel nor a PCI vendor ID such \
             as 0x10de"
        );
        for v in ["NVIDIA", "amd", "intel", "0x10de", "0x10DE", "0x1a03"] {
            reqs(serde_json::json!({"gpus": {"vendor": v}}))
                .validate()
                .unwrap_or_else(|e| panic!("{v}: {e}"));
        }
        for v in ["0x10d", "0xzzzz", "ati", ""] {
            assert!(
                reqs(serde_json::json!({"gpus": {"vendor": v}}))
                    .validate()
                    .is_err(),
                "{v}"
            );
        }
        HardwareRequirements::default().validate().unwrap();
    }

    #[test]
    fn empty_requirements_match_every_host_and_others_need_an_inspection() {
        let sample = hw(|_| {});
        for r in [
            HardwareRequirements::default(),
            reqs(serde_json::json!({})),
            reqs(serde_json::json!({"disks": []})),
        ] {
            assert!(r.is_empty());
            assert_eq!(r.check(None), Ok(()));
            assert_eq!(r.check(Some(&sample)), Ok(()));
        }
        let r = reqs(serde_json::json!({"cpuThreads": 1}));
        assert_eq!(r.check(Some(&sample)), Ok(()));
        assert_eq!(r.check(None), Err(Unmet::NotInspected));
        assert_eq!(Unmet::NotInspected.to_string(), "has not been inspected");
    }

    #[test]
    fn each_requirement_is_checked_and_reads_well() {
        // The sample: x86_64, 4 threads, 768 MiB, an HDD of 64 MiB and an NVMe of 128 MiB, one NVIDIA GPU,
        // eth0 without a speed.
        let sample = hw(|v| v["nics"][0]["speedMbps"] = 10_000.into());
        let cases = [
            (serde_json::json!({"architecture": "x86_64"}), None),
            (
                serde_json::json!({"architecture": "aarch64"}),
                Some("has no aarch64 CPU"),
            ),
            (serde_json::json!({"cpuThreads": 4}), None),
            (
                serde_json::json!({"cpuThreads": 5}),
                Some("has fewer than 5 CPU threads"),
            ),
            (serde_json::json!({"memory": "768Mi"}), None),
            (
                serde_json::json!({"memory": "769Mi"}),
                Some("has less than 769Mi of memory"),
            ),
            (
                serde_json::json!({"memory": "1Gi"}),
                Some("has less than 1Gi of memory"),
            ),
            (
                serde_json::json!({"disks": [{"type": "nvme", "minSize": "128Mi"}]}),
                None,
            ),
            (
                serde_json::json!({"disks": [{"type": "nvme", "minSize": "129Mi"}]}),
                Some("has no nvme disk of at least 129Mi"),
            ),
            (
                serde_json::json!({"disks": [{"type": "ssd"}]}),
                Some("has no ssd disk"),
            ),
            (serde_json::json!({"disks": [{"count": 2}]}), None),
            (
                serde_json::json!({"disks": [{"count": 3}]}),
                Some("has fewer than 3 disks"),
            ),
            (serde_json::json!({"gpus": {}}), None),
            (serde_json::json!({"gpus": {"vendor": "nvidia"}}), None),
            (serde_json::json!({"gpus": {"vendor": "0x10DE"}}), None),
            (
                serde_json::json!({"gpus": {"vendor": "amd"}}),
                Some("has no amd GPU"),
            ),
            (
                serde_json::json!({"gpus": {"count": 2}}),
                Some("has fewer than 2 GPUs"),
            ),
            (serde_json::json!({"nicSpeedMbps": 10000}), None),
            (
                serde_json::json!({"nicSpeedMbps": 25000}),
                Some("has no NIC of 25000 Mbit/s or faster"),
            ),
        ];
        for (r, want) in cases {
            let got = reqs(r.clone())
                .check(Some(&sample))
                .map_err(|u| u.to_string());
            assert_eq!(got.err().as_deref(), want, "{r}");
        }
        // A NIC without a link has no speed: it never meets a speed requirement.
        assert!(
            reqs(serde_json::json!({"nicSpeedMbps": 1}))
                .check(Some(&hw(|_| {})))
                .is_err()
        );
        // The first unmet requirement, in the order of the fields, is the one reported.
        let r = reqs(serde_json::json!({"nicSpeedMbps": 100000, "memory": "1Ti", "cpuThreads": 1}));
        assert_eq!(r.check(Some(&sample)), Err(Unmet::Memory("1Ti".into())));
        assert_eq!(
            Unmet::Memory("1Ti".into()).describe(true),
            "have less than 1Ti of memory"
        );
    }

    #[test]
    fn disk_entries_need_distinct_disks_most_specific_first() {
        // Two NVMe disks (1T and 4T) and one 8T HDD.
        let host = hw(|v| {
            v["disks"] = serde_json::json!([
                disk("nvme1n1", 4 * T, false),
                disk("sda", 8 * T, true),
                disk("nvme0n1", T, false),
            ])
        });
        let ok = |v: serde_json::Value| reqs(v.clone()).check(Some(&host)).map_err(|u| (u, v));
        // Served in the order written, the untyped 2T entry would take the 4T NVMe (the smallest disk of 2T or
        // more) and leave the NVMe entry nothing; typed entries go first, and each takes the smallest that fits.
        ok(serde_json::json!({"disks": [{"minSize": "2T"}, {"type": "nvme", "minSize": "3T"}]}))
            .unwrap();
        ok(serde_json::json!({"disks": [{"minSize": "2T", "count": 2}, {"type": "nvme", "count": 2}]})
        )
        .unwrap_err();
        ok(serde_json::json!({"disks": [{"minSize": "2T"}, {"type": "nvme", "count": 2}]}))
            .unwrap();
        ok(serde_json::json!({"disks": [{"type": "nvme"}, {"type": "nvme", "minSize": "2T"}]}))
            .unwrap();
        ok(serde_json::json!({"disks": [{"count": 3}]})).unwrap();
        // A disk counted once does not count again.
        let (u, _) = ok(
            serde_json::json!({"disks": [{"type": "nvme"}, {"type": "nvme"}, {"type": "nvme"}]}),
        )
        .unwrap_err();
        assert_eq!(
            u,
            Unmet::Disks(
                2,
                DiskRequirement {
                    kind: Some(DiskKind::Nvme),
                    ..Default::default()
                }
            )
        );
        let (u, _) =
            ok(serde_json::json!({"disks": [{"type": "hdd"}, {"minSize": "5T"}]})).unwrap_err();
        assert_eq!(u.to_string(), "has no disk of at least 5T");
    }

    #[test]
    fn explain_counts_each_host_under_its_first_unmet_requirement() {
        let r = reqs(serde_json::json!({"memory": "256Gi", "gpus": {"vendor": "nvidia"}}));
        let small = hw(|_| {});
        let big_no_gpu = hw(|v| {
            v["memory"]["bytes"] = (512 * GI).into();
            v["pci"] = serde_json::json!([]);
        });
        let big = hw(|v| v["memory"]["bytes"] = (512 * GI).into());
        assert_eq!(
            explain(&r, [None, Some(&small), Some(&big_no_gpu), Some(&small)]),
            "no host meets the hardware requirements: 2 hosts have less than 256Gi of memory, \
             1 host has no nvidia GPU, 1 host has not been inspected"
        );
        assert_eq!(
            explain(&r, [Some(&big), Some(&small)]),
            "1 host meets the hardware requirements; 1 host has less than 256Gi of memory"
        );
        assert_eq!(
            explain(&r, std::iter::empty()),
            "no host to check the hardware requirements against"
        );
        assert_eq!(
            explain(&HardwareRequirements::default(), [None, None]),
            "2 hosts meet the hardware requirements"
        );
    }
}
