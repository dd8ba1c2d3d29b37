//! What a booted node posts to the boot plane with its token: the completion callback's form (cloud-init
//! `phone_home`: `instance_id`, `hostname`, `fqdn`, `pub_key_*`) and the local-disk report (`/disks/<token>`,
//! a line per planned disk). The same bytes are read as both.
//! Invariants beyond "no panic": a form that parses re-encodes to one that parses to the same fields, and
//! the callback report made of it survives the trip through JSON; a disk report that is accepted names only
//! planned disks, each once, with bounded printable details and plain device names, survives the trip
//! through JSON, prints back as lines that parse to the same report, and has a condition.
#![no_main]

use beowulf::boot::http::serde_urlencoded_pairs;
use beowulf::boot::plane::CallbackReport;
use beowulf::storage::{DiskId, DiskPlan, DiskReport, Filesystem};
use libfuzzer_sys::fuzz_target;

fn plan() -> Vec<DiskPlan> {
    [
        ("etcd", "/var/lib/etcd"),
        ("scratch", "/scratch"),
        ("d-1", "/d1"),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (name, mount))| DiskPlan {
        name: name.into(),
        id: DiskId::Serial(format!("S{i}")),
        mount_path: mount.into(),
        filesystem: Filesystem::Ext4,
    })
    .collect()
}

/// The report as the node's agent writes it.
fn print(r: &DiskReport) -> String {
    r.0.iter()
        .map(|d| {
            let dev = d.device.as_deref().unwrap_or("-");
            if d.detail.is_empty() {
                format!("{} {} {dev}\n", d.name, d.outcome.as_str())
            } else {
                format!("{} {} {dev} {}\n", d.name, d.outcome.as_str(), d.detail)
            }
        })
        .collect()
}

/// Trailing blanks of a detail are not kept when the line is read again (lines are trimmed).
fn trimmed(mut r: DiskReport) -> DiskReport {
    for d in &mut r.0 {
        d.detail.truncate(d.detail.trim_end().len());
    }
    r
}

fuzz_target!(|data: &[u8]| {
    if let Ok(fields) = serde_urlencoded_pairs(data) {
        let encoded = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&fields)
            .finish();
        // (A URI, the form's vehicle here, holds at most 64 KiB.)
        assert!(
            encoded.len() > 60_000
                || serde_urlencoded_pairs(encoded.as_bytes()).as_ref() == Ok(&fields),
            "{encoded:?} reads back otherwise"
        );
        // As the handler makes the report of the fields.
        let mut fields = fields;
        let mut keys: Vec<(String, String)> = Vec::new();
        let mut report = CallbackReport {
            instance_id: fields.remove("instance_id"),
            hostname: fields.remove("hostname"),
            fqdn: fields.remove("fqdn"),
            pub_keys: Vec::new(),
            at: "2026-01-01T00:00:00Z".into(),
        };
        keys.extend(
            fields
                .into_iter()
                .filter(|(k, _)| k.starts_with("pub_key_")),
        );
        keys.sort();
        report.pub_keys = keys;
        let json = serde_json::to_string(&report).expect("a report serializes");
        let back: CallbackReport = serde_json::from_str(&json).expect("and reads back");
        assert_eq!(back, report);
    }

    let plan = plan();
    if let Ok(report) = DiskReport::parse(data, &plan) {
        for (i, d) in report.0.iter().enumerate() {
            assert!(
                plan.iter().any(|p| p.name == d.name),
                "{:?} is not planned",
                d.name
            );
            assert!(
                !report.0[..i].iter().any(|e| e.name == d.name),
                "{:?} twice",
                d.name
            );
            assert!(d.detail.len() <= 200, "detail of {} bytes", d.detail.len());
            assert!(
                d.detail.bytes().all(|b| b.is_ascii_graphic() || b == b' '),
                "{:?}",
                d.detail
            );
            if let Some(dev) = &d.device {
                assert!(
                    !dev.is_empty()
                        && dev.len() <= 128
                        && dev
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._:+-".contains(&b)),
                    "device {dev:?}"
                );
            }
        }
        let json = serde_json::to_string(&report).expect("a report serializes");
        let back: DiskReport = serde_json::from_str(&json).expect("and reads back");
        assert_eq!(back, report);
        let printed = print(&report);
        let again = DiskReport::parse(printed.as_bytes(), &plan)
            .unwrap_or_else(|e| panic!("{printed:?} does not read back: {e}"));
        assert_eq!(trimmed(again), trimmed(report.clone()), "{printed:?}");
        let (ok, reason, _) = report.condition(&plan);
        assert_eq!(ok, reason == "Ready");
        assert!(report.unreported(&plan).len() + report.0.len() == plan.len());
    }
});
