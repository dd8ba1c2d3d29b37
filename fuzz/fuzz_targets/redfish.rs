//! Redfish bodies as a BMC (or anyone answering in its place) sends them: a ComputerSystem (power state,
//! boot override, inventory facts), its EthernetInterface, Drive and SimpleStorage resources, collections,
//! error bodies and `Location`s. The bytes are read as the driver reads them (JSON, anything else is `null`)
//! and every parser runs on the body and on each of its members.
//! Invariants beyond "no panic": a power state is `On`/`Off` exactly for the four strings Redfish defines
//! (anything else is a `Protocol` error); a boot device is only reported for the targets we set, never when
//! the override is `Disabled`; a path is absolute; an inventory, once normalized, keeps only bounded
//! printable text and lowercase MACs, and survives the trip through the status' JSON unchanged.
#![no_main]

use beowulf::bmc::redfish;
use beowulf::bmc::{BmcError, BootDevice, BootMode, PowerState};
use beowulf::hardware::out_of_band::{MAX_ITEMS, MAX_TEXT, OutOfBand};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn check_text(s: &str) {
    assert!(
        !s.is_empty() && s.len() <= MAX_TEXT,
        "text of {} bytes kept",
        s.len()
    );
    assert!(
        !s.chars().any(char::is_control),
        "control character in {s:?}"
    );
    assert_eq!(s.trim(), s, "untrimmed {s:?}");
}

fn check_inventory(mut inv: OutOfBand) {
    inv.normalize();
    for v in [
        &inv.manufacturer,
        &inv.model,
        &inv.serial,
        &inv.sku,
        &inv.bios_version,
    ]
    .into_iter()
    .flatten()
    {
        check_text(v);
    }
    assert!(inv.nics.len() <= MAX_ITEMS && inv.drives.len() <= MAX_ITEMS);
    if let Some(p) = &inv.processors {
        assert!(p.count.is_some() || p.model.is_some());
        p.model.iter().for_each(|m| check_text(m));
    }
    for d in &inv.drives {
        check_text(&d.name);
        for v in [&d.serial, &d.model, &d.media_type, &d.protocol]
            .into_iter()
            .flatten()
        {
            check_text(v);
        }
    }
    for n in &inv.nics {
        check_text(&n.id);
        if let Some(mac) = &n.mac {
            assert!(
                mac.len() == 17 && mac.parse::<beowulf::boot::MacAddr>().is_ok(),
                "{mac:?}"
            );
            assert_eq!(mac, &mac.to_ascii_lowercase());
        }
    }
    let json = serde_json::to_string(&inv).expect("an inventory serializes");
    let back: OutOfBand = serde_json::from_str(&json).expect("and reads back");
    assert_eq!(back, inv);
    // Normalizing is idempotent: what the status holds is what a second read would store.
    let mut again = back;
    again.normalize();
    assert_eq!(again, inv);
}

fn one_body(v: &Value) {
    match redfish::parse_power_state("bmc", "/redfish/v1/Systems/1", v) {
        Ok(state) => {
            let s = v["PowerState"].as_str();
            let want = match s {
                Some("On" | "PoweringOff") => PowerState::On,
                Some("Off" | "PoweringOn") => PowerState::Off,
                other => panic!("PowerState {other:?} read as {state:?}"),
            };
            assert_eq!(state, want);
        }
        Err(BmcError::Protocol { bmc, .. }) => assert_eq!(bmc, "bmc"),
        Err(e) => panic!("a power state error of the wrong kind: {e:?}"),
    }

    let boot = redfish::parse_boot(v);
    let b = &v["Boot"];
    let enabled = b["BootSourceOverrideEnabled"].as_str();
    if let Some(device) = boot.device {
        assert_ne!(
            enabled,
            Some("Disabled"),
            "a disabled override read as {device:?}"
        );
        let target = b["BootSourceOverrideTarget"].as_str();
        let want = match device {
            BootDevice::Pxe => "Pxe",
            BootDevice::Disk => "Hdd",
            BootDevice::Cdrom => "Cd",
            BootDevice::BiosSetup => "BiosSetup",
            BootDevice::UefiHttp => "UefiHttp",
        };
        assert_eq!(target, Some(want));
    }
    assert_eq!(
        boot.persistent,
        match enabled {
            Some("Once") => Some(false),
            Some("Continuous") => Some(true),
            _ => None,
        }
    );
    assert_eq!(
        boot.mode,
        match b["BootSourceOverrideMode"].as_str() {
            Some("UEFI") => Some(BootMode::Uefi),
            Some("Legacy") => Some(BootMode::Legacy),
            _ => None,
        }
    );

    let msg = redfish::error_message(v);
    assert!(msg.is_empty() || msg.starts_with(": "), "{msg:?}");
    for s in [
        v["@odata.id"].as_str(),
        v["Location"].as_str(),
        v["target"].as_str(),
    ]
    .into_iter()
    .flatten()
    {
        let p = redfish::path_of(s);
        assert!(p.starts_with('/'), "{s:?} gave the path {p:?}");
        assert!(
            s.ends_with(&p) || p == "/" || p == format!("/{s}"),
            "{s:?} → {p:?}"
        );
    }

    let mut inv = redfish::system_facts(v);
    for m in redfish::members(v) {
        inv.nics.push(redfish::nic(m));
        inv.drives.push(redfish::drive(m));
        inv.drives.extend(redfish::simple_storage_devices(m));
    }
    inv.nics.push(redfish::nic(v));
    inv.drives.push(redfish::drive(v));
    inv.drives.extend(redfish::simple_storage_devices(v));
    check_inventory(inv);
}

fuzz_target!(|data: &[u8]| {
    // As the driver reads a response: JSON, anything else `null`.
    let body: Value = serde_json::from_slice(data).unwrap_or(Value::Null);
    one_body(&body);
    // Collections' members and a system's `Boot` / sub-objects are bodies of their own to a careless BMC.
    if let Some(o) = body.as_object() {
        for v in o.values().take(16) {
            one_body(v);
        }
    }
    if let Some(text) = std::str::from_utf8(data).ok().filter(|t| t.len() < 4096) {
        let p = redfish::path_of(text);
        assert!(p.starts_with('/'), "{text:?} gave the path {p:?}");
    }
});
