//! The native IPMI driver against a second IPMI implementation, pyghmi's BMC server (virtualbmc's engine),
//! and cipher-suite negotiation against both real BMCs. Each case of `negotiate` and the test that covers it:
//! - the BMC lists its suites (both do): `auto_takes_suite_3_from_pyghmis_list_and_drives_power_and_boot`,
//!   `auto_takes_suite_3_from_ipmi_sims_list_in_one_open_session`;
//! - no list, a refusal status: `without_a_list_ipmi_sim_refuses_17_and_auto_proposes_3`;
//! - no list, a counter-offer taken: `without_a_list_pyghmi_counter_offers_3_and_auto_takes_it`;
//! - a counter-offer of a suite not allowed: `a_pinned_17_is_refused_with_the_counter_offer_named`;
//! - remembered per BMC: `auto_remembers_the_suite_and_skips_the_list_next_time`;
//! - only suites without integrity or encryption: unit tests in `bmc::ipmi::negotiate` (no BMC here can be
//!   configured to offer only those).
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use beowulf::bmc::ipmi::{CipherChoice, IpmiClient};
use beowulf::bmc::{
    BmcDriver, BmcError, BootDevice, BootMode, BootOverride, Credentials, Endpoint, Limits,
    Options, PowerAction, PowerState,
};
use e2e::bmc_proxy::UdpDelayProxy;
use e2e::ipmi_sim::{self, IpmiSim};
use e2e::pyghmi_bmc::{self, PyghmiBmc};

fn client(endpoint: &str, user: &str, password: &str, cipher_suite: CipherChoice) -> IpmiClient {
    IpmiClient::new(
        Endpoint::parse(endpoint).unwrap(),
        Credentials::new(user, password),
        Options {
            cipher_suite,
            request_timeout: Duration::from_millis(500),
            ..Options::default()
        },
        Limits::default(),
    )
}

fn pxe() -> BootOverride {
    BootOverride {
        device: BootDevice::Pxe,
        persistent: false,
        mode: BootMode::Legacy,
    }
}

/// A counting proxy in front of `addr` that passes everything on.
async fn counting(addr: std::net::SocketAddr) -> UdpDelayProxy {
    UdpDelayProxy::start((addr.ip(), 0).into(), addr, Duration::ZERO).await
}

#[tokio::test]
async fn auto_takes_suite_3_from_pyghmis_list_and_drives_power_and_boot() {
    let peer = PyghmiBmc::start();
    let proxy = counting(peer.addr).await;
    let bmc = client(
        &format!("ipmi://{}", proxy.addr),
        pyghmi_bmc::USER,
        pyghmi_bmc::PASSWORD,
        CipherChoice::Auto,
    );
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    assert_eq!(bmc.session_suite().await, Some(3));
    // Asked for the list, then proposed the one common suite: a single Open Session.
    assert!(proxy.stats.cipher_suite_lists.load(SeqCst) >= 1);
    assert_eq!(proxy.stats.open_sessions.load(SeqCst), 1);

    bmc.power(PowerAction::On).await.unwrap();
    assert_eq!(peer.state().0, "on");
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
    bmc.power(PowerAction::ForceOff).await.unwrap();
    assert_eq!(peer.state().0, "off");
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);

    bmc.set_boot(pxe()).await.unwrap();
    assert_eq!(peer.state().1, "network");
    assert_eq!(bmc.boot().await.unwrap().device, Some(BootDevice::Pxe));
    bmc.set_boot(BootOverride {
        device: BootDevice::Disk,
        ..pxe()
    })
    .await
    .unwrap();
    assert_eq!(peer.state().1, "hd");
    assert_eq!(bmc.boot().await.unwrap().device, Some(BootDevice::Disk));
    bmc.close().await;
}

#[tokio::test]
async fn each_suite_pyghmi_supports_works_pinned() {
    let peer = PyghmiBmc::start();
    let bmc = client(
        &peer.endpoint(),
        pyghmi_bmc::USER,
        pyghmi_bmc::PASSWORD,
        CipherChoice::Suite3,
    );
    bmc.power(PowerAction::On).await.unwrap();
    assert_eq!(peer.state().0, "on");
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
    bmc.set_boot(pxe()).await.unwrap();
    assert_eq!(peer.state().1, "network");
    assert_eq!(bmc.session_suite().await, Some(3));
    bmc.close().await;
}

#[tokio::test]
async fn a_pinned_17_is_refused_with_the_counter_offer_named() {
    let peer = PyghmiBmc::start();
    let bmc = client(
        &peer.endpoint(),
        pyghmi_bmc::USER,
        pyghmi_bmc::PASSWORD,
        CipherChoice::Suite17,
    );
    let err = bmc.power(PowerAction::On).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BmcError::Unsupported { .. }), "{err:?}");
    assert!(
        msg.contains("cipher suite 17")
            && msg.contains("answered Open Session with cipher suite 3")
            && msg.contains("--cipher-suite auto"),
        "{msg}"
    );
    assert_eq!(peer.state().0, "off", "nothing was done");
}

#[tokio::test]
async fn a_wrong_password_or_user_is_an_auth_error_in_auto_and_pinned() {
    let peer = PyghmiBmc::start();
    for choice in [CipherChoice::Auto, CipherChoice::Suite3] {
        // pyghmi refuses a wrong password through RAKP 2's code, and an unknown user by silence.
        for (user, password) in [
            (pyghmi_bmc::USER, "Wr0ng-S3cret"),
            ("nobody", pyghmi_bmc::PASSWORD),
        ] {
            let bmc = client(&peer.endpoint(), user, password, choice);
            let err = bmc.power(PowerAction::On).await.unwrap_err();
            assert!(
                matches!(err, BmcError::Auth { .. }),
                "{choice:?} {user}: {err:?}"
            );
            assert!(
                !err.to_string().contains("Wr0ng-S3cret"),
                "the password stays out of errors: {err}"
            );
        }
    }
    assert_eq!(peer.state().0, "off");
}

#[tokio::test]
async fn without_a_list_pyghmi_counter_offers_3_and_auto_takes_it() {
    let peer = PyghmiBmc::start();
    let proxy = UdpDelayProxy::without_cipher_suite_list(peer.addr).await;
    let bmc = client(
        &format!("ipmi://{}", proxy.addr),
        pyghmi_bmc::USER,
        pyghmi_bmc::PASSWORD,
        CipherChoice::Auto,
    );
    bmc.power(PowerAction::On).await.unwrap();
    assert_eq!(peer.state().0, "on");
    assert_eq!(bmc.session_suite().await, Some(3));
    assert_eq!(proxy.stats.cipher_suite_lists.load(SeqCst), 1);
    // 17 was proposed, 3 came back and was taken: no second Open Session.
    assert_eq!(proxy.stats.open_sessions.load(SeqCst), 1);
}

#[tokio::test]
async fn without_a_list_ipmi_sim_refuses_17_and_auto_proposes_3() {
    let sim = IpmiSim::start();
    let proxy = UdpDelayProxy::without_cipher_suite_list(sim.addr).await;
    let bmc = client(
        &format!("ipmi://{}", proxy.addr),
        ipmi_sim::USER,
        ipmi_sim::PASSWORD,
        CipherChoice::Auto,
    );
    bmc.power(PowerAction::On).await.unwrap();
    assert!(
        sim.ipmitool(&["chassis", "power", "status"])
            .contains("Chassis Power is on")
    );
    assert_eq!(bmc.session_suite().await, Some(3));
    assert_eq!(proxy.stats.cipher_suite_lists.load(SeqCst), 1);
    assert_eq!(
        proxy.stats.open_sessions.load(SeqCst),
        2,
        "17 refused, then 3"
    );
}

#[tokio::test]
async fn auto_takes_suite_3_from_ipmi_sims_list_in_one_open_session() {
    let sim = IpmiSim::start();
    let proxy = counting(sim.addr).await;
    let bmc = client(
        &format!("ipmi://{}", proxy.addr),
        ipmi_sim::USER,
        ipmi_sim::PASSWORD,
        CipherChoice::Auto,
    );
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    assert_eq!(bmc.session_suite().await, Some(3));
    // ipmi_sim lists suites 0–14 over several responses; 17 is not among them, so it is never proposed.
    assert!(proxy.stats.cipher_suite_lists.load(SeqCst) >= 2);
    assert_eq!(proxy.stats.open_sessions.load(SeqCst), 1);
}

#[tokio::test]
async fn auto_remembers_the_suite_and_skips_the_list_next_time() {
    let peer = PyghmiBmc::start();
    let proxy = counting(peer.addr).await;
    let endpoint = format!("ipmi://{}", proxy.addr);
    let first = client(
        &endpoint,
        pyghmi_bmc::USER,
        pyghmi_bmc::PASSWORD,
        CipherChoice::Auto,
    );
    first.power(PowerAction::On).await.unwrap();
    first.close().await;
    let lists = proxy.stats.cipher_suite_lists.load(SeqCst);
    assert!(lists >= 1);

    // A new client (as the next reconcile or CLI call in this process makes) goes straight to suite 3.
    let second = client(
        &endpoint,
        pyghmi_bmc::USER,
        pyghmi_bmc::PASSWORD,
        CipherChoice::Auto,
    );
    assert_eq!(second.power_state().await.unwrap(), PowerState::On);
    assert_eq!(second.session_suite().await, Some(3));
    assert_eq!(proxy.stats.cipher_suite_lists.load(SeqCst), lists);
    assert_eq!(proxy.stats.open_sessions.load(SeqCst), 2);
}
