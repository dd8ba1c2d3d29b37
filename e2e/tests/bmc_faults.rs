//! BMC faults, each with a bounded time: wrong credentials, nothing listening, the BMC killed in the middle
//! of a session, and a BMC that answers slowly (a delaying UDP proxy in front of ipmi_sim; a slow HTTP
//! server for Redfish). Every case must end in a clear error of the right kind, not a hang or a panic.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use beowulf::bmc::ipmi::{CipherChoice, IpmiClient};
use beowulf::bmc::redfish::RedfishClient;
use beowulf::bmc::{BmcDriver, BmcError, Credentials, Endpoint, Limits, Options, PowerState};
use e2e::bmc_proxy::{SlowHttp, UdpDelayProxy};
use e2e::ipmi_sim::{self, IpmiSim};

fn ipmi(endpoint: &str, user: &str, password: &str, timeout: Duration, retries: u32) -> IpmiClient {
    IpmiClient::new(
        Endpoint::parse(endpoint).unwrap(),
        Credentials::new(user, password),
        Options {
            cipher_suite: CipherChoice::Suite3,
            request_timeout: timeout,
            retries,
            ..Options::default()
        },
        Limits::default(),
    )
}

fn redfish(endpoint: &str, timeout: Duration) -> RedfishClient {
    RedfishClient::new(
        Endpoint::parse(endpoint).unwrap(),
        Credentials::new("admin", "password"),
        Options {
            http_timeout: timeout,
            retries: 1,
            ..Options::default()
        },
        Limits::default(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmi_wrong_password_and_user_give_auth_errors() {
    let sim = IpmiSim::start();
    for (user, pw) in [
        (ipmi_sim::USER, "wrong-password"),
        ("nobody", ipmi_sim::PASSWORD),
    ] {
        let t = Instant::now();
        let err = ipmi(&sim.endpoint(), user, pw, Duration::from_millis(500), 2)
            .power_state()
            .await
            .unwrap_err();
        assert!(matches!(err, BmcError::Auth { .. }), "{user}: {err:?}");
        let msg = err.to_string();
        assert!(msg.contains("check the username and password"), "{msg}");
        assert!(
            !msg.contains("wrong-password"),
            "the password leaked into the error: {msg}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{user}: took {:?}",
            t.elapsed()
        );
    }
    // The right credentials still work afterwards (the failed attempts left nothing behind).
    let ok = ipmi(
        &sim.endpoint(),
        ipmi_sim::USER,
        ipmi_sim::PASSWORD,
        Duration::from_millis(500),
        2,
    );
    assert_eq!(ok.power_state().await.unwrap(), PowerState::Off);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmi_nothing_listening_is_unreachable_quickly() {
    let ip = ipmi_sim::random_loopback();
    let port = ipmi_sim::free_udp_port(ip);
    let t = Instant::now();
    let err = ipmi(
        &format!("ipmi://{ip}:{port}"),
        "admin",
        "password",
        Duration::from_millis(500),
        2,
    )
    .power_state()
    .await
    .unwrap_err();
    assert!(matches!(err, BmcError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("nothing listens"), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmi_sim_killed_mid_session_gives_an_error_then_recovers() {
    let mut sim = IpmiSim::start();
    let addr = sim.addr;
    let bmc = ipmi(
        &sim.endpoint(),
        ipmi_sim::USER,
        ipmi_sim::PASSWORD,
        Duration::from_millis(400),
        2,
    );
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    sim.ipmitool(&["chassis", "power", "on"]);
    sim.kill();
    let t = Instant::now();
    let err = bmc.power_state().await.unwrap_err();
    assert!(
        matches!(err, BmcError::Unreachable { .. } | BmcError::Timeout { .. }),
        "{err:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "took {:?}",
        t.elapsed()
    );
    // The BMC comes back (same address, state kept by the chassis program in a fresh directory is lost, so
    // just check that the driver opens a new session by itself).
    let sim2 = IpmiSim::start_at(addr);
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    sim2.ipmitool(&["chassis", "power", "on"]);
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmi_slow_bmc_is_tolerated_up_to_the_timeout_then_times_out() {
    let sim = IpmiSim::start();
    // Slower than one retransmission interval but within the retry budget: succeeds, and the late answers
    // to the earlier transmissions are dropped without confusion.
    let slow = UdpDelayProxy::start(
        (sim.addr.ip(), 0).into(),
        sim.addr,
        Duration::from_millis(200),
    )
    .await;
    let bmc = ipmi(
        &format!("ipmi://{}", slow.addr),
        ipmi_sim::USER,
        ipmi_sim::PASSWORD,
        Duration::from_millis(300),
        4,
    );
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    sim.ipmitool(&["chassis", "power", "on"]);
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);

    // Far slower than the whole budget: a Timeout error, in bounded time.
    let stuck =
        UdpDelayProxy::start((sim.addr.ip(), 0).into(), sim.addr, Duration::from_secs(30)).await;
    let bmc = ipmi(
        &format!("ipmi://{}", stuck.addr),
        ipmi_sim::USER,
        ipmi_sim::PASSWORD,
        Duration::from_millis(200),
        2,
    );
    let t = Instant::now();
    let err = bmc.power_state().await.unwrap_err();
    assert!(matches!(err, BmcError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("timed out"), "{err}");
    // 200 + 300 + 400 ms of waiting, plus scheduling slack.
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_nothing_listening_and_slow_bmc_fail_in_bounded_time() {
    let ip = ipmi_sim::random_loopback();
    let port = std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = Instant::now();
    let err = redfish(
        &format!("redfish+http://{ip}:{port}"),
        Duration::from_secs(2),
    )
    .power_state()
    .await
    .unwrap_err();
    assert!(matches!(err, BmcError::Unreachable { .. }), "{err:?}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );

    let slow = SlowHttp::start((ip, 0).into(), Duration::from_secs(60)).await;
    let t = Instant::now();
    let err = redfish(
        &format!("redfish+http://{}", slow.addr),
        Duration::from_millis(700),
    )
    .power_state()
    .await
    .unwrap_err();
    assert!(matches!(err, BmcError::Timeout { .. }), "{err:?}");
    // Two attempts of 0.7 s plus one backoff of 0.25 s.
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t.elapsed()
    );
}
