//! The Redfish driver against sushy-tools' emulator (fake driver, HTTP Basic through a bcrypt htpasswd, no
//! SessionService, power changes applied 1–11 s after they are requested). curl reads the state back as the
//! independent client.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use beowulf::bmc::redfish::RedfishClient;
use beowulf::bmc::{
    BmcDriver, BmcError, BootDevice, BootMode, BootOverride, Credentials, Endpoint, Limits,
    Options, PowerAction, PowerState,
};
use e2e::sushy::{self, Sushy};

fn client(endpoint: &str, password: &str) -> RedfishClient {
    RedfishClient::new(
        Endpoint::parse(endpoint).unwrap(),
        Credentials::new(sushy::USER, password),
        Options::default(),
        Limits::default(),
    )
    .unwrap()
}

/// GET a Redfish path with curl (credentials through a config on stdin, not argv).
fn curl_get(s: &Sushy, path: &str) -> serde_json::Value {
    use std::io::Write;
    let mut c = std::process::Command::new("curl")
        .args(["-sS", "--fail", "-K", "-"])
        .arg(format!("http://{}{path}", s.addr))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(format!("user = \"{}:{}\"\n", sushy::USER, sushy::PASSWORD).as_bytes())
        .unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// sushy applies a requested power change up to 11 s later; the deadline leaves margin for a loaded machine.
const POWER_DEADLINE: Duration = Duration::from_secs(25);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_power_on_and_off_reach_the_state_within_the_deadline() {
    let s = Sushy::start(true);
    // No system id: the driver must pick the only one.
    let bmc = client(&s.endpoint(None), sushy::PASSWORD);
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);

    let t = Instant::now();
    bmc.power(PowerAction::On).await.unwrap();
    bmc.wait_power(PowerState::On, POWER_DEADLINE)
        .await
        .unwrap();
    eprintln!("power on took {:?}", t.elapsed());
    let sys = curl_get(&s, &format!("/redfish/v1/Systems/{}", sushy::SYSTEM_0));
    assert_eq!(sys["PowerState"], "On");

    // A soft off is GracefulShutdown (chosen from the system's allowable values).
    let t = Instant::now();
    bmc.power(PowerAction::SoftOff).await.unwrap();
    bmc.wait_power(PowerState::Off, POWER_DEADLINE)
        .await
        .unwrap();
    eprintln!("graceful shutdown took {:?}", t.elapsed());

    bmc.power(PowerAction::On).await.unwrap();
    bmc.wait_power(PowerState::On, POWER_DEADLINE)
        .await
        .unwrap();
    bmc.power(PowerAction::ForceOff).await.unwrap();
    bmc.wait_power(PowerState::Off, POWER_DEADLINE)
        .await
        .unwrap();
    let sys = curl_get(&s, &format!("/redfish/v1/Systems/{}", sushy::SYSTEM_0));
    assert_eq!(sys["PowerState"], "Off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_boot_override_pxe_is_read_back() {
    let s = Sushy::start(false);
    let bmc = client(&s.endpoint(Some(sushy::SYSTEM_1)), sushy::PASSWORD);
    let other_before =
        curl_get(&s, &format!("/redfish/v1/Systems/{}", sushy::SYSTEM_0))["Boot"].clone();
    // Start from something that is not PXE/UEFI, so the read-back below proves our PATCH.
    bmc.set_boot(BootOverride {
        device: BootDevice::Cdrom,
        persistent: true,
        mode: BootMode::Legacy,
    })
    .await
    .unwrap();
    let sys = curl_get(&s, &format!("/redfish/v1/Systems/{}", sushy::SYSTEM_1));
    assert_eq!(
        (
            sys["Boot"]["BootSourceOverrideTarget"].as_str(),
            sys["Boot"]["BootSourceOverrideMode"].as_str()
        ),
        (Some("Cd"), Some("Legacy"))
    );
    bmc.set_boot(BootOverride {
        device: BootDevice::Pxe,
        persistent: false,
        mode: BootMode::Uefi,
    })
    .await
    .unwrap();
    let b = bmc.boot().await.unwrap();
    assert_eq!(b.device, Some(BootDevice::Pxe));
    assert_eq!(b.mode, Some(BootMode::Uefi));
    let sys = curl_get(&s, &format!("/redfish/v1/Systems/{}", sushy::SYSTEM_1));
    assert_eq!(sys["Boot"]["BootSourceOverrideTarget"], "Pxe");
    assert_eq!(sys["Boot"]["BootSourceOverrideMode"], "UEFI");
    // The other system is untouched.
    let other = curl_get(&s, &format!("/redfish/v1/Systems/{}", sushy::SYSTEM_0));
    assert_eq!(other["Boot"], other_before);

    bmc.set_boot(BootOverride {
        device: BootDevice::Disk,
        persistent: true,
        mode: BootMode::Legacy,
    })
    .await
    .unwrap();
    let sys = curl_get(&s, &format!("/redfish/v1/Systems/{}", sushy::SYSTEM_1));
    assert_eq!(sys["Boot"]["BootSourceOverrideTarget"], "Hdd");
    assert_eq!(sys["Boot"]["BootSourceOverrideMode"], "Legacy");
    assert_eq!(bmc.boot().await.unwrap().device, Some(BootDevice::Disk));

    // Without a system id, a BMC with two systems is ambiguous: the error names both and says what to do.
    let err = client(&s.endpoint(None), sushy::PASSWORD)
        .power_state()
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BmcError::Unsupported { .. }), "{msg}");
    assert!(
        msg.contains(sushy::SYSTEM_0)
            && msg.contains(sushy::SYSTEM_1)
            && msg.contains("redfish://HOST/"),
        "{msg}"
    );
    // A system id that does not exist.
    let err = client(&s.endpoint(Some("no-such-system")), sushy::PASSWORD)
        .power_state()
        .await
        .unwrap_err();
    assert!(matches!(err, BmcError::Unsupported { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_wrong_credentials_give_a_clear_auth_error() {
    let s = Sushy::start(true);
    let t = Instant::now();
    let err = client(&s.endpoint(None), "not-the-password")
        .power_state()
        .await
        .unwrap_err();
    assert!(matches!(err, BmcError::Auth { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("authentication failed") && msg.contains("check the username and password"),
        "{msg}"
    );
    assert!(!msg.contains("not-the-password"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_tls_trusts_the_given_ca_or_explicit_insecure_only() {
    let s = Sushy::start_with(true, true);
    let ep = Endpoint::parse(&s.endpoint(None)).unwrap();
    let make = |options: Options| {
        RedfishClient::new(
            ep.clone(),
            Credentials::new(sushy::USER, sushy::PASSWORD),
            options,
            Limits::default(),
        )
        .unwrap()
    };
    // System roots: the test CA is unknown, so the connection is refused with a hint.
    let err = make(Options::default()).power_state().await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BmcError::Protocol { .. }), "{err:?}");
    assert!(msg.contains("TLS") && msg.contains("--ca-cert"), "{msg}");
    // The CA that signed the BMC's certificate.
    let ca = std::fs::read(s.ca_pem.as_ref().unwrap()).unwrap();
    let ok = make(Options {
        ca_pem: Some(ca),
        ..Options::default()
    });
    assert_eq!(ok.power_state().await.unwrap(), PowerState::Off);
    // Explicitly insecure.
    let insecure = make(Options {
        insecure_tls: true,
        ..Options::default()
    });
    assert_eq!(insecure.power_state().await.unwrap(), PowerState::Off);
    // Some other CA: refused.
    let other = Sushy::start_with(true, true);
    let wrong = std::fs::read(other.ca_pem.as_ref().unwrap()).unwrap();
    let err = make(Options {
        ca_pem: Some(wrong),
        ..Options::default()
    })
    .power_state()
    .await
    .unwrap_err();
    assert!(matches!(err, BmcError::Protocol { .. }), "{err:?}");
    // Garbage instead of a PEM: a clear error at construction.
    let err = RedfishClient::new(
        ep.clone(),
        Credentials::new(sushy::USER, sushy::PASSWORD),
        Options {
            ca_pem: Some(b"not a pem".to_vec()),
            ..Options::default()
        },
        Limits::default(),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("PEM"), "{err}");
}

/// Out-of-band inventory over Redfish: what sushy's fake driver serves for a system configured with two NICs
/// and a storage controller with two drives (`sushy::inventory`), checked against the configuration and
/// against curl. What the fake driver does not serve (model, serial, SKU, BIOS, processors, memory, NIC
/// speed) is absent. A system without storage (the emulator answers 500 for its Storage) still gives its
/// NICs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_inventory_reads_the_system_nics_and_drives_sushy_serves() {
    use beowulf::hardware::out_of_band::{OutOfBandDrive, OutOfBandNic};
    use sushy::inventory::*;
    let s = Sushy::start_with_inventory();
    let bmc = client(&s.endpoint(None), sushy::PASSWORD);
    let t = Instant::now();
    let inv = bmc.inventory().await.unwrap();
    eprintln!("Redfish inventory took {:?}", t.elapsed());

    assert_eq!(inv.source, "redfish");
    assert_eq!(inv.manufacturer.as_deref(), Some(MANUFACTURER));
    let sys = curl_get(&s, &format!("/redfish/v1/Systems/{}", sushy::SYSTEM_0));
    assert_eq!(sys["Manufacturer"], MANUFACTURER);
    assert_eq!(
        (
            &inv.model,
            &inv.serial,
            &inv.sku,
            &inv.bios_version,
            &inv.processors,
            inv.memory_bytes
        ),
        (&None, &None, &None, &None, &None, None),
        "the fake driver serves none of these: {inv:?}"
    );
    assert_eq!(
        inv.nics,
        [sushy::NIC_0, NIC_1]
            .map(|mac| OutOfBandNic {
                id: mac.to_string(),
                mac: Some(mac.to_string()),
                speed_mbps: None,
            })
            .to_vec()
    );
    let want: Vec<OutOfBandDrive> = DRIVES
        .iter()
        .map(|(_, name, size, protocol)| OutOfBandDrive {
            name: name.to_string(),
            size_bytes: Some(*size),
            serial: Some(DRIVE_SERIAL.into()),
            model: Some(DRIVE_MODEL.into()),
            media_type: Some(DRIVE_MEDIA.into()),
            protocol: Some(protocol.to_string()),
        })
        .collect();
    assert_eq!(inv.drives, want);
    // curl sees the same drive.
    let d = curl_get(
        &s,
        &format!(
            "/redfish/v1/Systems/{}/Storage/{STORAGE_ID}/Drives/{}",
            sushy::SYSTEM_0,
            DRIVES[1].0
        ),
    );
    assert_eq!(
        (
            &d["CapacityBytes"],
            &d["SerialNumber"],
            &d["Model"],
            &d["MediaType"],
            &d["Protocol"]
        ),
        (
            &serde_json::json!(DRIVES[1].2),
            &serde_json::json!(DRIVE_SERIAL),
            &serde_json::json!(DRIVE_MODEL),
            &serde_json::json!(DRIVE_MEDIA),
            &serde_json::json!(DRIVES[1].3)
        )
    );
    bmc.close().await;

    // No storage configured: the Storage collection fails (500) and is skipped; the NIC is still there.
    let plain = Sushy::start(true);
    let inv = client(&plain.endpoint(None), sushy::PASSWORD)
        .inventory()
        .await
        .unwrap();
    assert_eq!(inv.manufacturer.as_deref(), Some(MANUFACTURER));
    assert_eq!(inv.nics.len(), 1);
    assert_eq!(inv.nics[0].mac.as_deref(), Some(sushy::NIC_0));
    assert!(inv.drives.is_empty(), "{inv:?}");
    // Wrong password: the usual authentication error, not an empty inventory.
    let err = client(&plain.endpoint(None), "not-the-password")
        .inventory()
        .await
        .unwrap_err();
    assert!(matches!(err, BmcError::Auth { .. }), "{err:?}");
}
