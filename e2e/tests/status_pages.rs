//! The operator's pages in a real browser (headless Chromium): the boot plane's router serves a rack of
//! 1,000 hosts whose last boot wave the test lays down (phase times spread over a minute, 900 called back,
//! 100 stuck at the kernel), with one stuck host's console holding a kernel panic and a token. Checked on the
//! DOM Chromium built: the summary, the wave chart (a line per phase with every host counted), one row per
//! host within a time bound, the filters, the host page with its phases, its earlier boot and its console (the panic line,
//! the token redacted; the page's refresh script ran), and no live token anywhere. Screenshots are kept in
//! `target/e2e-screenshots/`.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use beowulf::boot::Phase;
use beowulf::boot::directory::DirectoryHandle;
use beowulf::boot::metrics::BootMetrics;
use beowulf::boot::plane::BootPlane;
use beowulf::console::ConsoleLogs;
use beowulf::inventory::Inventory;
use e2e::require_root_and_peers;
use prometheus_client::registry::Registry;

const HOSTS: u32 = 1000;

fn inventory(dir: &std::path::Path) -> Inventory {
    let mut y = String::from(
        "namespace: pages\nnetworks:\n  - { name: boot, subnet: 10.20.0.0/16, bootServer: 10.20.0.1 }\n\
         images:\n  - name: compute\n    kernel: { url: http://10.20.0.1:8080/vmlinuz }\n    cmdline: console=ttyS0\n\
         hosts:\n",
    );
    for i in 0..HOSTS {
        y.push_str(&format!(
            "  - {{ name: node-{i:04}, mac: \"52:54:00:10:{:02x}:{:02x}\", ip: 10.20.{}.{}, image: compute }}\n",
            i / 256,
            i % 256,
            1 + i / 200,
            10 + i % 200
        ));
    }
    let path = dir.join("hosts.yaml");
    std::fs::write(&path, y).unwrap();
    Inventory::load(&path).unwrap()
}

/// Headless Chromium with a profile of its own (concurrent runs do not share a lock), killed after 60 s.
fn chromium(profile: &std::path::Path) -> Command {
    let mut c = Command::new("timeout");
    c.args([
        "60",
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

fn run_ok(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .expect("chromium runs (bash .ci/install installs it)");
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Chromium's DOM of `url` after its scripts ran for `budget_ms` of virtual time, and how long it took.
fn dom(url: &str, budget_ms: u32, profile: &std::path::Path) -> (String, Duration) {
    let start = Instant::now();
    let out = run_ok(
        chromium(profile)
            .arg(format!("--virtual-time-budget={budget_ms}"))
            .arg("--dump-dom")
            .arg(url),
    );
    (String::from_utf8_lossy(&out).into_owned(), start.elapsed())
}

fn screenshot(url: &str, file: &std::path::Path, profile: &std::path::Path) {
    run_ok(
        chromium(profile)
            .args(["--window-size=1400,1100", "--hide-scrollbars"])
            .arg(format!("--screenshot={}", file.display()))
            .arg(url),
    );
    let png = std::fs::read(file).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}

#[test]
fn the_status_pages_render_a_rack_in_a_browser_and_show_a_failed_hosts_console() {
    require_root_and_peers();
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut registry = Registry::default();
    let metrics = BootMetrics::register(&mut registry);
    let logs = Arc::new(ConsoleLogs::in_memory());
    let hosts = inv.directory.hosts.clone();
    let plane = Arc::new(
        BootPlane::new(
            Arc::new(DirectoryHandle::new(inv.directory)),
            Duration::from_secs(600),
            8080,
            metrics,
        )
        .with_consoles(logs.clone()),
    );

    // The wave: starts spread over 10 s, each host's phases a few seconds apart; every tenth host stuck at
    // its kernel, the others called back.
    let t0 = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60);
    let at = |ms: i64| t0 + jiff::SignedDuration::from_millis(ms);
    // The stuck host booted fine once before this wave.
    for (p, ms) in [
        (Phase::DhcpOffer, -50_000),
        (Phase::Kernel, -48_000),
        (Phase::Callback, -30_000),
    ] {
        plane.phases.record_at(hosts[7].mac, p, at(ms));
    }
    for (i, h) in hosts.iter().enumerate() {
        let i = i as i64;
        let start = i * 10;
        let mut steps = vec![
            (Phase::DhcpOffer, 0),
            (Phase::DhcpAck, 400),
            (Phase::IpxeScript, 900),
            (Phase::Kernel, 1500 + i % 300),
        ];
        if i % 10 != 7 {
            steps.extend([
                (Phase::Initrd, 2500 + i % 500),
                (Phase::Callback, 20_000 + 7 * i),
            ]);
        }
        for (p, ms) in steps {
            plane.phases.record_at(h.mac, p, at(start + ms));
        }
    }
    // A live token, which no page may show.
    let token = plane.start_boot(&hosts[3]);
    let stuck = "node-0007";
    let secret = "c0ffee".repeat(11);
    let log = logs.host(stuck);
    log.write(b"[    0.000000] Linux version 6.1.0 (debian-kernel@lists.debian.org)\r\n");
    log.write(format!("[    0.000000] Command line: console=ttyS0 s=http://10.20.0.1:8080/nocloud/{secret}/\r\n").as_bytes());
    log.write(b"[    1.920000] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\r\n");

    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = beowulf::boot::http::router(plane.clone(), Arc::new(registry));
    rt.spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let base = format!("http://{addr}");
    let profile = dir.path().join("chromium");

    // The rack: every host a row, within a bound that keeps the page usable at 1,000 hosts.
    let (page, took) = dom(&format!("{base}/"), 500, &profile);
    eprintln!("status_pages: / with {HOSTS} hosts built by Chromium in {took:.2?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert_eq!(page.matches("<tr class=\"host\">").count(), HOSTS as usize);
    assert!(
        page.contains("booted 900") && page.contains("booting 100"),
        "{}",
        &page[..2000.min(page.len())]
    );
    assert!(page.contains("at kernel: 100") && page.contains("at callback: 900"));
    for (phase, n) in [
        ("dhcp-offer", 1000),
        ("kernel", 1000),
        ("initrd", 900),
        ("callback", 900),
    ] {
        assert!(
            page.contains(&format!("data-phase=\"{phase}\" data-hosts=\"{n}\"")),
            "{phase}: {n}"
        );
    }
    assert!(page.contains(&format!("<a href=\"/hosts/{stuck}\">{stuck}</a>")));

    // Filters: the stuck ones, then a name.
    let (page, _) = dom(&format!("{base}/?state=booting"), 200, &profile);
    assert_eq!(page.matches("<tr class=\"host\">").count(), 100);
    assert!(page.contains(&format!(">{stuck}</a>")) && !page.contains(">node-0000</a>"));
    let (page, _) = dom(&format!("{base}/?q=node-000&image=compute"), 200, &profile);
    assert_eq!(page.matches("<tr class=\"host\">").count(), 10);

    // The stuck host's page: its phases and its console, refreshed by the page's script from the API.
    let (host, _) = dom(&format!("{base}/hosts/{stuck}"), 3000, &profile);
    assert!(
        host.contains("<td>kernel</td>") && !host.contains("<td>callback</td>"),
        "{host}"
    );
    // Its earlier boot, which did call back.
    assert!(
        host.contains("id=\"history\"")
            && host.contains("<td class=\"booted\">callback</td><td class=\"p\">20.0s</td>"),
        "{host}"
    );
    assert!(
        host.contains("Kernel panic - not syncing: VFS: Unable to mount root fs"),
        "{host}"
    );
    // The panic is its last error, with the time it was captured.
    let last_error = host
        .split_once("id=\"last-error\" class=\"failed\">")
        .and_then(|(_, rest)| rest.split_once("</td>"))
        .map(|(cell, _)| cell)
        .unwrap_or_else(|| panic!("no last error on the page: {host}"));
    assert!(
        last_error.ends_with(
            "Z [    1.920000] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"
        ),
        "{last_error}"
    );
    assert!(
        host.contains("/nocloud/[redacted]/") && !host.contains(&secret),
        "{host}"
    );

    // No live token on any page.
    for text in [&page, &host] {
        assert!(!text.contains(token.expose()));
    }
    let shots = e2e::target_dir().join("e2e-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    screenshot(
        &format!("{base}/"),
        &shots.join("status-rack.png"),
        &profile,
    );
    screenshot(
        &format!("{base}/hosts/{stuck}"),
        &shots.join("status-host.png"),
        &profile,
    );
}
