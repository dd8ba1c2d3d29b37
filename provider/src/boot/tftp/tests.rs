//! TFTP against real clients (atftp, curl) with byte-for-byte checks, hostile requests, and raw-socket
//! scenarios a client program cannot produce on demand (tsize probe, lost window, client that goes away).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use tokio::net::UdpSocket;

use super::packet::{self, ACK, DATA, ERROR, OACK, RRQ};
use super::{TftpConfig, TftpMetrics, TftpServer};
use crate::boot::Phase;
use crate::boot::testdir::{MAC, TestDirectory, lease};

const LOOPBACK_HOST: crate::boot::MacAddr = crate::boot::MacAddr([2, 0, 0, 0, 0, 0x7f]);

struct Fixture {
    _root: tempfile::TempDir,
    _outside: tempfile::TempDir,
    root: std::path::PathBuf,
    addr: SocketAddr,
    metrics: Arc<TftpMetrics>,
    dir: Arc<TestDirectory>,
    task: tokio::task::JoinHandle<()>,
    /// Completes the server's shutdown future (a restart's SIGTERM).
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Deterministic pseudo-random bytes (xorshift), so a failure is reproducible.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

async fn start(tune: impl FnOnce(&mut TftpConfig)) -> Fixture {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"outside the root").unwrap();
    let r = root.path();
    std::fs::write(r.join("big.bin"), random_bytes(3 * 1024 * 1024 + 777, 7)).unwrap();
    std::fs::write(r.join("exact.bin"), random_bytes(512 * 40, 9)).unwrap();
    std::fs::write(r.join("small.txt"), b"hello, firmware\n").unwrap();
    std::fs::create_dir(r.join("efi")).unwrap();
    std::fs::write(r.join("efi/snponly.efi"), random_bytes(70_000, 3)).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), r.join("escape")).unwrap();

    let mut cfg = TftpConfig::new(r);
    cfg.listen = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
    tune(&mut cfg);
    let mut d = TestDirectory::one_host();
    // Loopback is the "host's" address here, so the TFTP phase can be attributed.
    d.leases.push(lease(LOOPBACK_HOST, Ipv4Addr::LOCALHOST));
    let dir = Arc::new(d);
    let server = TftpServer::bind(cfg, dir.clone()).unwrap();
    let addr = server.local_addr().unwrap();
    let metrics = server.metrics();
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        // A dropped sender (the fixture's end) is no shutdown: only `send` is.
        if stop.await.is_err() {
            std::future::pending::<()>().await;
        }
    }));
    Fixture {
        root: r.to_path_buf(),
        _root: root,
        _outside: outside,
        addr,
        metrics,
        dir,
        task,
        shutdown: Some(shutdown),
    }
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs a client program to completion off the runtime (the server runs on it).
async fn run(mut cmd: Command) -> std::process::Output {
    let shown = format!("{cmd:?}");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{shown}: {e} (install it: bash .ci/install)"));
    assert!(
        out.status.success(),
        "{shown} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn atftp(addr: SocketAddr, remote: &str, local: &Path, options: &[&str]) -> Command {
    let mut c = Command::new("timeout");
    c.args(["60", "atftp"]);
    for o in options {
        c.args(["--option", o]);
    }
    c.args(["-g", "-r", remote, "-l"]).arg(local);
    c.args([addr.ip().to_string(), addr.port().to_string()]);
    c
}

/// Byte-for-byte comparison that reports where files differ instead of dumping megabytes.
fn assert_same_file(got: &Path, want: &Path) {
    let (a, b) = (std::fs::read(got).unwrap(), std::fs::read(want).unwrap());
    assert_eq!(a.len(), b.len(), "{} has the wrong length", got.display());
    if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
        panic!(
            "{} differs from {} at byte {i}",
            got.display(),
            want.display()
        );
    }
}

#[tokio::test]
async fn atftp_windowsize_transfer_is_byte_identical() {
    let f = start(|_| {}).await;
    let out = tempfile::tempdir().unwrap();
    // 70 000 bytes in 1468-byte blocks = 48 blocks = 6 windows of 8; atftp's trace shows the negotiation and
    // that it acknowledged once per window (plus ACK 0 for the OACK).
    let local = out.path().join("snponly.efi");
    let mut cmd = atftp(
        f.addr,
        "efi/snponly.efi",
        &local,
        &["blksize 1468", "windowsize 8", "tsize 0"],
    );
    cmd.arg("--trace");
    let trace = run(cmd).await;
    let trace = String::from_utf8_lossy(&trace.stdout).into_owned()
        + &String::from_utf8_lossy(&trace.stderr);
    assert!(
        trace.contains("received OACK <tsize: 70000, windowsize: 8, blksize: 1468"),
        "{trace}"
    );
    assert_eq!(trace.matches("sent ACK").count(), 7, "{trace}");
    assert_same_file(&local, &f.root.join("efi/snponly.efi"));

    // A few MiB of random data.
    let local = out.path().join("big.bin");
    run(atftp(
        f.addr,
        "big.bin",
        &local,
        &["blksize 1468", "windowsize 16"],
    ))
    .await;
    assert_same_file(&local, &f.root.join("big.bin"));
    eventually("transfers counted", || {
        f.metrics.transfers_completed.get() == 2
    })
    .await;
    assert_eq!(f.metrics.bytes_sent.get(), 70_000 + 3 * 1024 * 1024 + 777);
    // The client at 127.0.0.1 is a known host: its TFTP phase is recorded.
    let tftp: Vec<_> = f
        .dir
        .phases()
        .into_iter()
        .filter(|(_, p)| *p == Phase::Tftp)
        .collect();
    assert_eq!(tftp, vec![(LOOPBACK_HOST, Phase::Tftp); 2]);
}

#[tokio::test]
async fn atftp_plain_transfer_with_exact_multiple_of_512() {
    // No options: RFC 1350 lock-step with 512-byte blocks, ending with an empty block.
    let f = start(|_| {}).await;
    let out = tempfile::tempdir().unwrap();
    let local = out.path().join("exact.bin");
    run(atftp(f.addr, "/exact.bin", &local, &[])).await;
    assert_same_file(&local, &f.root.join("exact.bin"));
}

#[tokio::test]
async fn atftp_block_numbers_roll_over() {
    // 70 000 blocks of 16 bytes: the 16-bit block number wraps past 65535.
    let f = start(|_| {}).await;
    std::fs::write(f.root.join("wrap.bin"), random_bytes(16 * 70_000 + 5, 11)).unwrap();
    let out = tempfile::tempdir().unwrap();
    let local = out.path().join("wrap.bin");
    run(atftp(
        f.addr,
        "wrap.bin",
        &local,
        &["blksize 16", "windowsize 32"],
    ))
    .await;
    assert_same_file(&local, &f.root.join("wrap.bin"));
}

#[tokio::test]
async fn curl_blksize_transfer_is_byte_identical() {
    let f = start(|_| {}).await;
    let out = tempfile::tempdir().unwrap();
    let local = out.path().join("snponly.efi");
    let mut c = Command::new("timeout");
    c.args(["60", "curl", "-sS", "--tftp-blksize", "1468", "-o"])
        .arg(&local);
    c.arg(format!("tftp://{}/efi/snponly.efi", f.addr));
    run(c).await;
    assert_same_file(&local, &f.root.join("efi/snponly.efi"));
}

fn rrq(name: &[u8], mode: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut p = RRQ.to_be_bytes().to_vec();
    p.extend_from_slice(name);
    p.push(0);
    p.extend_from_slice(mode.as_bytes());
    p.push(0);
    for (k, v) in options {
        p.extend_from_slice(k.as_bytes());
        p.push(0);
        p.extend_from_slice(v.as_bytes());
        p.push(0);
    }
    p
}

async fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

async fn recv(sock: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 70_000];
    let (n, from) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf))
        .await
        .expect("no answer from the TFTP server")
        .unwrap();
    buf.truncate(n);
    (buf, from)
}

fn opcode(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[0], p[1]])
}

fn error_code(p: &[u8]) -> u16 {
    assert_eq!(opcode(p), ERROR, "expected an ERROR packet, got {p:?}");
    u16::from_be_bytes([p[2], p[3]])
}

#[tokio::test]
async fn path_escapes_are_refused_without_data() {
    let f = start(|_| {}).await;
    let cases: [(&[u8], u16); 6] = [
        (b"../etc/passwd", 2),
        (b"efi/../../etc/passwd", 2),
        (b"//etc/passwd", 2),
        (b"escape", 2),      // symlink to a file outside the root
        (b"/etc/passwd", 1), // one leading slash means the root: no etc/passwd in it
        (b"missing.bin", 1),
    ];
    for (name, code) in cases {
        let c = client().await;
        c.send_to(&rrq(name, "octet", &[]), f.addr).await.unwrap();
        let (p, _) = recv(&c).await;
        assert_eq!(error_code(&p), code, "{}", String::from_utf8_lossy(name));
    }
    assert_eq!(f.metrics.access_violations.get(), 4);
    assert_eq!(f.metrics.not_found.get(), 2);
    assert_eq!(f.metrics.transfers_started.get(), 0);
    assert_eq!(f.metrics.bytes_sent.get(), 0);
}

#[tokio::test]
async fn bad_requests_get_errors_and_are_counted() {
    let f = start(|_| {}).await;
    let c = client().await;
    // Write request: read-only server.
    let mut wrq = rrq(b"x", "octet", &[]);
    wrq[1] = 2;
    c.send_to(&wrq, f.addr).await.unwrap();
    assert_eq!(error_code(&recv(&c).await.0), 2);
    // netascii is not served.
    c.send_to(&rrq(b"small.txt", "netascii", &[]), f.addr)
        .await
        .unwrap();
    assert_eq!(error_code(&recv(&c).await.0), 4);
    // Not NUL-terminated, unknown opcode, stray ACK.
    for junk in [
        &b"\x00\x01small.txt"[..],
        b"\x00\x09abc\x00",
        b"\x00\x04\x00\x01",
        b"\x01",
    ] {
        c.send_to(junk, f.addr).await.unwrap();
        assert_eq!(error_code(&recv(&c).await.0), 4, "{junk:?}");
    }
    // An oversized request is dropped silently but counted.
    c.send_to(&vec![1u8; 4000], f.addr).await.unwrap();
    eventually("malformed counted", || f.metrics.malformed.get() == 5).await;
    assert_eq!(f.metrics.write_requests.get(), 1);
}

#[tokio::test]
async fn tsize_probe_is_answered_and_its_abort_counted() {
    // EDK2 asks for tsize, reads the OACK and aborts with error 8 before fetching the file for real.
    let f = start(|_| {}).await;
    let c = client().await;
    c.send_to(
        &rrq(
            b"efi/snponly.efi",
            "octet",
            &[("tsize", "0"), ("blksize", "1468")],
        ),
        f.addr,
    )
    .await
    .unwrap();
    let (p, tid) = recv(&c).await;
    assert_ne!(tid, f.addr, "the transfer must use its own port");
    assert_eq!(opcode(&p), OACK);
    assert_eq!(&p[2..], b"tsize\x0070000\x00blksize\x001468\x00");
    c.send_to(
        &packet::error_packet(packet::ErrorCode::OptionNegotiation, "tsize probe"),
        tid,
    )
    .await
    .unwrap();
    eventually("abort counted", || f.metrics.transfers_aborted.get() == 1).await;
    assert_eq!(f.metrics.bytes_sent.get(), 0);
}

#[tokio::test]
async fn lost_window_is_resent_and_silent_client_times_out() {
    let f = start(|c| {
        c.timeout = Duration::from_millis(200);
        c.retries = 2;
    })
    .await;
    let c = client().await;
    c.send_to(
        &rrq(
            b"big.bin",
            "octet",
            &[("blksize", "1024"), ("windowsize", "4")],
        ),
        f.addr,
    )
    .await
    .unwrap();
    let (p, tid) = recv(&c).await;
    assert_eq!(opcode(&p), OACK);
    c.send_to(&[0, 4, 0, 0], tid).await.unwrap();
    // Take the first window and do not acknowledge it: after the timeout it must come again, from block 1.
    let mut firsts = Vec::new();
    for _ in 0..8 {
        let (p, _) = recv(&c).await;
        assert_eq!(opcode(&p), DATA);
        firsts.push(u16::from_be_bytes([p[2], p[3]]));
        assert_eq!(p.len(), 4 + 1024);
    }
    assert_eq!(firsts, vec![1, 2, 3, 4, 1, 2, 3, 4]);
    // Acknowledge up to block 2 only: the next window starts at 3.
    c.send_to(&[0, 4, 0, 2], tid).await.unwrap();
    let (p, _) = recv(&c).await;
    assert_eq!(u16::from_be_bytes([p[2], p[3]]), 3);
    // Then go silent: after the retries the server gives up and says so.
    eventually("timeout counted", || {
        f.metrics.transfers_timed_out.get() == 1
    })
    .await;
    assert!(f.metrics.retransmits.get() >= 2);
    assert_eq!(f.metrics.bytes_sent.get(), 2048);
    // Drain until the final error packet arrives.
    loop {
        let (p, _) = recv(&c).await;
        if opcode(&p) == ERROR {
            break;
        }
    }
}

#[tokio::test]
async fn windowed_transfers_fill_their_own_pool_not_the_loops() {
    let f = start(|c| {
        c.max_transfers = 1;
        c.max_lock_step_transfers = 1;
    })
    .await;
    let a = client().await;
    a.send_to(&rrq(b"big.bin", "octet", &[("windowsize", "4")]), f.addr)
        .await
        .unwrap();
    let (p, _) = recv(&a).await;
    assert_eq!(opcode(&p), OACK);
    // The one thread slot is taken: a second windowed request is dropped ...
    let b = client().await;
    b.send_to(&rrq(b"small.txt", "octet", &[("windowsize", "4")]), f.addr)
        .await
        .unwrap();
    eventually("busy counted", || f.metrics.busy.get() == 1).await;
    // ... while a lock-step one is served on the loops.
    let c = client().await;
    c.send_to(&rrq(b"small.txt", "octet", &[]), f.addr)
        .await
        .unwrap();
    let (p, _) = recv(&c).await;
    assert_eq!(opcode(&p), DATA);
    assert_eq!(&p[4..], b"hello, firmware\n");
    assert_eq!(f.metrics.busy.get(), 1);
}

#[tokio::test]
async fn transfer_limit_drops_requests_until_a_slot_frees() {
    // Both requests are lock-step ones: the loops' pool is the one that fills.
    let f = start(|c| c.max_lock_step_transfers = 1).await;
    let a = client().await;
    a.send_to(&rrq(b"big.bin", "octet", &[("tsize", "0")]), f.addr)
        .await
        .unwrap();
    let (p, a_tid) = recv(&a).await;
    assert_eq!(opcode(&p), OACK);
    // Over the limit: no answer at all (an ERROR would make a PXE ROM give up), only the counter moves.
    let b = client().await;
    b.send_to(&rrq(b"small.txt", "octet", &[]), f.addr)
        .await
        .unwrap();
    eventually("busy counted", || f.metrics.busy.get() == 1).await;
    let mut buf = [0u8; 2048];
    let quiet = tokio::time::timeout(Duration::from_millis(300), b.recv_from(&mut buf)).await;
    assert!(
        quiet.is_err(),
        "a request over the limit must not be answered"
    );
    // The first transfer ends; the client's retransmitted request is then served.
    a.send_to(
        &packet::error_packet(packet::ErrorCode::NotDefined, "done"),
        a_tid,
    )
    .await
    .unwrap();
    eventually("abort counted", || f.metrics.transfers_aborted.get() == 1).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let data = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "retransmitted RRQ never served"
        );
        b.send_to(&rrq(b"small.txt", "octet", &[]), f.addr)
            .await
            .unwrap();
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(200), b.recv_from(&mut buf)).await
        {
            break buf[..n].to_vec();
        }
    };
    assert_eq!(&data[..4], &[0, 3, 0, 1]);
    assert_eq!(&data[4..], b"hello, firmware\n");
}

#[tokio::test]
async fn plain_client_gets_lock_step_512_byte_blocks() {
    let f = start(|_| {}).await;
    let c = client().await;
    c.send_to(&rrq(b"small.txt", "octet", &[]), f.addr)
        .await
        .unwrap();
    let (p, tid) = recv(&c).await;
    assert_eq!(&p[..4], &[0, 3, 0, 1]);
    assert_eq!(&p[4..], b"hello, firmware\n");
    c.send_to(&[0, ACK as u8, 0, 1], tid).await.unwrap();
    eventually("completed", || f.metrics.transfers_completed.get() == 1).await;
    eventually("phase recorded", || {
        f.dir.phases() == vec![(LOOPBACK_HOST, Phase::Tftp)]
    })
    .await;
    assert!(
        f.dir.phases().iter().all(|(m, _)| *m != MAC),
        "phase attributed to the wrong host"
    );
}

proptest! {
    #[test]
    fn malformed_requests_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = packet::parse_request(&bytes);
        let _ = packet::parse_incoming(&bytes);
        let mut with_op = RRQ.to_be_bytes().to_vec();
        with_op.extend_from_slice(&bytes);
        if let Ok(packet::Request::Read(r)) = packet::parse_request(&with_op) {
            let limits = packet::Limits { max_blksize: 1468, max_windowsize: 64, default_timeout: Duration::from_secs(1) };
            let n = packet::negotiate(&r.options, &limits, 1000);
            prop_assert!((8..=1468).contains(&n.blksize));
            prop_assert!((1..=64).contains(&n.windowsize));
            let _ = super::path::confine(Path::new("/srv/tftp"), &r.filename)
                .map(|p| assert!(p.starts_with("/srv/tftp")));
        }
    }
}

/// Hostile datagrams against the live server: it keeps serving afterwards.
#[tokio::test]
async fn server_survives_random_datagrams() {
    let f = start(|_| {}).await;
    let c = client().await;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = proptest::collection::vec(any::<u8>(), 0..700);
    for _ in 0..300 {
        let mut d = strategy.new_tree(&mut runner).unwrap().current();
        if d.len() >= 2 && d[0] == 0 && d[1] == 1 {
            d[1] = 9; // keep it from starting real transfers of random names
        }
        c.send_to(&d, f.addr).await.unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let local = out.path().join("small.txt");
    run(atftp(f.addr, "small.txt", &local, &["blksize 1468"])).await;
    assert_eq!(std::fs::read(&local).unwrap(), b"hello, firmware\n");
    assert!(f.metrics.malformed.get() > 0);
}

/// A client that loses packets: of every window it takes only the first `j` blocks (j pseudo-random, at
/// least 1) and acknowledges those, so the server must slide the window to the block after the ACK and send
/// the rest again, topped up to a full window. Checks every datagram as it arrives (opcode, block number in
/// sequence, one block per datagram) and returns the reassembled file.
async fn lossy_download(addr: SocketAddr, name: &str, blksize: usize, window: usize) -> Vec<u8> {
    let c = client().await;
    let options = [
        ("blksize", blksize.to_string()),
        ("windowsize", window.to_string()),
    ];
    let options: Vec<(&str, &str)> = options.iter().map(|(k, v)| (*k, v.as_str())).collect();
    c.send_to(&rrq(name.as_bytes(), "octet", &options), addr)
        .await
        .unwrap();
    let (p, tid) = recv(&c).await;
    assert_eq!(opcode(&p), OACK);
    c.send_to(&[0, 4, 0, 0], tid).await.unwrap();
    let mut file = Vec::new();
    let mut next: u64 = 1; // the next block the client wants (unwrapped)
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    loop {
        // The server sends a full window, or up to the short block that ends the file.
        let mut got: Vec<Vec<u8>> = Vec::new();
        loop {
            let (p, from) = recv(&c).await;
            assert_eq!(from, tid);
            assert_eq!(opcode(&p), DATA, "{p:?}");
            let number = u16::from_be_bytes([p[2], p[3]]);
            assert_eq!(
                number,
                (next + got.len() as u64) as u16,
                "block out of sequence"
            );
            assert!(p.len() <= 4 + blksize, "more than one block in a datagram");
            let short = p.len() < 4 + blksize;
            got.push(p);
            if short || got.len() == window {
                break;
            }
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let take = 1 + (x as usize) % got.len();
        for p in &got[..take] {
            file.extend_from_slice(&p[4..]);
        }
        next += take as u64;
        let last = (next - 1) as u16;
        c.send_to(&[0, 4, (last >> 8) as u8, last as u8], tid)
            .await
            .unwrap();
        if got[take - 1].len() < 4 + blksize {
            return file;
        }
    }
}

#[tokio::test]
async fn lossy_client_gets_every_block_in_order_across_partial_acks_and_wrap() {
    let f = start(|_| {}).await;
    // 70 000 × 1000 bytes: ends with an empty block inside a window.
    let got = lossy_download(f.addr, "efi/snponly.efi", 1000, 8).await;
    assert_eq!(got, std::fs::read(f.root.join("efi/snponly.efi")).unwrap());
    // 70 001 blocks of 16 bytes: the block number wraps past 65535 while windows slide.
    std::fs::write(f.root.join("wrap.bin"), random_bytes(16 * 70_000 + 5, 13)).unwrap();
    let got = lossy_download(f.addr, "wrap.bin", 16, 32).await;
    assert_eq!(got, std::fs::read(f.root.join("wrap.bin")).unwrap());
    eventually("both completed", || {
        f.metrics.transfers_completed.get() == 2
    })
    .await;
    assert_eq!(f.metrics.bytes_sent.get(), 70_000 + 16 * 70_000 + 5);
    assert_eq!(
        f.metrics.retransmits.get(),
        0,
        "partial ACKs are not timeouts"
    );
}

/// Runs one windowed transfer of `data` (window 4) on a loopback socket pair, acknowledging every window in
/// full; returns the datagrams the client received and whether the transfer still used GSO at the end.
fn windowed_transfer(data: &[u8], blksize: usize) -> (Vec<Vec<u8>>, bool) {
    use std::sync::atomic::AtomicBool;
    let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    server.connect(client.local_addr().unwrap()).unwrap();
    client.connect(server.local_addr().unwrap()).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let metrics = TftpMetrics::default();
    let stopping = AtomicBool::new(false);
    let window = 4;
    std::thread::scope(|s| {
        let sender = s.spawn(|| {
            let mut t = super::transfer::Sender::new(
                std::io::Cursor::new(data),
                packet::Negotiated {
                    blksize,
                    windowsize: window as u16,
                    timeout: Duration::from_secs(5),
                    oack: Vec::new(),
                },
                1,
            );
            let bytes =
                super::transfer::run_blocking(&mut t, &server, &metrics, &stopping).unwrap();
            (bytes, t.uses_gso())
        });
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut buf = [0u8; 70_000];
        loop {
            let mut short = false;
            for _ in 0..window {
                let n = client.recv(&mut buf).unwrap();
                got.push(buf[..n].to_vec());
                short = n < 4 + blksize;
                if short {
                    break;
                }
            }
            let last = &got[got.len() - 1];
            client.send(&[0, 4, last[2], last[3]]).unwrap();
            if short {
                break;
            }
        }
        let (bytes, gso) = sender.join().unwrap();
        assert_eq!(bytes, data.len() as u64);
        (got, gso)
    })
}

fn data_packets(data: &[u8], blksize: usize) -> Vec<Vec<u8>> {
    data.chunks(blksize)
        .enumerate()
        .map(|(i, c)| [&[0, 3, 0, i as u8 + 1][..], c].concat())
        .collect()
}

#[test]
fn windows_leave_as_one_datagram_per_block_with_gso() {
    let data = random_bytes(10 * 512 + 100, 5);
    let (got, gso_kept) = windowed_transfer(&data, 512);
    assert!(gso_kept, "loopback takes GSO sends (Linux 4.18 and later)");
    assert_eq!(got, data_packets(&data, 512));
}

/// A path whose MTU is below the block size (an overlay network, say): the kernel refuses GSO sends there
/// (it cannot fragment segments), so the transfer falls back to one datagram per block, which IP fragments.
/// Runs in a network namespace of its own whose loopback has MTU 1280 (needs root, like the DHCP tests).
#[test]
fn gso_refused_below_the_block_size_falls_back_to_single_datagrams() {
    let name = format!("bw-tftp-mtu-{}", std::process::id());
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ip {args:?} failed (this test needs root and iproute2): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ip(&["netns", "add", &name]);
    struct Del(String);
    impl Drop for Del {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _del = Del(name.clone());
    ip(&["-n", &name, "link", "set", "lo", "mtu", "1280", "up"]);
    let data = random_bytes(9 * 1468 + 1, 6);
    let path = format!("/var/run/netns/{name}");
    let (got, gso_kept) = std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        windowed_transfer(&data, 1468)
    })
    .join()
    .unwrap();
    assert!(
        !gso_kept,
        "the GSO send should have been refused (EMSGSIZE)"
    );
    assert_eq!(got, data_packets(&random_bytes(9 * 1468 + 1, 6), 1468));
}

#[tokio::test]
async fn transfers_stop_when_the_server_stops() {
    // Retransmits every 200 ms for a long time unless the server's end stops the transfer thread.
    let f = start(|c| {
        c.timeout = Duration::from_millis(200);
        c.retries = 1000;
    })
    .await;
    let c = client().await;
    c.send_to(&rrq(b"big.bin", "octet", &[("windowsize", "2")]), f.addr)
        .await
        .unwrap();
    let (p, _) = recv(&c).await;
    assert_eq!(opcode(&p), OACK);
    // No ACK: the OACK comes again and again while the server runs.
    let (p, _) = recv(&c).await;
    assert_eq!(opcode(&p), OACK);
    f.task.abort();
    let stopped = std::time::Instant::now();
    let mut buf = [0u8; 2048];
    // Quiet for 3 retransmission intervals = stopped; it must happen within 3 s.
    while tokio::time::timeout(Duration::from_millis(600), c.recv_from(&mut buf))
        .await
        .is_ok()
    {
        assert!(
            stopped.elapsed() < Duration::from_secs(3),
            "the transfer kept retransmitting after the server stopped"
        );
    }
    assert_eq!(f.metrics.transfers_timed_out.get(), 0);
}

/// Starts a lock-step download of big.bin (blksize 1468, one block a window) and returns the client, the
/// transfer's TID and block 1.
async fn lock_step_start(f: &Fixture) -> (UdpSocket, SocketAddr, Vec<u8>) {
    let c = client().await;
    c.send_to(&rrq(b"big.bin", "octet", &[("blksize", "1468")]), f.addr)
        .await
        .unwrap();
    let (p, tid) = recv(&c).await;
    assert_eq!(opcode(&p), OACK);
    c.send_to(&[0, 4, 0, 0], tid).await.unwrap();
    let (p, from) = recv(&c).await;
    assert_eq!((from, opcode(&p)), (tid, DATA));
    (c, tid, p[4..].to_vec())
}

#[tokio::test]
async fn a_transfer_in_flight_at_shutdown_finishes_and_new_requests_are_not_taken() {
    let mut f = start(|_| {}).await;
    let (c, tid, mut file) = lock_step_start(&f).await;
    f.shutdown.take().unwrap().send(()).unwrap();
    // The server port takes no new request now.
    let late = client().await;
    late.send_to(&rrq(b"small.txt", "octet", &[]), f.addr)
        .await
        .unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), late.recv_from(&mut buf))
            .await
            .is_err(),
        "a request after the shutdown was answered"
    );
    assert!(
        !f.task.is_finished(),
        "the server stopped with a transfer in flight"
    );
    // The transfer in flight goes on to the end, byte for byte.
    let mut block: u16 = 1;
    loop {
        c.send_to(&[0, 4, (block >> 8) as u8, block as u8], tid)
            .await
            .unwrap();
        if file.len() % 1468 != 0 {
            break;
        }
        let (p, from) = recv(&c).await;
        assert_eq!((from, opcode(&p)), (tid, DATA), "{p:?}");
        if u16::from_be_bytes([p[2], p[3]]) == block {
            // Sent again while the client waited above.
            continue;
        }
        block = block.wrapping_add(1);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), block);
        file.extend_from_slice(&p[4..]);
        if p.len() < 4 + 1468 {
            c.send_to(&[0, 4, (block >> 8) as u8, block as u8], tid)
                .await
                .unwrap();
            break;
        }
    }
    assert_eq!(file, std::fs::read(f.root.join("big.bin")).unwrap());
    eventually("the server to stop after its last transfer", || {
        f.task.is_finished()
    })
    .await;
    assert_eq!(f.metrics.transfers_completed.get(), 1);
}

#[tokio::test]
async fn transfers_still_running_when_the_drain_ends_are_cut() {
    let mut f = start(|c| {
        c.drain = Duration::from_millis(300);
        c.timeout = Duration::from_millis(200);
        c.retries = 1000;
    })
    .await;
    // A client that stops acknowledging: the transfer would retransmit for minutes.
    let (_c, _tid, _) = lock_step_start(&f).await;
    let stopped = std::time::Instant::now();
    f.shutdown.take().unwrap().send(()).unwrap();
    eventually("the server to stop", || f.task.is_finished()).await;
    assert!(
        stopped.elapsed() >= Duration::from_millis(300),
        "the server did not wait for its transfer"
    );
    assert!(stopped.elapsed() < Duration::from_secs(3));
    assert_eq!(f.metrics.transfers_completed.get(), 0);
}

/// Threads of this process with the given name (`/proc/self/task/*/comm`).
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

/// A lock-step download (no options: what a PXE ROM does, 512-byte blocks) of `name`, acknowledging every block.
async fn lock_step_download(addr: SocketAddr, name: &str) -> Vec<u8> {
    let c = client().await;
    c.send_to(&rrq(name.as_bytes(), "octet", &[]), addr)
        .await
        .unwrap();
    let mut file = Vec::new();
    let mut want: u16 = 1;
    loop {
        let (p, tid) = recv(&c).await;
        assert_eq!(opcode(&p), DATA, "{p:?}");
        let number = u16::from_be_bytes([p[2], p[3]]);
        if number == want {
            file.extend_from_slice(&p[4..]);
            want = want.wrapping_add(1);
        }
        c.send_to(&[0, 4, p[2], p[3]], tid).await.unwrap();
        if number == want.wrapping_sub(1) && p.len() < 4 + 512 {
            return file;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_step_transfers_share_one_thread_and_a_silent_client_holds_no_one_back() {
    let f = start(|c| {
        c.timeout = Duration::from_millis(300);
        c.retries = 2;
    })
    .await;
    // A client that asks and never acknowledges: its block 1 comes three times (two re-sends), then an ERROR.
    let silent = client().await;
    silent
        .send_to(&rrq(b"exact.bin", "octet", &[]), f.addr)
        .await
        .unwrap();
    // Forty clients at once, each with the 70 000-byte file in 137 lock-step blocks.
    let want = std::fs::read(f.root.join("efi/snponly.efi")).unwrap();
    let threads_before = threads_named("tftp-transfer");
    let downloads: Vec<_> = (0..40)
        .map(|_| tokio::spawn(lock_step_download(f.addr, "efi/snponly.efi")))
        .collect();
    eventually("all forty started", || {
        f.metrics.transfers_started.get() >= 41
    })
    .await;
    assert!(
        threads_named("tftp-transfer") <= threads_before + 2,
        "lock-step transfers run on the loop, not on a thread each"
    );
    // (One per server: other tests' servers run in this process too.)
    assert!(threads_named("tftp-lockstep") >= 1);
    for d in downloads {
        assert_eq!(d.await.unwrap(), want);
    }
    // (A client is done when it sends its last ACK; the server counts the transfer when that arrives.)
    eventually("forty completed", || {
        f.metrics.transfers_completed.get() == 40
    })
    .await;
    let mut blocks = Vec::new();
    loop {
        let (p, _) = recv(&silent).await;
        if opcode(&p) == ERROR {
            break;
        }
        blocks.push(u16::from_be_bytes([p[2], p[3]]));
    }
    assert_eq!(blocks, vec![1, 1, 1]);
    assert_eq!(f.metrics.transfers_timed_out.get(), 1);
    assert_eq!(f.metrics.retransmits.get(), 2);
}
