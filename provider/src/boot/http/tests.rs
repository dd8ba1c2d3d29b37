//! The HTTP server on loopback, driven by curl (an independent client). Hosts get addresses in 127.0.0.0/8 so
//! curl `--interface` can present each host's source address.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;

use super::*;
use crate::boot::directory::DirectoryHandle;
use crate::boot::metrics::BootMetrics;

const USER_DATA_0: &str = "#cloud-config\nruncmd: [\"echo node-0 secret 7f3a\"]\n";

fn inventory_text() -> String {
    format!(
        r##"networks:
  - name: lo
    subnet: 127.0.0.0/8
    bootServer: 127.0.0.1
images:
  - name: testnode
    kernel: {{ path: vmlinuz }}
    initrds: [{{ path: initrd.gz }}]
    rootfs: {{ path: rootfs.img }}
    cmdline: "console=ttyS0 BOOTIF={{{{ bootif }}}} root=live:{{{{ rootfs_url }}}} ds=nocloud;s={{{{ nocloud_url }}}}"
  - name: inspector
    kernel: {{ path: vmlinuz }}
    initrds: [{{ path: initrd.gz }}]
    cmdline: "console=ttyS0 BOOTIF={{{{ bootif }}}} beowulf.inspect={{{{ inspection_url }}}}"
hosts:
  - name: node-0
    mac: 52:54:00:00:00:10
    ip: 127.0.0.10
    image: testnode
    userData: {ud}
    ignition: '{{"ignition": {{"version": "3.4.0"}}}}'
  - name: node-1
    mac: 52:54:00:00:00:11
    ip: 127.0.0.11
    image: testnode
    userData: "#cloud-config\n{{}}\n"
"##,
        ud = serde_json::to_string(USER_DATA_0).unwrap()
    )
}

struct Server {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    port: u16,
    plane: Arc<BootPlane>,
}

async fn start() -> Server {
    start_with("", None).await
}

/// A server on `inventory_text()` followed by `extra` (more top-level keys), keeping inspection reports in
/// `store` (memory only without).
async fn start_with(
    extra: &str,
    store: Option<crate::boot::inspection::InspectionStore>,
) -> Server {
    start_on(inventory_text() + extra, store).await
}

/// A server on the inventory `text`.
async fn start_on(text: String, store: Option<crate::boot::inspection::InspectionStore>) -> Server {
    let d = tempfile::tempdir().unwrap();
    // A kernel-sized pseudo-random file, so ranges at odd offsets are meaningful.
    let mut big = Vec::with_capacity(3 << 20);
    let mut x: u32 = 12345;
    for _ in 0..(3 << 20) {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        big.push((x >> 16) as u8);
    }
    std::fs::write(d.path().join("vmlinuz"), &big).unwrap();
    std::fs::write(d.path().join("initrd.gz"), b"initrd").unwrap();
    std::fs::write(d.path().join("rootfs.img"), b"rootfs").unwrap();
    let path = d.path().join("hosts.yaml");
    std::fs::write(&path, text).unwrap();
    let inv = crate::inventory::Inventory::load(&path).unwrap();
    let mut registry = Registry::default();
    let metrics = BootMetrics::register(&mut registry);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut plane = BootPlane::new(
        Arc::new(DirectoryHandle::new(inv.directory)),
        Duration::from_secs(600),
        port,
        metrics,
    );
    if let Some(store) = store {
        plane = plane.with_inspections(store);
    }
    let plane = Arc::new(plane);
    let p = plane.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router(p, Arc::new(registry)).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    Server {
        dir: d.path().to_path_buf(),
        _dir: d,
        port,
        plane,
    }
}

struct Reply {
    status: u16,
    body: Vec<u8>,
}

/// curl from `from` (a source address), returning status and body.
async fn curl(from: &str, url: String, extra: &[&str]) -> Reply {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--interface",
        from,
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
    ])
    .args(extra)
    .arg(&url);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("curl runs"))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut body = out.stdout;
    let nl = body.iter().rposition(|&b| b == b'\n').unwrap();
    let status = std::str::from_utf8(&body[nl + 1..])
        .unwrap()
        .parse()
        .unwrap();
    body.truncate(nl);
    Reply { status, body }
}

fn token_from(script: &[u8]) -> String {
    let s = std::str::from_utf8(script).unwrap();
    let i = s.find("/nocloud/").expect("script has the seed URL") + "/nocloud/".len();
    s[i..i + 64].to_string()
}

fn base(s: &Server) -> String {
    format!("http://127.0.0.1:{}", s.port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_only_to_the_reserved_address_with_its_mac() {
    let s = start().await;
    let url = format!("{}/boot/52-54-00-00-00-10.ipxe", base(&s));
    let ok = curl("127.0.0.10", url.clone(), &[]).await;
    assert_eq!(ok.status, 200);
    let script = String::from_utf8(ok.body).unwrap();
    assert!(script.starts_with("#!ipxe\n"), "{script}");
    assert!(script.contains(&format!(
        "kernel http://127.0.0.1:{}/images/testnode/vmlinuz initrd=initrd.gz console=ttyS0 BOOTIF=01-52-54-00-00-00-10 root=live:http://127.0.0.1:{}/images/testnode/rootfs.img ds=nocloud;s=http://127.0.0.1:{}/nocloud/",
        s.port, s.port, s.port
    )), "{script}");
    // Another host's address, an address with no reservation, or a MAC that is not the address's: 403.
    for from in ["127.0.0.11", "127.0.0.99"] {
        let r = curl(from, url.clone(), &[]).await;
        assert_eq!(r.status, 403, "from {from}");
        assert!(!String::from_utf8_lossy(&r.body).contains("ipxe"));
    }
    let r = curl(
        "127.0.0.10",
        format!("{}/boot/52-54-00-00-00-11.ipxe", base(&s)),
        &[],
    )
    .await;
    assert_eq!(r.status, 403);
    let r = curl(
        "127.0.0.10",
        format!("{}/boot/not-a-mac.ipxe", base(&s)),
        &[],
    )
    .await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nocloud_needs_the_hosts_own_live_token() {
    let s = start().await;
    let b = base(&s);
    let script = curl(
        "127.0.0.10",
        format!("{b}/boot/52-54-00-00-00-10.ipxe"),
        &[],
    )
    .await;
    let token = token_from(&script.body);

    let ud = curl("127.0.0.10", format!("{b}/nocloud/{token}/user-data"), &[]).await;
    assert_eq!(ud.status, 200);
    assert_eq!(ud.body, USER_DATA_0.as_bytes());
    let md = curl("127.0.0.10", format!("{b}/nocloud/{token}/meta-data"), &[]).await;
    let md = String::from_utf8(md.body).unwrap();
    // Parsed as cloud-init does (YAML): the keys the cluster templates' jinja reads must be there.
    let meta: std::collections::BTreeMap<String, String> = serde_saphyr::from_str(&md).unwrap();
    assert_eq!(meta["local-hostname"], "node-0", "{md}");
    assert_eq!(meta["provider_id"], "beowulf://standalone/node-0", "{md}");
    assert_eq!(meta["provider-id"], meta["provider_id"]);
    assert!(
        meta["instance-id"].starts_with("standalone-node-0-"),
        "{md}"
    );
    let vd = curl(
        "127.0.0.10",
        format!("{b}/nocloud/{token}/vendor-data"),
        &[],
    )
    .await;
    let vd = String::from_utf8(vd.body).unwrap();
    assert!(vd.contains(&format!("url: {b}/callback/{token}")), "{vd}");
    let nc = curl(
        "127.0.0.10",
        format!("{b}/nocloud/{token}/network-config"),
        &[],
    )
    .await;
    assert!(
        String::from_utf8(nc.body)
            .unwrap()
            .contains("macaddress: \"52:54:00:00:00:10\"")
    );
    assert_eq!(
        curl("127.0.0.10", format!("{b}/nocloud/{token}/other"), &[])
            .await
            .status,
        404
    );
    let ign = curl("127.0.0.10", format!("{b}/ignition/{token}"), &[]).await;
    assert_eq!(
        (ign.status, ign.body.as_slice()),
        (200, &br#"{"ignition": {"version": "3.4.0"}}"#[..])
    );
    assert_eq!(
        curl("127.0.0.11", format!("{b}/ignition/{token}"), &[])
            .await
            .status,
        403
    );

    // node-1 presenting node-0's token, garbage, and a token one digit off: 403 and no data.
    // (The last digit changed: `0`, or `1` when it already is `0`; always changing it to `0` failed 1 run in 16.)
    let last = if token.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &token[..63]);
    for (from, t) in [
        ("127.0.0.11", token.as_str()),
        ("127.0.0.10", "garbage"),
        ("127.0.0.10", wrong.as_str()),
    ] {
        let r = curl(from, format!("{b}/nocloud/{t}/user-data"), &[]).await;
        assert_eq!(r.status, 403, "{from}");
        assert_eq!(r.body, b"forbidden\n");
    }
    assert_eq!(
        curl("127.0.0.11", format!("{b}/callback/{token}"), &[])
            .await
            .status,
        403
    );

    // The callback (cloud-init phone_home form) completes the boot and consumes the token.
    let cb = curl(
        "127.0.0.10",
        format!("{b}/callback/{token}"),
        &[
            "-d",
            "instance_id=i-1&hostname=node-0&pub_key_ed25519=ssh-ed25519+AAAA",
        ],
    )
    .await;
    assert_eq!(cb.status, 200);
    for item in ["user-data", "meta-data"] {
        let r = curl("127.0.0.10", format!("{b}/nocloud/{token}/{item}"), &[]).await;
        assert_eq!(r.status, 403, "{item} after completion");
    }
    assert_eq!(
        curl("127.0.0.10", format!("{b}/callback/{token}"), &[])
            .await
            .status,
        403
    );

    // A new boot gets a new token; the old one stays dead.
    let again = curl(
        "127.0.0.10",
        format!("{b}/boot/52-54-00-00-00-10.ipxe"),
        &[],
    )
    .await;
    let t2 = token_from(&again.body);
    assert_ne!(t2, token);
    assert_eq!(
        curl(
            "127.0.0.10",
            format!("{b}/nocloud/{t2}/user-data"),
            &["-X", "GET"]
        )
        .await
        .status,
        200
    );

    // The operator's views: the boot recorded, the callback's report, metrics.
    let hosts: serde_json::Value =
        serde_json::from_slice(&curl("127.0.0.1", format!("{b}/api/hosts"), &[]).await.body)
            .unwrap();
    let n0 = &hosts[0];
    assert_eq!(n0["name"], "node-0");
    assert_eq!(n0["boot"], 2, "{n0}");
    assert_eq!(n0["state"], "booting");
    let metrics =
        String::from_utf8(curl("127.0.0.1", format!("{b}/metrics"), &[]).await.body).unwrap();
    assert!(
        metrics.contains("beowulf_boot_phase_total{phase=\"callback\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("beowulf_boot_token_rejections_total{reason=\"wrong-host\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("beowulf_boot_token_rejections_total{reason=\"unknown\"}"),
        "{metrics}"
    );
    let page = String::from_utf8(curl("127.0.0.1", format!("{b}/"), &[]).await.body).unwrap();
    assert!(
        page.contains("<a href=\"/hosts/node-0\">node-0</a>")
            && page.contains("http-equiv=\"refresh\""),
        "{page}"
    );
    let host_page = String::from_utf8(
        curl("127.0.0.1", format!("{b}/hosts/node-0"), &[])
            .await
            .body,
    )
    .unwrap();
    assert!(host_page.contains("<h2>This boot</h2>"), "{host_page}");
    assert!(host_page.contains("<td>metadata</td>"), "{host_page}");
    // Secrets are not on the operator's pages.
    for text in [&hosts.to_string(), &metrics, &page, &host_page] {
        assert!(!text.contains(&token) && !text.contains(&t2) && !text.contains("secret 7f3a"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_files_support_head_and_byte_identical_ranges() {
    let s = start().await;
    let url = format!("{}/images/testnode/vmlinuz", base(&s));
    let file = std::fs::read(Path::new(&s.dir).join("vmlinuz")).unwrap();
    for (from, to) in [
        (0usize, 0usize),
        (1, 4096),
        (1_000_003, 2_500_000),
        (file.len() - 10, file.len() - 1),
    ] {
        let r = curl("127.0.0.10", url.clone(), &["-r", &format!("{from}-{to}")]).await;
        assert_eq!(r.status, 206);
        assert_eq!(r.body, &file[from..=to], "range {from}-{to}");
    }
    let whole = curl("127.0.0.10", url.clone(), &[]).await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, file);
    let head = curl("127.0.0.10", url.clone(), &["-I"]).await;
    let head = String::from_utf8(head.body).unwrap().to_ascii_lowercase();
    assert!(
        head.contains(&format!("content-length: {}", file.len())),
        "{head}"
    );
    assert!(head.contains("accept-ranges: bytes"), "{head}");
    // Unknown files, images and escapes are 404, not a file from elsewhere.
    for bad in [
        "/images/testnode/hosts.yaml",
        "/images/nope/vmlinuz",
        "/images/testnode/..%2Fhosts.yaml",
    ] {
        assert_eq!(
            curl("127.0.0.10", format!("{}{bad}", base(&s)), &[])
                .await
                .status,
            404,
            "{bad}"
        );
    }
    // The GET recorded the kernel phase for the host at that address.
    let rec = s
        .plane
        .boot_record(&"52:54:00:00:00:10".parse().unwrap())
        .unwrap();
    assert!(rec.phases.contains_key(&Phase::Kernel));
    assert!(
        s.plane
            .boot_record(&"52:54:00:00:00:11".parse().unwrap())
            .is_none()
    );
}

/// curl with the response head: status, head, body.
async fn curl_head(url: String, extra: &[&str]) -> (u16, String, Vec<u8>) {
    // `-I` already prints the head as the output.
    let mut args = if extra.contains(&"-I") {
        vec![]
    } else {
        vec!["-D", "-"]
    };
    args.extend_from_slice(extra);
    let r = curl("127.0.0.10", url, &args).await;
    let split = r
        .body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&r.body[..split]).into_owned();
    (r.status, head, r.body[split + 4..].to_vec())
}

fn header_of<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_file_ranges_at_the_edges_and_refused_ranges() {
    let s = start().await;
    let url = format!("{}/images/testnode/vmlinuz", base(&s));
    let file = std::fs::read(Path::new(&s.dir).join("vmlinuz")).unwrap();
    let n = file.len();
    // Suffix, open-ended, and an end past the file (clamped to the last byte).
    for (spec, from, to) in [
        ("-500".to_string(), n - 500, n - 1),
        (format!("{}-", n - 10), n - 10, n - 1),
        (format!("{}-{}", n - 3, n + 1_000_000), n - 3, n - 1),
        (format!("{}-{}", n - 1, n - 1), n - 1, n - 1),
    ] {
        let (status, head, body) = curl_head(url.clone(), &["-r", &spec]).await;
        assert_eq!(status, 206, "{spec}");
        assert_eq!(
            header_of(&head, "content-range"),
            Some(format!("bytes {from}-{to}/{n}").as_str()),
            "{spec}"
        );
        assert_eq!(body, &file[from..=to], "{spec}");
    }
    // Past the end, several ranges, garbage: 416 naming the length, no bytes of the file.
    for spec in [
        format!("bytes={n}-"),
        "bytes=0-1,5-6".to_string(),
        "bytes=abc".to_string(),
        "bytes=10-5".to_string(),
    ] {
        let (status, head, body) = curl_head(url.clone(), &["-H", &format!("Range: {spec}")]).await;
        assert_eq!(status, 416, "{spec}");
        assert_eq!(
            header_of(&head, "content-range"),
            Some(format!("bytes */{n}").as_str())
        );
        assert!(body.is_empty(), "{spec}");
    }
    // A unit other than bytes is ignored (RFC 9110 §14.2): the whole file.
    let (status, _, body) = curl_head(url.clone(), &["-H", "Range: items=0-1"]).await;
    assert_eq!((status, body.len()), (200, n));
    // HEAD of a range: the range's head, no body.
    let (status, head, body) = curl_head(url.clone(), &["-I", "-r", "100-199"]).await;
    assert_eq!(status, 206);
    assert_eq!(header_of(&head, "content-length"), Some("100"));
    assert_eq!(
        header_of(&head, "content-range"),
        Some(format!("bytes 100-199/{n}").as_str())
    );
    assert!(body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_files_answer_conditional_requests() {
    let s = start().await;
    let url = format!("{}/images/testnode/vmlinuz", base(&s));
    let file = std::fs::read(Path::new(&s.dir).join("vmlinuz")).unwrap();
    let (status, head, body) = curl_head(url.clone(), &[]).await;
    assert_eq!((status, body.len()), (200, file.len()));
    let (etag, modified) = (
        header_of(&head, "etag").unwrap().to_string(),
        header_of(&head, "last-modified").unwrap().to_string(),
    );
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    let cond = |h: String| {
        let url = url.clone();
        async move { curl_head(url, &["-H", &h]).await }
    };
    // Unchanged since the client's copy: 304 with the validators and no body.
    for h in [
        format!("If-None-Match: {etag}"),
        format!("If-None-Match: \"x\", W/{etag}"),
        format!("If-Modified-Since: {modified}"),
    ] {
        let (status, head, body) = cond(h.clone()).await;
        assert_eq!(status, 304, "{h}");
        assert_eq!(header_of(&head, "etag"), Some(etag.as_str()), "{h}");
        assert!(body.is_empty(), "{h}");
    }
    // Another tag: the file.
    let (status, _, body) = cond("If-None-Match: \"other\"".into()).await;
    assert_eq!((status, body.as_slice()), (200, file.as_slice()));
    // Modified since a date long ago: 412 for If-Unmodified-Since, the file for If-Modified-Since.
    let (status, _, body) = cond("If-Unmodified-Since: Mon, 01 Jan 1990 00:00:00 GMT".into()).await;
    assert_eq!((status, body.len()), (412, 0));
    let (status, _, body) = cond("If-Modified-Since: Mon, 01 Jan 1990 00:00:00 GMT".into()).await;
    assert_eq!((status, body.len()), (200, file.len()));
    // If-Range: the range while the validator matches, the whole file once it does not.
    for (validator, want) in [
        (etag.clone(), 206),
        (modified.clone(), 206),
        ("\"stale\"".to_string(), 200),
        ("Mon, 01 Jan 1990 00:00:00 GMT".to_string(), 200),
    ] {
        let (status, _, body) = curl_head(
            url.clone(),
            &["-r", "10-19", "-H", &format!("If-Range: {validator}")],
        )
        .await;
        assert_eq!(status, want, "{validator}");
        let expect = if want == 206 {
            &file[10..20]
        } else {
            &file[..]
        };
        assert_eq!(body, expect, "{validator}");
    }
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Starts a raw GET of `path`, reads the head and the first `first` body bytes, then leaves the rest unread
/// so the server is mid-response. Returns the stream, Content-Length and the bytes read.
fn begin_get(port: u16, path: &str, first: usize) -> (std::net::TcpStream, usize, Vec<u8>) {
    use std::io::{Read as _, Write as _};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let (head_end, length) = loop {
        let k = c.read(&mut buf).unwrap();
        assert!(k > 0, "connection closed before the head");
        got.extend_from_slice(&buf[..k]);
        if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..p]).to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            let len = header_of(&head, "content-length").unwrap().parse().unwrap();
            break (p + 4, len);
        }
    };
    let mut body = got.split_off(head_end);
    while body.len() < first {
        let k = c.read(&mut buf).unwrap();
        assert!(k > 0);
        body.extend_from_slice(&buf[..k]);
    }
    (c, length, body)
}

/// Reads until the server closes the connection or the response is complete.
fn finish(c: &mut std::net::TcpStream, body: &mut Vec<u8>, length: usize) {
    use std::io::Read as _;
    let mut buf = vec![0u8; 256 * 1024];
    while body.len() < length {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => body.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the body: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_files_changed_under_a_download() {
    let s = start().await;
    let path = s.dir.join("rootfs.img");
    // Larger than what loopback socket buffers hold, so the server is mid-file when the file changes.
    let old = pseudo_random(64 << 20, 7);
    std::fs::write(&path, &old).unwrap();
    let port = s.port;

    // Replaced by rename (how an image should be updated): the started download still gets the old file.
    let (p2, old2) = (path.clone(), old.clone());
    tokio::task::spawn_blocking(move || {
        let (mut c, length, mut body) = begin_get(port, "/images/testnode/rootfs.img", 1 << 20);
        assert_eq!(length, old2.len());
        let new = p2.with_extension("new");
        std::fs::write(&new, pseudo_random(1 << 20, 9)).unwrap();
        std::fs::rename(&new, &p2).unwrap();
        finish(&mut c, &mut body, length);
        assert!(body == old2, "the old file, complete");
        std::fs::write(&p2, &old2).unwrap();
    })
    .await
    .unwrap();

    // Truncated in place (`cp` over it): the response ends early with the bytes it had, the server lives on.
    let (p2, old2) = (path.clone(), old.clone());
    tokio::task::spawn_blocking(move || {
        let (mut c, length, mut body) = begin_get(port, "/images/testnode/rootfs.img", 1 << 20);
        assert_eq!(length, old2.len());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p2)
            .unwrap()
            .set_len(4 << 20)
            .unwrap();
        finish(&mut c, &mut body, length);
        assert!(body.len() < length, "a short body, {} bytes", body.len());
        assert!(body == old2[..body.len()], "only the file's own bytes");
    })
    .await
    .unwrap();
    let r = curl(
        "127.0.0.10",
        format!("{}/images/testnode/rootfs.img", base(&s)),
        &[],
    )
    .await;
    assert_eq!((r.status, r.body.as_slice()), (200, &old[..4 << 20]));
}

mod inspection;
mod local_disks;
