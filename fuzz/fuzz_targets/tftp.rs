//! A TFTP datagram on the server port (RRQ with options) or on a transfer's port (ACK/ERROR).
//! Invariants: a requested name never resolves outside the root; negotiated options stay within the
//! server's limits (RFC 2347/2348/7440), and the OACK announces only what was agreed.
#![no_main]

use std::path::Path;
use std::time::Duration;

use beowulf::boot::tftp::packet::{self, Limits, Request};
use beowulf::boot::tftp::path::confine;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = packet::parse_incoming(data);
    let Ok(Request::Read(rrq)) = packet::parse_request(data) else {
        return;
    };
    let root = Path::new("/srv/tftp-root");
    if let Ok(p) = confine(root, &rrq.filename) {
        assert!(
            p.starts_with(root),
            "{:?} left the root as {p:?}",
            rrq.filename
        );
        assert!(
            !p.components().any(|c| c == std::path::Component::ParentDir),
            "{p:?}"
        );
    }
    let limits = Limits {
        max_blksize: 1468,
        max_windowsize: 64,
        default_timeout: Duration::from_secs(3),
    };
    let n = packet::negotiate(&rrq.options, &limits, 1 << 20);
    assert!((8..=1468).contains(&n.blksize), "blksize {}", n.blksize);
    assert!(
        (1..=64).contains(&n.windowsize),
        "windowsize {}",
        n.windowsize
    );
    for (k, _) in &n.oack {
        assert!(
            rrq.options.iter().any(|(o, _)| o.eq_ignore_ascii_case(k)),
            "OACK announces {k}, which was not asked for"
        );
    }
    let _ = packet::oack_packet(&n.oack);
});
