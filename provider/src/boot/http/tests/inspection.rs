//! `/inspection/<token>`: the inspector's report, and the image choice around it (standalone mode).

use super::*;
use crate::boot::inspection::InspectionStore;

const KEY: &str = "standalone/node-0";

fn report() -> Vec<u8> {
    serde_json::to_vec(&crate::hardware::tests::sample_report()).unwrap()
}

/// Posts `body` (a file, so curl sends it as is) to `/inspection/<token>` from `from`.
async fn post(s: &Server, from: &str, token: &str, body: &[u8]) -> Reply {
    let file = s.dir.join(format!("body-{}", rand::random::<u64>()));
    std::fs::write(&file, body).unwrap();
    let data = format!("@{}", file.display());
    curl(
        from,
        format!("{}/inspection/{token}", base(s)),
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &data,
        ],
    )
    .await
}

async fn script(s: &Server, from: &str, mac: &str) -> String {
    let r = curl(from, format!("{}/boot/{mac}.ipxe", base(s)), &[]).await;
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap()
}

/// The token in an inspector script's `beowulf.inspect=` URL.
fn inspect_token(script: &str) -> String {
    let i = script.find("/inspection/").expect("an inspection URL") + "/inspection/".len();
    script[i..i + 64].to_string()
}

async fn host_view(s: &Server, name: &str) -> serde_json::Value {
    let r = curl("127.0.0.1", format!("{}/api/hosts", base(s)), &[]).await;
    let hosts: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .cloned()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_needs_the_hosts_live_token_and_a_refused_one_changes_nothing() {
    let state = tempfile::tempdir().unwrap();
    let store = InspectionStore::open(state.path()).unwrap();
    let s = start_with("inspection:\n  image: inspector\n", Some(store)).await;

    // Not inspected yet: both hosts boot the inspector, each with its own token.
    let s0 = script(&s, "127.0.0.10", "52-54-00-00-00-10").await;
    assert!(s0.contains("/images/inspector/vmlinuz"), "{s0}");
    assert!(!s0.contains("/nocloud/"), "{s0}");
    let t0 = inspect_token(&s0);
    let t1 = inspect_token(&script(&s, "127.0.0.11", "52-54-00-00-00-11").await);
    assert_eq!(host_view(&s, "node-0").await["boots"], "inspector");

    // Someone else's token, or the right token from someone else's address: the bare 403.
    for (from, token) in [
        ("127.0.0.10", &t1),
        ("127.0.0.11", &t0),
        ("127.0.0.99", &t0),
    ] {
        let r = post(&s, from, token, &report()).await;
        assert_eq!(r.status, 403, "from {from}");
        assert_eq!(r.body, b"forbidden\n");
    }
    // Too large, malformed, implausible: refused with the reason, the token still valid.
    let r = post(
        &s,
        "127.0.0.10",
        &t0,
        &vec![b' '; crate::hardware::MAX_REPORT_BYTES + 1],
    )
    .await;
    assert_eq!(r.status, 413);
    let r = post(&s, "127.0.0.10", &t0, b"{\"version\": 1, \"cpu\": ").await;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).starts_with("the report is not the inspector's JSON"));
    let mut bad = crate::hardware::tests::sample_report();
    bad["nics"][0]["mac"] = "<script>".into();
    let r = post(&s, "127.0.0.10", &t0, &serde_json::to_vec(&bad).unwrap()).await;
    assert_eq!(r.status, 400);
    let r = curl("127.0.0.10", format!("{}/inspection/{t0}", base(&s)), &[]).await;
    assert_eq!(r.status, 405, "GET is not a report");
    assert!(s.plane.inspections.get(KEY).is_none());
    assert_eq!(
        host_view(&s, "node-0").await["hardware"],
        serde_json::Value::Null
    );
    assert!(
        !state
            .path()
            .join("hardware/standalone_node-0.json")
            .exists()
    );

    // The real report: stored (on disk too), shown, and the host boots its own image from now on.
    let r = post(&s, "127.0.0.10", &t0, &report()).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok\n"[..]));
    let view = host_view(&s, "node-0").await;
    assert_eq!(view["hardware"]["memory"]["bytes"], 805306368u64);
    assert_eq!(view["hardware"]["disks"][1]["kind"], "nvme");
    assert_eq!(view["last_phase"], "inspection");
    assert_eq!(view["boots"], "testnode");
    let stored = s.plane.inspections.get(KEY).unwrap();
    let on_disk: crate::boot::inspection::Inspection = serde_json::from_slice(
        &std::fs::read(state.path().join("hardware/standalone_node-0.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(&on_disk, stored.as_ref());

    // The token is used up: a replay is refused and the stored report stays.
    let mut other = crate::hardware::tests::sample_report();
    other["memory"]["bytes"] = 1.into();
    let r = post(&s, "127.0.0.10", &t0, &serde_json::to_vec(&other).unwrap()).await;
    assert_eq!(r.status, 403);
    assert_eq!(s.plane.inspections.get(KEY).unwrap(), stored);
    assert!(
        script(&s, "127.0.0.10", "52-54-00-00-00-10")
            .await
            .contains("/images/testnode/")
    );

    // `beowulf inspect` (a request file) sends it back to the inspector; node-1 was never inspected.
    InspectionStore::request(state.path(), KEY).unwrap();
    assert!(
        script(&s, "127.0.0.10", "52-54-00-00-00-10")
            .await
            .contains("/images/inspector/")
    );
    let page = curl("127.0.0.1", format!("{}/", base(&s)), &[]).await;
    let page = String::from_utf8(page.body).unwrap();
    assert!(page.contains("x86_64, 2 sockets/4 cores/4 threads, 768 MiB, 2 disks (1 nvme), 1 NIC, 1 GPU, 1 InfiniBand (inspection requested)"), "{page}");
    assert!(
        page.contains("not inspected yet: next boot inspects"),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_inspection_image_hosts_boot_their_own() {
    let s = start().await;
    let script = script(&s, "127.0.0.10", "52-54-00-00-00-10").await;
    assert!(script.contains("/images/testnode/"), "{script}");
    // The inspection endpoint still needs a live token; a script's token is one, and the report is kept.
    let r = post(&s, "127.0.0.10", &token_from(script.as_bytes()), &report()).await;
    assert_eq!(r.status, 200);
    assert!(s.plane.inspections.get(KEY).is_some());
}
