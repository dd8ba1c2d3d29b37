//! Local disks through the HTTP server: the plan on the kernel command line of the host's own image (not the
//! inspector's), and `/disks/<token>`, which takes the node's report only with its live token and only when it
//! fits the plan.

use super::*;

const DISKS: &str = "    localDisks:
      - { name: etcd, mountPath: /var/lib/etcd, disk: { serial: NV8 } }
      - { name: scratch, mountPath: /scratch, disk: { byPath: \"pci-0000:00:04.0\" } }
";

async fn server() -> Server {
    // node-0 keeps two disks (its entry ends with its ignition line).
    let text = inventory_text().replacen(
        "    ignition: '{\"ignition\": {\"version\": \"3.4.0\"}}'\n",
        &format!("    ignition: '{{\"ignition\": {{\"version\": \"3.4.0\"}}}}'\n{DISKS}"),
        1,
    );
    assert!(text.contains("localDisks"), "{text}");
    start_on(text, None).await
}

async fn post(s: &Server, from: &str, token: &str, body: &[u8]) -> Reply {
    let file = s.dir.join(format!("disks-{}", rand::random::<u64>()));
    std::fs::write(&file, body).unwrap();
    let data = format!("@{}", file.display());
    curl(
        from,
        format!("{}/disks/{token}", base(s)),
        &["-X", "POST", "--data-binary", &data],
    )
    .await
}

async fn view(s: &Server) -> serde_json::Value {
    let r = curl("127.0.0.1", format!("{}/api/hosts", base(s)), &[]).await;
    let hosts: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    hosts.as_array().unwrap()[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_is_on_the_kernel_line_and_a_report_needs_the_live_token_and_the_plan() {
    let s = server().await;
    let r = curl(
        "127.0.0.10",
        format!("{}/boot/52-54-00-00-00-10.ipxe", base(&s)),
        &[],
    )
    .await;
    let script = String::from_utf8(r.body).unwrap();
    let token = token_from(script.as_bytes());
    assert!(
        script.contains(&format!(
            " beowulf.disk=etcd,serial=NV8,/var/lib/etcd,ext4 beowulf.disk=scratch,byPath=pci-0000:00:04.0,/scratch,ext4 beowulf.disks_url={}/disks/{token}\n",
            base(&s)
        )),
        "{script}"
    );
    // The other host keeps none: its line has no disk arguments.
    let other = curl(
        "127.0.0.11",
        format!("{}/boot/52-54-00-00-00-11.ipxe", base(&s)),
        &[],
    )
    .await;
    let other_token = token_from(&other.body);
    assert!(
        !String::from_utf8(other.body)
            .unwrap()
            .contains("beowulf.disk")
    );
    let v = view(&s).await;
    assert_eq!(v["local_disks"][0]["disk"], "serial=NV8", "{v}");
    assert!(v["local_disks"][0].get("outcome").is_none(), "{v}");

    let good = b"etcd formatted nvme0n1 /var/lib/etcd\nscratch foreign vdb TYPE=xfs LABEL=old\n";
    // Another host's token, the right token from another address, no token: the bare 403, nothing stored.
    for (from, token) in [
        ("127.0.0.10", other_token.as_str()),
        ("127.0.0.11", token.as_str()),
        ("127.0.0.10", "0000"),
    ] {
        let r = post(&s, from, token, good).await;
        assert_eq!(r.status, 403, "from {from}");
        assert_eq!(r.body, b"forbidden\n");
    }
    // Not the plan's disks, not a report, too large: refused saying why, nothing stored.
    for (body, status, why) in [
        (&b"other mounted vdb\n"[..], 400, "not in this boot's plan"),
        (b"etcd exploded vdb\n", 400, "unknown outcome"),
        (
            &vec![b'x'; crate::storage::MAX_REPORT_BYTES + 1][..],
            413,
            "larger than",
        ),
    ] {
        let r = post(&s, "127.0.0.10", &token, body).await;
        assert_eq!(r.status, status);
        assert!(
            String::from_utf8_lossy(&r.body).contains(why),
            "{:?}",
            r.body
        );
    }
    assert!(view(&s).await["local_disks"][0].get("outcome").is_none());

    let r = post(&s, "127.0.0.10", &token, good).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok\n"[..]));
    let v = view(&s).await;
    assert_eq!(v["local_disks"][0]["outcome"], "formatted", "{v}");
    assert_eq!(v["local_disks"][0]["device"], "nvme0n1", "{v}");
    assert_eq!(v["local_disks"][1]["outcome"], "foreign", "{v}");
    assert_eq!(v["local_disks"][1]["detail"], "TYPE=xfs LABEL=old", "{v}");
    // The report does not use up the token: the callback still works with it.
    let cb = curl("127.0.0.10", format!("{}/callback/{token}", base(&s)), &[]).await;
    assert_eq!(cb.status, 200);
    // A new boot forgets the last boot's report.
    curl(
        "127.0.0.10",
        format!("{}/boot/52-54-00-00-00-10.ipxe", base(&s)),
        &[],
    )
    .await;
    assert!(view(&s).await["local_disks"][0].get("outcome").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inspection_boot_gets_no_disk_plan() {
    let text = inventory_text().replacen(
        "    ignition: '{\"ignition\": {\"version\": \"3.4.0\"}}'\n",
        &format!("    ignition: '{{\"ignition\": {{\"version\": \"3.4.0\"}}}}'\n{DISKS}"),
        1,
    ) + "inspection:\n  image: inspector\n";
    let s = start_on(text, None).await;
    let r = curl(
        "127.0.0.10",
        format!("{}/boot/52-54-00-00-00-10.ipxe", base(&s)),
        &[],
    )
    .await;
    let script = String::from_utf8(r.body).unwrap();
    assert!(script.contains("/images/inspector/vmlinuz"), "{script}");
    assert!(!script.contains("beowulf.disk"), "{script}");
}
