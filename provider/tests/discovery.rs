//! Discovery in `beowulf manager`: an unknown MAC gets an address from the discovery range (never a registered
//! host's MAC), boots the inspection image from the real boot plane (HTTP on loopback, the test acting as the
//! node from its leased address), posts its report with the boot's token, and becomes exactly one BeowulfHost
//! `discovered-<mac>` (state `discovered`, offline, the report in its status) that the host controller leaves
//! alone. The API is kube-fake-client (the real management cluster runs the manager in `mgmt_inspection`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use beowulf::api::BeowulfHost;
use beowulf::api::host::HostStateName;
use beowulf::boot::directory::DiscoveryRange;
use beowulf::boot::{BootDirectory as _, MacAddr};
use beowulf::controllers::{Context, discovery, host};
use beowulf::provisioning::io::{BmcTarget, PowerControl, PowerError};
use beowulf::runtime::profiles::{ImageSource, ProfileRegistry, ServedConfig};
use futures::future::BoxFuture;
use kube::ResourceExt;
use kube::api::Api;

#[path = "support/fake_api.rs"]
mod fake_api;

const NS: &str = "lab";
const REPORT: &str = r#"{"version": 1,
  "cpu": {"architecture": "x86_64", "model": "QEMU", "sockets": 1, "cores": 1, "threads": 1, "flags": []},
  "memory": {"bytes": 536870912},
  "nics": [{"name": "eth0", "mac": "52:54:00:00:0d:01", "speedMbps": 1000, "carrier": true, "driver": "e1000"}]}"#;

/// A discovered host has no BMC: nothing may ask one. A MOCK that fails the test if it is used.
struct NoBmc;

impl PowerControl for NoBmc {
    fn power_state<'a>(&'a self, t: &'a BmcTarget) -> BoxFuture<'a, Result<bool, PowerError>> {
        panic!("BMC {} asked for a discovered host", t.address)
    }
    fn power_on<'a>(&'a self, t: &'a BmcTarget) -> BoxFuture<'a, Result<(), PowerError>> {
        panic!("BMC {} asked for a discovered host", t.address)
    }
    fn power_off<'a>(&'a self, t: &'a BmcTarget) -> BoxFuture<'a, Result<(), PowerError>> {
        panic!("BMC {} asked for a discovered host", t.address)
    }
    fn set_next_boot_pxe<'a>(&'a self, t: &'a BmcTarget) -> BoxFuture<'a, Result<(), PowerError>> {
        panic!("BMC {} asked for a discovered host", t.address)
    }
}

#[tokio::test]
async fn an_unknown_mac_becomes_one_discovered_host_that_waits_to_be_accepted() {
    let client = fake_api::fake_api(Vec::new()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    let registry = Arc::new(ProfileRegistry::new(
        ServedConfig {
            boot_server: Ipv4Addr::LOCALHOST,
            http_port: http.port(),
            ..Default::default()
        },
        Default::default(),
        Arc::new(|| jiff::Timestamp::now().as_second()),
    ));
    let plane = registry.plane();
    tokio::spawn(beowulf::boot::http::serve(
        listener,
        plane.clone(),
        Arc::new(Default::default()),
        Default::default(),
        std::future::pending(),
    ));
    registry
        .enable_discovery(
            "127.0.0.0/8".parse().unwrap(),
            DiscoveryRange {
                first: Ipv4Addr::new(127, 0, 0, 200),
                last: Ipv4Addr::new(127, 0, 0, 201),
                lease_secs: 300,
            },
            &ImageSource {
                kernel: "http://boot/inspector/vmlinuz".into(),
                initrds: vec!["http://boot/inspector/initrd.gz".into()],
                rootfs: None,
                cmdline: "console=ttyS0 quiet beowulf.inspect={{ inspection_url }}".into(),
            },
        )
        .unwrap();
    // A registered (idle) host's MAC is not discovered.
    let registered: MacAddr = "52:54:00:00:0d:99".parse().unwrap();
    plane.exclude_from_discovery(Box::new(move |mac| *mac == registered));
    assert!(plane.lease(&registered, None).is_none());

    let mac: MacAddr = "52:54:00:00:0d:01".parse().unwrap();
    let lease = plane.lease(&mac, None).expect("a discovery lease");
    assert_eq!(
        (lease.ip, lease.hostname.as_str(), lease.lease_secs),
        (
            Ipv4Addr::new(127, 0, 0, 200),
            "discovered-525400000d01",
            300
        )
    );
    let mut found = registry.discoveries();

    // The node: its script (from its leased address) boots the inspector; it posts its report.
    let node = reqwest::Client::builder()
        .local_address(IpAddr::V4(lease.ip))
        .no_proxy()
        .build()
        .unwrap();
    let script = node
        .get(format!("http://{http}/boot/52-54-00-00-0d-01.ipxe"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        script.contains("kernel http://boot/inspector/vmlinuz"),
        "{script}"
    );
    let token = &script.split("/inspection/").nth(1).expect("inspection URL")[..64];
    let r = node
        .post(format!("http://{http}/inspection/{token}"))
        .body(REPORT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(found.recv().await, Some(mac));
    // Reported: no more DHCP answers until it is accepted.
    assert!(plane.lease(&mac, None).is_none());

    let ctx = Arc::new(Context::new(
        client.clone(),
        Arc::new(NoBmc),
        registry.clone(),
    ));
    let (hardware, at) = registry.discovered_report(&mac).unwrap();
    assert!(
        discovery::record(&ctx, NS, mac, hardware.clone(), at)
            .await
            .unwrap()
    );
    // Recorded twice (a second boot, a restart): still one host.
    assert!(
        discovery::record(&ctx, NS, mac, hardware, at)
            .await
            .unwrap()
    );
    let hosts: Api<BeowulfHost> = Api::namespaced(client.clone(), NS);
    let all = hosts.list(&Default::default()).await.unwrap().items;
    assert_eq!(all.len(), 1);
    let h = &all[0];
    assert_eq!(h.name_any(), "discovered-525400000d01");
    assert_eq!(h.labels()[discovery::DISCOVERED_LABEL], "true");
    assert!(!h.spec.online);
    assert_eq!(h.spec.boot_mac_address, "52:54:00:00:0d:01");
    let st = h.status.as_ref().unwrap();
    assert_eq!(st.state, HostStateName::Discovered);
    assert_eq!(st.hardware.as_ref().unwrap().memory.bytes, 512 << 20);
    assert!(st.inspected_at.is_some());

    // The host controller leaves it alone (NoBmc panics if asked) and adds no finalizer.
    host::reconcile(Arc::new(h.clone()), ctx.clone())
        .await
        .unwrap();
    let after = hosts.get(&h.name_any()).await.unwrap();
    assert!(after.finalizers().is_empty());
    assert_eq!(after.status, h.status);
}
