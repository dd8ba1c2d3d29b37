use super::*;

/// What the inspector posts for a small QEMU machine (shape of `images/inspector/init`'s output).
pub(crate) fn sample_report() -> serde_json::Value {
    serde_json::json!({
        "version": 1,
        "cpu": {"architecture": "x86_64", "model": " QEMU Virtual CPU version 2.5+ ", "sockets": 2, "cores": 4,
                "threads": 4, "flags": ["sse4_2", "aes"]},
        "memory": {"bytes": 805306368u64, "usableBytes": 760000000u64},
        "disks": [
            {"name": "vda", "sizeBytes": 67108864, "rotational": true, "model": null, "serial": "VDSERIAL1",
             "wwn": null, "byPath": "pci-0000:00:04.0"},
            {"name": "nvme0n1", "sizeBytes": 134217728, "rotational": false, "model": "QEMU NVMe Ctrl",
             "serial": "NVMESER2", "wwn": "nvme.1b36-4e564d4553455232", "byPath": null}
        ],
        "nics": [{"name": "eth0", "mac": "52:54:00:AA:00:01", "speedMbps": null, "carrier": true,
                  "driver": "virtio_net"}],
        "pci": [
            {"address": "0000:00:02.0", "class": "0x030000", "vendor": "0x1234", "device": "0x1111", "driver": null},
            {"address": "0000:00:05.0", "class": "0x010802", "vendor": "0x1b36", "device": "0x0010", "driver": "nvme"},
            {"address": "0000:00:06.0", "class": "0x030200", "vendor": "0x10DE", "device": "0x2330", "driver": null},
            {"address": "0000:00:07.0", "class": "0x020700", "vendor": "0x15b3", "device": "0x101b", "driver": null}
        ],
        "system": {"vendor": "AcmeHPC", "product": "Rack9000", "serial": "", "biosVersion": "1.16"},
        "lldp": []
    })
}

fn parse(v: &serde_json::Value) -> Result<Hardware, ReportError> {
    Hardware::from_report(&serde_json::to_vec(v).unwrap())
}

#[test]
fn a_report_is_read_and_interpreted() {
    let hw = parse(&sample_report()).unwrap();
    assert_eq!(
        hw.cpu.model.as_deref(),
        Some("QEMU Virtual CPU version 2.5+")
    );
    assert_eq!((hw.cpu.sockets, hw.cpu.cores, hw.cpu.threads), (2, 4, 4));
    assert_eq!(hw.memory.bytes, 768 << 20);
    let kinds: Vec<_> = hw.disks.iter().map(|d| d.kind).collect();
    assert_eq!(kinds, [DiskKind::Hdd, DiskKind::Nvme]);
    assert_eq!(hw.disks[1].wwn, None, "a made-up wwid is not a WWN");
    let mut naa = sample_report();
    naa["disks"][0]["wwn"] = "naa.5000c500a1b2c3d4".into();
    naa["disks"][1]["wwn"] = "".into();
    let hw2 = parse(&naa).unwrap();
    assert_eq!(hw2.disks[0].wwn.as_deref(), Some("naa.5000c500a1b2c3d4"));
    assert_eq!(hw2.disks[1].wwn, None, "empty strings become absent");
    assert_eq!(hw.nics[0].mac, "52:54:00:aa:00:01", "MACs are normalized");
    let kinds: Vec<_> = hw.pci.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        [
            PciKind::Display,
            PciKind::Storage,
            PciKind::Gpu,
            PciKind::Infiniband
        ],
        "an emulator's VGA is not a GPU; vendor IDs compare case-insensitively"
    );
    assert_eq!(hw.gpus().next().unwrap().vendor_name(), "nvidia");
    assert_eq!(hw.system.as_ref().unwrap().serial, None);
    assert_eq!(
        hw.summary(),
        "x86_64, 2 sockets/4 cores/4 threads, 768 MiB, 2 disks (1 nvme), 1 NIC, 1 GPU, 1 InfiniBand"
    );
    // The status form round-trips (the controllers write it, the claim reads it back).
    let back: Hardware = serde_json::from_value(serde_json::to_value(&hw).unwrap()).unwrap();
    assert_eq!(back, hw);
}

#[test]
fn bad_reports_are_refused_with_a_reason() {
    let big = vec![b' '; MAX_REPORT_BYTES + 1];
    assert!(matches!(
        Hardware::from_report(&big),
        Err(ReportError::TooLarge(_))
    ));
    for body in [&b"not json"[..], b"{}", b"[]", b"{\"version\":1}", b""] {
        assert!(
            matches!(Hardware::from_report(body), Err(ReportError::Malformed(_))),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
    type Mutation = fn(&mut serde_json::Value);
    let cases: [(&str, Mutation); 8] = [
        ("version", |v| v["version"] = 2.into()),
        ("threads", |v| v["cpu"]["threads"] = 0.into()),
        ("cores", |v| v["cpu"]["cores"] = 9.into()),
        ("memory", |v| v["memory"]["bytes"] = 0.into()),
        ("mac", |v| v["nics"][0]["mac"] = "52:54:00".into()),
        ("control", |v| {
            v["system"]["product"] = "Rack\u{1b}[2J".into()
        }),
        ("long", |v| v["disks"][0]["model"] = "x".repeat(300).into()),
        ("negative", |v| v["disks"][0]["sizeBytes"] = (-1).into()),
    ];
    for (name, mutate) in cases {
        let mut v = sample_report();
        mutate(&mut v);
        let e = parse(&v).expect_err(name);
        assert!(!e.to_string().contains("\u{1b}"), "{name}: {e}");
    }
    let mut many = sample_report();
    many["disks"] = serde_json::Value::Array(vec![many["disks"][0].clone(); MAX_ITEMS + 1]);
    assert!(matches!(parse(&many), Err(ReportError::Invalid(m)) if m.contains("disks")));
}

#[test]
fn human_bytes_reads_like_kubectl() {
    assert_eq!(human_bytes(768 << 20), "768 MiB");
    assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    assert_eq!(human_bytes(512), "512 B");
}
