//! `beowulf bmc` end to end (in process, through the same parser as the binary) against ipmi_sim, checked
//! with ipmitool.
#![allow(clippy::unwrap_used)]

use beowulf::cli::{Cli, run};
use clap::Parser;
use e2e::ipmi_sim::{self, IpmiSim};

fn cli(sim: &IpmiSim, pwfile: &std::path::Path, args: &[&str]) -> anyhow::Result<()> {
    let mut argv = vec!["beowulf", "bmc", "--address"];
    let ep = sim.endpoint();
    argv.push(&ep);
    argv.extend(["--username", ipmi_sim::USER, "--password-file"]);
    let pw = pwfile.to_str().unwrap().to_string();
    argv.push(&pw);
    argv.extend(args);
    let parsed = Cli::try_parse_from(argv)?;
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(run(parsed))
}

#[test]
fn bmc_cli_power_and_bootdev_against_ipmi_sim() {
    let sim = IpmiSim::start();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{}\n", ipmi_sim::PASSWORD)).unwrap();

    cli(&sim, &pw, &["power", "on"]).unwrap();
    assert!(
        sim.ipmitool(&["chassis", "power", "status"])
            .contains("Chassis Power is on")
    );
    cli(&sim, &pw, &["power", "off", "--wait", "5"]).unwrap();
    assert!(
        sim.ipmitool(&["chassis", "power", "status"])
            .contains("Chassis Power is off")
    );
    cli(
        &sim,
        &pw,
        &["--cipher-suite", "3", "bootdev", "pxe", "--once"],
    )
    .unwrap();
    assert!(
        sim.ipmitool(&["chassis", "bootparam", "get", "5"])
            .contains("Force PXE")
    );
    cli(&sim, &pw, &["bootdev", "show"]).unwrap();

    // Wrong password: an error that says what to do, without the password in it.
    std::fs::write(&pw, "not-it\n").unwrap();
    let err = format!("{:#}", cli(&sim, &pw, &["power", "status"]).unwrap_err());
    assert!(
        err.contains("authentication failed") && err.contains("check the username and password"),
        "{err}"
    );
    assert!(!err.contains("not-it"), "{err}");
    // No password flag exists.
    assert!(
        Cli::try_parse_from([
            "beowulf",
            "bmc",
            "--address",
            "ipmi://h",
            "-u",
            "a",
            "--password",
            "x",
            "power",
            "status"
        ])
        .is_err()
    );
    // --soft only with off; http boot is Redfish-only.
    std::fs::write(&pw, format!("{}\n", ipmi_sim::PASSWORD)).unwrap();
    assert!(cli(&sim, &pw, &["power", "on", "--soft"]).is_err());
    let err = format!("{:#}", cli(&sim, &pw, &["bootdev", "http"]).unwrap_err());
    assert!(err.contains("does not support"), "{err}");
}

#[test]
fn bmc_cli_takes_the_ipmi_bmc_key_from_a_file() {
    let sim = IpmiSim::start_with_bmc_key("cli-kg-secret");
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{}\n", ipmi_sim::PASSWORD)).unwrap();
    let key = dir.path().join("kg");
    let hex: String = "cli-kg-secret"
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(&key, format!("0x{hex}\n")).unwrap();
    let k = key.to_str().unwrap();

    cli(&sim, &pw, &["--bmc-key-file", k, "power", "on"]).unwrap();
    assert!(
        sim.ipmitool(&["-y", &hex, "chassis", "power", "status"])
            .contains("Chassis Power is on")
    );
    // Without the key: an authentication error that names it.
    let err = format!("{:#}", cli(&sim, &pw, &["power", "status"]).unwrap_err());
    assert!(err.contains("BMC key (Kg)"), "{err}");
    // A malformed key file: what the format is, without the file's contents.
    std::fs::write(&key, "cli-kg-secret\n").unwrap();
    let err = format!(
        "{:#}",
        cli(&sim, &pw, &["--bmc-key-file", k, "power", "status"]).unwrap_err()
    );
    assert!(err.contains("hex digits") && err.contains(k), "{err}");
    assert!(!err.contains("cli-kg-secret"), "{err}");
}

/// `beowulf bmc --inventory`: a standalone inventory with three hosts — one BMC with a password file, one with
/// a Kg (bmcKeyFile) and the password from the environment, one that does not answer. The binary asks every
/// BMC at once, prints one line per host in inventory order, names the failing one on stderr, and exits 1.
#[test]
fn bmc_cli_acts_on_the_bmcs_of_an_inventory() {
    let plain = IpmiSim::start();
    let keyed = IpmiSim::start_with_bmc_key("inv-kg-secret");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("vmlinuz"), b"kernel").unwrap();
    std::fs::write(d.join("pw"), format!("{}\n", ipmi_sim::PASSWORD)).unwrap();
    let hex: String = "inv-kg-secret"
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(d.join("kg"), &hex).unwrap();
    // A loopback port nobody listens on: the third BMC never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    drop(silent);
    let host = |name: &str, mac: &str, ip: &str, bmc: String| {
        format!(
            "  - name: {name}\n    mac: \"{mac}\"\n    ip: {ip}\n    image: live\n    userData: \"#cloud-config\\n\"\n    bmc:\n{bmc}"
        )
    };
    let inventory = format!(
        "namespace: rack1\nnetworks:\n  - name: boot\n    subnet: 10.99.0.0/24\n    bootServer: 10.99.0.1\n\
         images:\n  - name: live\n    kernel: {{ path: vmlinuz }}\n    cmdline: console=ttyS0\nhosts:\n{}{}{}",
        host(
            "node-a",
            "52:54:00:00:00:0a",
            "10.99.0.10",
            format!(
                "      address: {}\n      username: {}\n      passwordFile: pw\n",
                plain.endpoint(),
                ipmi_sim::USER
            )
        ),
        host(
            "node-b",
            "52:54:00:00:00:0b",
            "10.99.0.11",
            format!(
                "      address: {}\n      passwordEnv: INV_TEST_BMC_PW\n      bmcKeyFile: kg\n",
                keyed.endpoint()
            )
        ),
        host(
            "node-c",
            "52:54:00:00:00:0c",
            "10.99.0.12",
            format!("      address: ipmi://127.0.0.1:{silent_port}\n      passwordFile: pw\n")
        ),
    );
    std::fs::write(d.join("hosts.yaml"), inventory).unwrap();
    let bmc = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_e2e-beowulf"))
            .args(["bmc", "--inventory"])
            .arg(d.join("hosts.yaml"))
            .args(["--username", ipmi_sim::USER, "--timeout", "0.2"])
            .args(args)
            .env("INV_TEST_BMC_PW", ipmi_sim::PASSWORD)
            .env_remove("BEOWULF_BMC_PASSWORD")
            .output()
            .unwrap()
    };

    // Two named hosts: both powered on, as ipmitool sees it; one line each, in inventory order.
    let out = bmc(&["--host", "node-b,node-a", "power", "on"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        "node-a: power on: requested\nnode-b: power on: requested\n"
    );
    assert!(
        plain
            .ipmitool(&["chassis", "power", "status"])
            .contains("is on")
    );
    assert!(
        keyed
            .ipmitool(&["-y", &hex, "chassis", "power", "status"])
            .contains("is on")
    );

    // Every host: the silent BMC fails alone, named on stderr, and the exit status says so.
    let out = bmc(&["--all-hosts", "power", "status"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stdout, "node-a: on\nnode-b: on\n");
    assert!(
        stderr.contains("node-c: error:") && stderr.contains("1 of 3 BMCs failed"),
        "{stderr}"
    );
    assert!(!stderr.contains(&hex) && !stdout.contains(&hex));

    // Unknown names are refused before any BMC is contacted.
    let calls = plain.calls();
    let out = bmc(&["--host", "node-a,nope", "power", "off"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no host \"nope\""), "{stderr}");
    assert_eq!(plain.calls(), calls, "node-a was not touched");
    assert!(
        plain
            .ipmitool(&["chassis", "power", "status"])
            .contains("is on")
    );
}

#[test]
fn a_user_error_is_one_line_without_a_backtrace_even_with_rust_backtrace_set() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-password-file");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_e2e-beowulf"))
        .args(["bmc", "--address", "ipmi://127.0.0.1:9", "--username", "u"])
        .arg("--password-file")
        .arg(&missing)
        .args(["power", "status"])
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .env_remove("BEOWULF_BMC_PASSWORD")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("Error: ") && stderr.contains("no-such-password-file"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
}

#[test]
fn a_bmc_error_names_the_bmc_once_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Nothing listens on the discard port of loopback: the BMC is unreachable at once.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_e2e-beowulf"))
        .args(["bmc", "--address", "ipmi://127.0.0.1:9", "--username", "u"])
        .arg("--password-file")
        .arg(&pw)
        .args(["--timeout", "0.2", "power", "status"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.matches("ipmi://127.0.0.1:9").count(), 1, "{stderr}");
    assert!(stderr.contains("is unreachable"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

/// `beowulf bmc … inventory`: one BMC by address prints its inventory as pretty JSON (an IPMI FRU the test
/// built, a Redfish system with NICs and drives); with `--inventory --all-hosts` one line `NAME: {json}` per
/// host, in inventory order (a BMC without FRU data: `{"source":"ipmi-fru"}`). Nothing goes to stderr, and
/// the password appears in no output.
#[test]
fn bmc_cli_inventory_prints_what_the_bmcs_serve_as_json() {
    use e2e::ipmi_sim::fru::{Field, Image};
    use e2e::sushy::{self, Sushy};
    let image = Image {
        board: Some((
            0,
            vec![
                Field::ascii("Acme Boards"),
                Field::ascii("X11-DPi"),
                Field::ascii("BSN-0001"),
            ],
        )),
        product: Some(vec![
            Field::ascii("AcmeHPC"),
            Field::Packed("RACK9000".into()),
            Field::ascii("R9K-A"),
            Field::Empty,
            Field::ascii("PSN-4242"),
        ]),
        ..Image::default()
    };
    let sim = IpmiSim::start_with_fru(&image.bytes());
    let redfish = Sushy::start_with_inventory();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Both peers' users have the password "password"; the password file is private, so a run has nothing to
    // say on stderr at all.
    std::fs::write(d.join("pw"), format!("{}\n", ipmi_sim::PASSWORD)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.join("pw"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_e2e-beowulf"))
            .arg("bmc")
            .args(args)
            .env_remove("BEOWULF_BMC_PASSWORD")
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "{args:?}: {stdout}{stderr}");
        assert_eq!(stderr, "", "{args:?}");
        assert!(!stdout.contains(ipmi_sim::PASSWORD), "{stdout}");
        stdout
    };
    let pw = d.join("pw");
    let pw = pw.to_str().unwrap();

    // One IPMI BMC: pretty JSON over several lines.
    let out = run(&[
        "--address",
        &sim.endpoint(),
        "--username",
        ipmi_sim::USER,
        "--password-file",
        pw,
        "inventory",
    ]);
    assert!(out.lines().count() > 5, "{out}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["source"], "ipmi-fru");
    assert_eq!(j["manufacturer"], "AcmeHPC");
    assert_eq!(j["model"], "RACK9000");
    assert_eq!(j["serial"], "PSN-4242");
    assert_eq!(j["sku"], "R9K-A");
    assert_eq!(j["fru"]["board"]["serial"], "BSN-0001");
    assert!(j["fru"]["board"].get("manufactured").is_none(), "{j}");

    // One Redfish BMC.
    let out = run(&[
        "--address",
        &redfish.endpoint(None),
        "--username",
        sushy::USER,
        "--password-file",
        pw,
        "inventory",
    ]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["source"], "redfish");
    assert_eq!(j["manufacturer"], sushy::inventory::MANUFACTURER);
    assert_eq!(j["nics"][1]["mac"], sushy::inventory::NIC_1);
    assert_eq!(j["drives"][0]["sizeBytes"], sushy::inventory::DRIVES[0].2);
    assert_eq!(j["drives"][1]["protocol"], sushy::inventory::DRIVES[1].3);

    // From an inventory file (which takes no plain-HTTP Redfish): the FRU simulator and one without FRU data,
    // one line each, `NAME: JSON`.
    let bare = IpmiSim::start();
    std::fs::write(d.join("vmlinuz"), b"kernel").unwrap();
    let host = |name: &str, mac: &str, ip: &str, address: String| {
        format!(
            "  - name: {name}\n    mac: \"{mac}\"\n    ip: {ip}\n    image: live\n    userData: \"#cloud-config\\n\"\n    bmc:\n      address: {address}\n      passwordFile: pw\n"
        )
    };
    std::fs::write(
        d.join("hosts.yaml"),
        format!(
            "namespace: rack1\nnetworks:\n  - name: boot\n    subnet: 10.99.0.0/24\n    bootServer: 10.99.0.1\n\
             images:\n  - name: live\n    kernel: {{ path: vmlinuz }}\n    cmdline: console=ttyS0\nhosts:\n{}{}",
            host("node-a", "52:54:00:00:00:0a", "10.99.0.10", sim.endpoint()),
            host("node-b", "52:54:00:00:00:0b", "10.99.0.11", bare.endpoint()),
        ),
    )
    .unwrap();
    let out = run(&[
        "--inventory",
        d.join("hosts.yaml").to_str().unwrap(),
        "--username",
        ipmi_sim::USER,
        "--all-hosts",
        "inventory",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let parse = |line: &str, name: &str| -> serde_json::Value {
        let json = line
            .strip_prefix(&format!("{name}: "))
            .unwrap_or_else(|| panic!("{line:?} is not {name}: JSON"));
        serde_json::from_str(json).unwrap()
    };
    let a = parse(lines[0], "node-a");
    assert_eq!(
        (a["source"].as_str(), a["model"].as_str()),
        (Some("ipmi-fru"), Some("RACK9000"))
    );
    assert_eq!(a["fru"]["product"]["serial"], "PSN-4242");
    assert_eq!(
        parse(lines[1], "node-b"),
        serde_json::json!({"source": "ipmi-fru"})
    );
}
