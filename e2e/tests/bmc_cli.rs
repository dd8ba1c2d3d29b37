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
