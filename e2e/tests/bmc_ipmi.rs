//! The native IPMI driver against OpenIPMI's ipmi_sim (chassis_control mode, cipher suite 3), checked with
//! ipmitool as the independent client.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use beowulf::bmc::ipmi::{CipherChoice, IpmiClient};
use beowulf::bmc::{
    BmcDriver, BmcError, BootDevice, BootMode, BootOverride, Credentials, Endpoint, Limits,
    Options, PowerAction, PowerState,
};
use e2e::bmc_proxy::UdpDelayProxy;
use e2e::ipmi_sim::{self, IpmiSim};

fn client(endpoint: &str, password: &str, options: Options) -> IpmiClient {
    IpmiClient::new(
        Endpoint::parse(endpoint).unwrap(),
        Credentials::new(ipmi_sim::USER, password),
        options,
        Limits::default(),
    )
}

/// Polls `f` until it returns true, for at most `timeout`.
fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn power_status(sim: &IpmiSim) -> String {
    sim.ipmitool(&["chassis", "power", "status"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmi_power_and_bootdev_are_confirmed_by_ipmitool() {
    let sim = IpmiSim::start();
    // Auto asks ipmi_sim for its cipher suites (0–14, no 17) and proposes the strongest common one, 3.
    let bmc = client(&sim.endpoint(), ipmi_sim::PASSWORD, Options::default());
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    assert_eq!(bmc.session_suite().await, Some(3));
    assert!(power_status(&sim).contains("Chassis Power is off"));

    bmc.power(PowerAction::On).await.unwrap();
    assert!(
        power_status(&sim).contains("Chassis Power is on"),
        "{}",
        power_status(&sim)
    );
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);

    bmc.power(PowerAction::ForceOff).await.unwrap();
    assert!(power_status(&sim).contains("Chassis Power is off"));
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);

    // Cycle: ipmi_sim turns power off, then about a second later on again.
    bmc.power(PowerAction::On).await.unwrap();
    let before = sim.calls().matches("set power 0").count();
    bmc.power(PowerAction::Cycle).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || sim
            .calls()
            .matches("set power 0")
            .count()
            > before),
        "cycle never powered off: {}",
        sim.calls()
    );
    assert!(eventually(Duration::from_secs(5), || power_status(&sim)
        .contains("Chassis Power is on")));
    let calls = sim.calls();
    let off = calls.rfind("set power 0").unwrap();
    assert!(
        calls[off..].contains("set power 1"),
        "no power-on after the cycle's power-off: {calls}"
    );

    // Next boot device.
    let pxe = BootOverride {
        device: BootDevice::Pxe,
        persistent: false,
        mode: BootMode::Legacy,
    };
    bmc.set_boot(pxe).await.unwrap();
    let param = sim.ipmitool(&["chassis", "bootparam", "get", "5"]);
    assert!(param.contains("Force PXE"), "{param}");
    assert_eq!(bmc.boot().await.unwrap().device, Some(BootDevice::Pxe));
    for (dev, text) in [
        (BootDevice::Disk, "Force Boot from default Hard-Drive"),
        (BootDevice::Cdrom, "Force Boot from CD/DVD"),
        (BootDevice::BiosSetup, "Force Boot into BIOS Setup"),
        (BootDevice::Pxe, "Force PXE"),
    ] {
        bmc.set_boot(BootOverride {
            device: dev,
            persistent: true,
            mode: BootMode::Uefi,
        })
        .await
        .unwrap();
        let param = sim.ipmitool(&["chassis", "bootparam", "get", "5"]);
        assert!(param.contains(text), "{dev}: {param}");
        assert_eq!(bmc.boot().await.unwrap().device, Some(dev));
    }
    // UEFI HTTP boot has no IPMI selector.
    let err = bmc
        .set_boot(BootOverride {
            device: BootDevice::UefiHttp,
            persistent: false,
            mode: BootMode::Uefi,
        })
        .await;
    assert!(matches!(err, Err(BmcError::Unsupported { .. })), "{err:?}");
    bmc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmi_status_reads_agree_with_ipmitool_changes() {
    let sim = IpmiSim::start();
    let bmc = client(
        &sim.endpoint(),
        ipmi_sim::PASSWORD,
        Options {
            cipher_suite: CipherChoice::Suite3,
            ..Options::default()
        },
    );
    for (cmd, want) in [
        ("on", PowerState::On),
        ("off", PowerState::Off),
        ("on", PowerState::On),
    ] {
        sim.ipmitool(&["chassis", "power", cmd]);
        // Our session stays open across ipmitool's own sessions.
        assert_eq!(
            bmc.power_state().await.unwrap(),
            want,
            "after ipmitool power {cmd}"
        );
    }
    for (arg, dev) in [
        ("cdrom", BootDevice::Cdrom),
        ("pxe", BootDevice::Pxe),
        ("disk", BootDevice::Disk),
        ("bios", BootDevice::BiosSetup),
    ] {
        sim.ipmitool(&["chassis", "bootdev", arg]);
        assert_eq!(
            bmc.boot().await.unwrap().device,
            Some(dev),
            "after ipmitool bootdev {arg}"
        );
    }
    bmc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmi_session_is_reused_and_requests_are_serialized() {
    let sim = IpmiSim::start();
    let proxy = UdpDelayProxy::start((sim.addr.ip(), 0).into(), sim.addr, Duration::ZERO).await;
    let bmc = std::sync::Arc::new(client(
        &format!("ipmi://{}", proxy.addr),
        ipmi_sim::PASSWORD,
        Options {
            cipher_suite: CipherChoice::Suite3,
            ..Options::default()
        },
    ));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let b = bmc.clone();
            tokio::spawn(async move { b.power_state().await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), PowerState::Off);
    }
    use std::sync::atomic::Ordering::SeqCst;
    assert_eq!(
        proxy.stats.open_sessions.load(SeqCst),
        1,
        "one session for 16 calls"
    );
    assert_eq!(
        proxy.stats.max_outstanding.load(SeqCst),
        1,
        "never more than one request in flight"
    );
    assert!(proxy.stats.to_bmc.load(SeqCst) >= 16);
    bmc.close().await;
}

/// A BMC with a BMC key (Kg): the key, not the password, keys the session integrity key. ipmitool shows the
/// simulator enforces it (no session without `-y`); ours opens sessions with the key, and without it or with a
/// wrong one fails at once with an authentication error that names the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmi_bmc_key_kg_keys_the_session_and_a_missing_or_wrong_one_is_an_auth_error() {
    const KG: &str = "bw-kg-0123456789";
    let sim = IpmiSim::start_with_bmc_key(KG);
    let kg_hex: String = KG.bytes().map(|b| format!("{b:02x}")).collect();
    let no_key = std::process::Command::new("ipmitool")
        .args(["-I", "lanplus", "-C", "3", "-N", "1", "-R", "1", "-H"])
        .arg(sim.addr.ip().to_string())
        .args([
            "-p",
            &sim.addr.port().to_string(),
            "-U",
            ipmi_sim::USER,
            "-E",
        ])
        .args(["chassis", "power", "status"])
        .env("IPMI_PASSWORD", ipmi_sim::PASSWORD)
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&no_key.stdout).contains("Chassis Power"),
        "ipmi_sim let ipmitool in without the BMC key"
    );
    assert!(
        sim.ipmitool(&["-y", &kg_hex, "chassis", "power", "status"])
            .contains("Chassis Power is off")
    );

    let opts = || Options {
        cipher_suite: CipherChoice::Suite3,
        ..Options::default()
    };
    let with_key = |key: Vec<u8>| {
        IpmiClient::new(
            Endpoint::parse(&sim.endpoint()).unwrap(),
            Credentials::new(ipmi_sim::USER, ipmi_sim::PASSWORD).with_bmc_key(key),
            opts(),
            Limits::default(),
        )
    };
    for (what, bmc) in [
        (
            "no key",
            client(&sim.endpoint(), ipmi_sim::PASSWORD, opts()),
        ),
        (
            "wrong key",
            with_key(beowulf::bmc::parse_bmc_key(&"11".repeat(16)).unwrap()),
        ),
    ] {
        let t = Instant::now();
        let err = bmc.power_state().await.unwrap_err();
        assert!(
            matches!(err, BmcError::Auth { .. }) && err.to_string().contains("BMC key (Kg)"),
            "{what}: {err}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{what}: {:?}",
            t.elapsed()
        );
    }

    let bmc = with_key(beowulf::bmc::parse_bmc_key(&kg_hex).unwrap());
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    bmc.power(PowerAction::On).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || sim
            .ipmitool(&["-y", &kg_hex, "chassis", "power", "status"])
            .contains("Chassis Power is on")),
        "ipmitool (with -y) does not see our power-on"
    );
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
    bmc.close().await;
}

/// RMCP presence ping: ipmi_sim answers with a pong that announces IPMI, without a session (its chassis
/// program is never asked anything); nothing listening is a quick Unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmi_presence_ping_finds_the_bmc_without_a_session() {
    let sim = IpmiSim::start();
    let bmc = client(&sim.endpoint(), "not-needed", Options::default());
    let pong = bmc.ping().await.unwrap();
    assert!(pong.ipmi, "{pong:?}");
    assert!(pong.rtt < Duration::from_secs(2), "{pong:?}");
    assert_eq!(bmc.session_suite().await, None, "a ping opens no session");
    assert_eq!(sim.calls(), "", "a ping reaches no chassis command");

    let ip = ipmi_sim::random_loopback();
    let port = ipmi_sim::free_udp_port(ip);
    let nobody = client(&format!("ipmi://{ip}:{port}"), "x", Options::default());
    let t = Instant::now();
    let err = nobody.ping().await.unwrap_err();
    assert!(matches!(err, BmcError::Unreachable { .. }), "{err}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

/// Out-of-band inventory over IPMI: the test builds a FRU image (chassis, board and product areas; the product
/// name 6-bit packed), ipmi_sim serves it as FRU device 0, and the driver reads it back in chunks and parses
/// it. ipmitool, the independent client, decodes the same bytes to the same values. A simulator without FRU
/// data gives an empty inventory; a FRU whose board area is corrupted afterwards is a protocol error that
/// names the area.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmi_inventory_reads_back_the_fru_the_simulator_serves() {
    use beowulf::hardware::out_of_band::{FruBoard, FruChassis, FruProduct};
    use ipmi_sim::fru::{Field, Image};
    let a = Field::ascii;
    // 2024-01-01 00:00 UTC, in minutes since 1996-01-01.
    let made = (1_704_067_200 - 820_454_400) / 60;
    let image = Image {
        chassis: Some((23, vec![a("CH-PN-77"), a("CH-SN-0042")])),
        board: Some((
            made,
            vec![
                a("Acme Boards"),
                a("X11-DPi"),
                a("BSN-0001"),
                a("BPN-9"),
                a(""),
            ],
        )),
        product: Some(vec![
            a("AcmeHPC"),
            Field::Packed("RACK9000-G2".into()),
            a("R9K-A"),
            a("v2"),
            a("PSN-4242"),
            a("asset-17"),
            Field::Empty,
        ]),
    };
    let bytes = image.bytes();
    let sim = IpmiSim::start_with_fru(&bytes);
    let bmc = client(&sim.endpoint(), ipmi_sim::PASSWORD, Options::default());

    let t = Instant::now();
    let inv = bmc.inventory().await.unwrap();
    eprintln!(
        "FRU inventory of {} bytes took {:?}",
        bytes.len(),
        t.elapsed()
    );
    assert_eq!(inv.source, "ipmi-fru");
    assert_eq!(inv.manufacturer.as_deref(), Some("AcmeHPC"));
    assert_eq!(inv.model.as_deref(), Some("RACK9000-G2"));
    assert_eq!(inv.serial.as_deref(), Some("PSN-4242"));
    assert_eq!(inv.sku.as_deref(), Some("R9K-A"));
    assert_eq!(
        (
            inv.bios_version.as_ref(),
            inv.memory_bytes,
            inv.nics.len(),
            inv.drives.len()
        ),
        (None, None, 0, 0)
    );
    let fru = inv.fru.clone().unwrap();
    assert_eq!(
        fru.chassis,
        Some(FruChassis {
            chassis_type: Some(23),
            part_number: Some("CH-PN-77".into()),
            serial: Some("CH-SN-0042".into()),
        })
    );
    assert_eq!(
        fru.board,
        Some(FruBoard {
            manufactured: Some("2024-01-01T00:00:00Z".into()),
            manufacturer: Some("Acme Boards".into()),
            product: Some("X11-DPi".into()),
            serial: Some("BSN-0001".into()),
            part_number: Some("BPN-9".into()),
        })
    );
    assert_eq!(
        fru.product,
        Some(FruProduct {
            manufacturer: Some("AcmeHPC".into()),
            name: Some("RACK9000-G2".into()),
            part_number: Some("R9K-A".into()),
            version: Some("v2".into()),
            serial: Some("PSN-4242".into()),
            asset_tag: Some("asset-17".into()),
        })
    );
    // ipmitool reads the same bytes as the same values.
    let printed = sim.ipmitool(&["fru", "print", "0"]);
    for (label, value) in [
        ("Chassis Part Number", "CH-PN-77"),
        ("Chassis Serial", "CH-SN-0042"),
        ("Board Mfg", "Acme Boards"),
        ("Board Serial", "BSN-0001"),
        ("Product Manufacturer", "AcmeHPC"),
        ("Product Name", "RACK9000-G2"),
        ("Product Part Number", "R9K-A"),
        ("Product Serial", "PSN-4242"),
        ("Product Asset Tag", "asset-17"),
    ] {
        assert!(
            printed.lines().any(|l| l.trim_start().starts_with(label)
                && l.trim_end().ends_with(&format!(": {value}"))),
            "ipmitool fru print has no {label}: {value}:\n{printed}"
        );
    }

    // The simulator reads its FRU file on every Read FRU Data: corrupt one byte of the board area's
    // manufacturer name, and the board area's checksum no longer holds.
    let mut corrupt = bytes.clone();
    let board = usize::from(bytes[3]) * 8;
    corrupt[board + 8] ^= 0x20;
    std::fs::write(sim.dir.path().join("fru.bin"), &corrupt).unwrap();
    let err = bmc.inventory().await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BmcError::Protocol { .. }), "{msg}");
    assert!(
        msg.contains("board info area") && msg.contains("checksum"),
        "{msg}"
    );
    bmc.close().await;

    // No FRU data at all: not an error, an inventory with nothing in it.
    let plain = IpmiSim::start();
    let bmc = client(&plain.endpoint(), ipmi_sim::PASSWORD, Options::default());
    let inv = bmc.inventory().await.unwrap();
    assert!(inv.is_empty() && inv.source == "ipmi-fru", "{inv:?}");
    // Wrong password: the usual authentication error.
    let err = client(&plain.endpoint(), "not-it", Options::default())
        .inventory()
        .await
        .unwrap_err();
    assert!(matches!(err, BmcError::Auth { .. }), "{err}");
    assert!(!err.to_string().contains("not-it"));
    bmc.close().await;
}
