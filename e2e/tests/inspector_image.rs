//! The hardware inspection image (`images/inspector`) booted directly on two differently shaped QEMU machines:
//! every value of its report is what QEMU was given.
//! - A: 2 sockets × 2 cores, 768 MiB, a virtio disk, an NVMe disk and a SATA disk (AHCI) with serials, a
//!   virtio NIC (10 Gbit/s) and an e1000, SMBIOS system and BIOS strings; no `beowulf.inspect=`: it only prints.
//! - B: 1 socket × 1 core × 2 threads of a Westmere, 1 GiB, one virtio disk, one NIC; it posts its report to
//!   `beowulf.inspect=URL` (QEMU's user network forwards the URL's address to a listener of this test; nothing
//!   leaves the machine), over the NIC `BOOTIF=` names, and never prints the URL's token.
#![allow(clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::time::Duration;

use e2e::inspector::{self, Inspection};
use e2e::{Scratch, require_root_and_peers};
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

/// A sparse raw disk image of `mib` MiB.
fn disk(dir: &std::path::Path, name: &str, mib: u64) -> String {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .unwrap()
        .set_len(mib * MIB)
        .unwrap();
    p.display().to_string()
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

/// The report has exactly the documented fields, with their JSON types (nothing omitted).
fn assert_shape(r: &Value) {
    assert_eq!(
        keys(r),
        [
            "cpu", "disks", "lldp", "memory", "nics", "pci", "system", "version"
        ]
    );
    assert_eq!(r["version"], 1);
    assert_eq!(
        keys(&r["cpu"]),
        [
            "architecture",
            "cores",
            "flags",
            "model",
            "sockets",
            "threads"
        ]
    );
    assert_eq!(keys(&r["memory"]), ["bytes", "usableBytes"]);
    for d in r["disks"].as_array().unwrap() {
        assert_eq!(
            keys(d),
            [
                "byPath",
                "model",
                "name",
                "rotational",
                "serial",
                "sizeBytes",
                "wwn"
            ]
        );
    }
    for n in r["nics"].as_array().unwrap() {
        assert_eq!(keys(n), ["carrier", "driver", "mac", "name", "speedMbps"]);
    }
    for p in r["pci"].as_array().unwrap() {
        assert_eq!(keys(p), ["address", "class", "device", "driver", "vendor"]);
    }
    assert_eq!(
        keys(&r["system"]),
        ["biosVersion", "product", "serial", "vendor"]
    );
    assert_eq!(r["lldp"], json!([]));
    // MemTotal: less than installed (the kernel's own memory), but most of it.
    let (bytes, usable) = (
        r["memory"]["bytes"].as_u64().unwrap(),
        r["memory"]["usableBytes"].as_u64().unwrap(),
    );
    assert!(
        usable < bytes && usable > bytes / 10 * 8,
        "{usable} of {bytes}"
    );
}

fn disk_named<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no disk {name} in {}", r["disks"]))
}

fn nic_with_mac<'a>(r: &'a Value, mac: &str) -> &'a Value {
    r["nics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["mac"] == mac)
        .unwrap_or_else(|| panic!("no NIC {mac} in {}", r["nics"]))
}

fn pci_at<'a>(r: &'a Value, address: &str) -> &'a Value {
    r["pci"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["address"] == address)
        .unwrap_or_else(|| panic!("no PCI function {address} in {}", r["pci"]))
}

/// `(class, vendor, device, driver)` of a PCI function.
fn pci_id(p: &Value) -> (&str, &str, &str, &Value) {
    (
        p["class"].as_str().unwrap(),
        p["vendor"].as_str().unwrap(),
        p["device"].as_str().unwrap(),
        &p["driver"],
    )
}

/// Answers one HTTP request on `listener` with 200 and returns (request line and headers, body).
fn serve_one(listener: &TcpListener) -> (String, Vec<u8>) {
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(150)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = conn.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed before the request's headers");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .expect("a Content-Length");
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = conn.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed in the body");
        body.extend_from_slice(&chunk[..n]);
    }
    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    (head, body)
}

fn report_time(name: &str, i: &Inspection) {
    eprintln!(
        "inspector_image: machine {name} booted, reported and powered off in {:.1?}",
        i.elapsed
    );
}

#[test]
fn the_report_is_what_the_machine_is_made_of() {
    require_root_and_peers();
    let scratch = Scratch::new("inspector");
    let dir = scratch.path();
    let image = inspector::build(&dir.join("img"));

    // ---- A: two sockets, three kinds of disks, two kinds of NICs, SMBIOS strings ----
    let vd = disk(dir, "a-vd.img", 64);
    let nv = disk(dir, "a-nvme.img", 128);
    let sata = disk(dir, "a-sata.img", 96);
    let a = image.boot(
        dir,
        "a",
        "",
        &[
            "-smp",
            "4,sockets=2,cores=2,threads=1",
            "-m",
            "768",
            "-drive",
            &format!("if=none,id=vd,file={vd},format=raw"),
            "-device",
            "virtio-blk-pci,drive=vd,serial=VDSERIAL1,addr=0x04",
            "-drive",
            &format!("if=none,id=nv,file={nv},format=raw"),
            "-device",
            "nvme,serial=NVMESER2,drive=nv,addr=0x05",
            "-device",
            "ahci,id=ahci0,addr=0x06",
            "-drive",
            &format!("if=none,id=sata,file={sata},format=raw"),
            "-device",
            "ide-hd,drive=sata,bus=ahci0.0,serial=SATASER3,model=AcmeDisk 3000",
            "-netdev",
            "user,id=n0,restrict=on",
            "-device",
            "virtio-net-pci,netdev=n0,mac=52:54:00:0a:00:01,speed=10000,duplex=full,addr=0x07",
            "-netdev",
            "user,id=n1,restrict=on",
            "-device",
            "e1000,netdev=n1,mac=52:54:00:0a:00:02,addr=0x08",
            "-smbios",
            "type=0,version=BIOS-A-1.2",
            "-smbios",
            "type=1,manufacturer=AcmeHPC,product=Rack9000,serial=SN-A-1",
        ],
    );
    report_time("A", &a);
    let r = &a.report;
    eprintln!("machine A's report: {r}");
    assert_shape(r);
    assert_eq!(r["cpu"]["architecture"], "x86_64");
    assert_eq!(r["cpu"]["model"], "QEMU Virtual CPU version 2.5+");
    assert_eq!(
        (
            &r["cpu"]["sockets"],
            &r["cpu"]["cores"],
            &r["cpu"]["threads"]
        ),
        (&json!(2), &json!(4), &json!(4))
    );
    // qemu64: no SSE4.2, AES or AVX; AMD's SVM; a guest sees the hypervisor bit.
    assert_eq!(r["cpu"]["flags"], json!(["svm", "hypervisor"]));
    assert_eq!(r["memory"]["bytes"], 768 * MIB);

    assert_eq!(r["disks"].as_array().unwrap().len(), 3, "{}", r["disks"]);
    assert_eq!(
        disk_named(r, "vda"),
        &json!({"name": "vda", "sizeBytes": 64 * MIB, "rotational": true, "model": null,
                "serial": "VDSERIAL1", "wwn": null, "byPath": "pci-0000:00:04.0"})
    );
    let nvme = disk_named(r, "nvme0n1");
    assert_eq!(nvme["sizeBytes"], 128 * MIB);
    assert_eq!(nvme["rotational"], false);
    assert_eq!(nvme["model"], "QEMU NVMe Ctrl");
    assert_eq!(nvme["serial"], "NVMESER2");
    assert_eq!(nvme["byPath"], "pci-0000:00:05.0-nvme-1");
    // The namespace's identifier as the kernel builds it without EUI-64/NGUID: vendor, serial, model, nsid.
    let wwn = nvme["wwn"].as_str().unwrap();
    assert!(
        wwn.starts_with("nvme.1b36-") && wwn.contains(&hex::encode("NVMESER2")),
        "{wwn}"
    );
    let sda = disk_named(r, "sda");
    assert_eq!(sda["sizeBytes"], 96 * MIB);
    assert_eq!(sda["rotational"], true);
    assert_eq!(sda["model"], "AcmeDisk 3000");
    assert_eq!(sda["serial"], "SATASER3");
    assert_eq!(sda["byPath"], "pci-0000:00:06.0-ata-1");
    let wwn = sda["wwn"].as_str().unwrap();
    assert!(
        wwn.starts_with("t10.ATA") && wwn.ends_with("SATASER3"),
        "{wwn}"
    );

    assert_eq!(r["nics"].as_array().unwrap().len(), 2, "{}", r["nics"]);
    let virtio = nic_with_mac(r, "52:54:00:0a:00:01");
    assert_eq!(virtio["driver"], "virtio_net");
    assert_eq!(virtio["speedMbps"], 10000);
    assert_eq!(virtio["carrier"], true);
    let e1000 = nic_with_mac(r, "52:54:00:0a:00:02");
    assert_eq!(e1000["driver"], "e1000");
    assert_eq!(e1000["speedMbps"], 1000);
    assert_eq!(e1000["carrier"], true);

    assert_eq!(
        pci_id(pci_at(r, "0000:00:04.0")),
        ("0x010000", "0x1af4", "0x1001", &json!("virtio-pci"))
    );
    assert_eq!(
        pci_id(pci_at(r, "0000:00:05.0")),
        ("0x010802", "0x1b36", "0x0010", &json!("nvme"))
    );
    assert_eq!(
        pci_id(pci_at(r, "0000:00:06.0")),
        ("0x010601", "0x8086", "0x2922", &json!("ahci"))
    );
    assert_eq!(
        pci_id(pci_at(r, "0000:00:07.0")),
        ("0x020000", "0x1af4", "0x1000", &json!("virtio-pci"))
    );
    assert_eq!(
        pci_id(pci_at(r, "0000:00:08.0")),
        ("0x020000", "0x8086", "0x100e", &json!("e1000"))
    );
    // The emulated VGA: no driver in the image.
    assert_eq!(
        pci_id(pci_at(r, "0000:00:02.0")),
        ("0x030000", "0x1234", "0x1111", &json!(null))
    );
    assert_eq!(
        r["system"],
        json!({"vendor": "AcmeHPC", "product": "Rack9000", "serial": "SN-A-1", "biosVersion": "BIOS-A-1.2"})
    );
    assert!(
        !a.console.contains("INSPECTOR: post"),
        "no beowulf.inspect=, no post:\n{}",
        a.console
    );

    // ---- B: hyperthreads, 1 GiB, one disk, one NIC; posts its report ----
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // QEMU connects its forward to the listener when it starts, and relays the guest's one connection to it.
    let server = std::thread::spawn(move || serve_one(&listener));
    let token = format!("tok{}secret", std::process::id());
    let vd = disk(dir, "b-vd.img", 32);
    let b = image.boot(
        dir,
        "b",
        &format!(
            "BOOTIF=01-52-54-00-0B-00-01 beowulf.inspect=http://10.0.2.100:8080/inspect/{token}?host=b"
        ),
        &[
            "-cpu",
            "Westmere",
            "-smp",
            "2,sockets=1,cores=1,threads=2",
            "-m",
            "1024",
            "-drive",
            &format!("if=none,id=vd,file={vd},format=raw"),
            "-device",
            "virtio-blk-pci,drive=vd,serial=VDSERIAL-B,addr=0x04",
            "-netdev",
            &format!(
                "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:8080-tcp:127.0.0.1:{port}"
            ),
            "-device",
            "virtio-net-pci,netdev=n0,mac=52:54:00:0b:00:01,addr=0x05",
        ],
    );
    report_time("B", &b);
    let r = &b.report;
    assert_shape(r);
    assert_eq!(r["cpu"]["architecture"], "x86_64");
    assert!(
        r["cpu"]["model"].as_str().unwrap().starts_with("Westmere"),
        "{}",
        r["cpu"]
    );
    assert_eq!(
        (
            &r["cpu"]["sockets"],
            &r["cpu"]["cores"],
            &r["cpu"]["threads"]
        ),
        (&json!(1), &json!(1), &json!(2))
    );
    assert_eq!(r["cpu"]["flags"], json!(["sse4_2", "aes", "hypervisor"]));
    assert_eq!(r["memory"]["bytes"], 1024 * MIB);
    assert_eq!(
        r["disks"],
        json!([{"name": "vda", "sizeBytes": 32 * MIB, "rotational": true, "model": null,
                "serial": "VDSERIAL-B", "wwn": null, "byPath": "pci-0000:00:04.0"}])
    );
    assert_eq!(
        r["nics"],
        json!([{"name": "eth0", "mac": "52:54:00:0b:00:01", "speedMbps": null, "carrier": true,
                "driver": "virtio_net"}]),
        "QEMU's virtio NIC reports no speed unless given one"
    );
    assert_eq!(
        pci_id(pci_at(r, "0000:00:05.0")),
        ("0x020000", "0x1af4", "0x1000", &json!("virtio-pci"))
    );
    // No -smbios: QEMU's own strings, and no serial number at all.
    assert_eq!(r["system"]["vendor"], "QEMU");
    assert_eq!(r["system"]["product"], "Standard PC (i440FX + PIIX, 1996)");
    assert_eq!(r["system"]["serial"], json!(null));
    assert!(r["system"]["biosVersion"].is_string(), "{}", r["system"]);

    let (head, body) = server.join().unwrap();
    assert!(
        head.starts_with(&format!("POST /inspect/{token}?host=b HTTP/1.1\r\n")),
        "{head}"
    );
    assert!(
        head.lines()
            .any(|l| l.eq_ignore_ascii_case("content-type: application/json")),
        "{head}"
    );
    let posted: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(&posted, r, "the posted report is the printed one");
    assert!(
        b.console.contains("INSPECTOR: configuring eth0 by DHCP"),
        "{}",
        b.console
    );
    assert!(b.console.contains("INSPECTOR: posted ok"), "{}", b.console);
    assert!(
        !b.console.contains(&token),
        "the console shows the token:\n{}",
        b.console
    );
}
