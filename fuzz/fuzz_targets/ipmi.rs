//! Whatever a BMC (or anyone spoofing one) sends back: RMCP/RMCP+ datagrams with and without a session's
//! keys, IPMI responses, ASF pongs, boot flags, cipher suite listings, FRU inventory areas, SOL packets and
//! Activate Payload answers; and the session setup's answers (Open Session response, RAKP messages 2 and 4),
//! as bare payloads and as the payload of a datagram that decodes.
//! Invariants beyond "no panic": a setup answer is refused exactly for a non-zero status, accepted exactly
//! when it is long enough and (Open Session, RAKP 2) for our session, and its fields are the bytes at
//! their offsets, codes as long as the suite's; a RAKP 2 code is taken exactly when it is the password's;
//! a datagram that decodes with session keys was authenticated (a one-bit change of it no longer
//! decodes); a FRU image that parses keeps its strings printable; a SOL
//! packet round-trips, is acknowledged for its own sequence number and its characters, and is delivered once.
#![no_main]

use beowulf::bmc::ipmi::crypto::{Exchange, SessionKeys, Suite, codes_match};
use beowulf::bmc::ipmi::session::{self, Setup};
use beowulf::bmc::ipmi::sol::{self, SolPacket, SolState};
use beowulf::bmc::ipmi::{commands, negotiate, packet, ping};
use beowulf::hardware::out_of_band::fru;
use libfuzzer_sys::fuzz_target;

/// Our session id in the fuzzed session (the seeds carry it: `rmcpplus-open-session` is a real answer).
const SID_M: u32 = 0x0403_0201;

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn session_setup(p: &[u8]) {
    let status = p.get(1).copied();
    match session::parse_open_session(p, SID_M) {
        Setup::Refused(s) => assert!(s != 0 && status == Some(s)),
        Setup::Malformed => assert!(
            status.is_none() || (status == Some(0) && (p.len() < 36 || le32(&p[4..]) != SID_M))
        ),
        Setup::Ok((sid_c, algs)) => {
            assert!(status == Some(0) && p.len() >= 36 && le32(&p[4..]) == SID_M);
            assert_eq!(sid_c, le32(&p[8..]));
            assert_eq!(algs, [p[16], p[24], p[32]]);
            let _ = negotiate::judge(algs, &Suite::ALL);
        }
    }
    for suite in Suite::ALL {
        match session::parse_rakp2(p, SID_M, suite) {
            Setup::Refused(s) => assert!(s != 0 && status == Some(s)),
            Setup::Malformed => assert!(
                status.is_none()
                    || (status == Some(0)
                        && (p.len() < 40 + suite.rakp_len() || le32(&p[4..]) != SID_M))
            ),
            Setup::Ok((rand_c, guid_c, code)) => {
                assert!(status == Some(0) && le32(&p[4..]) == SID_M);
                assert_eq!((&rand_c[..], &guid_c[..]), (&p[8..24], &p[24..40]));
                assert_eq!(code, &p[40..40 + suite.rakp_len()]);
                let ex = Exchange {
                    suite,
                    sid_m: SID_M,
                    sid_c: 0x0102_0304,
                    rand_m: [0x5a; 16],
                    rand_c,
                    guid_c,
                    role: 0x14,
                    username: b"admin",
                };
                let want = ex.rakp2_code(b"password");
                assert_eq!(codes_match(&want, code), want == code);
                let sik = ex.sik(b"password");
                assert_eq!(ex.rakp4_icv(&sik).len(), suite.icv_len());
            }
        }
        match session::parse_rakp4(p, suite) {
            Setup::Refused(s) => assert!(s != 0 && status == Some(s)),
            Setup::Malformed => {
                assert!(status.is_none() || (status == Some(0) && p.len() < 8 + suite.icv_len()))
            }
            Setup::Ok(icv) => {
                assert_eq!(status, Some(0));
                assert_eq!(icv, &p[8..8 + suite.icv_len()]);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    session_setup(data);
    if let Ok(d) = packet::decode(data, None) {
        session_setup(&d.payload);
    }
    for suite in Suite::ALL {
        let keys = SessionKeys {
            suite,
            k1: vec![0x11; 32],
            k2: vec![0x22; 32],
        };
        if packet::decode(data, Some(&keys)).is_ok() && !data.is_empty() {
            let mut flipped = data.to_vec();
            let last = flipped.len() - 1;
            flipped[last] ^= 1;
            assert!(
                packet::decode(&flipped, Some(&keys)).is_err(),
                "a changed datagram still authenticates"
            );
        }
    }
    let _ = packet::decode_response(data);
    let _ = ping::decode_pong(data, data.first().copied().unwrap_or(0));
    let _ = commands::parse_boot_flags(data);
    let _ = commands::parse_fru_area_info(data);
    let _ = commands::parse_read_fru(data, false);
    let _ = commands::parse_read_fru(data, true);
    let _ = negotiate::parse_listing(data);
    let _ = sol::parse_activation(data);
    let _ = sol::parse_instance_holder(data);
    if let Ok(p) = SolPacket::decode(data) {
        assert_eq!(
            SolPacket::decode(&p.encode()),
            Ok(p.clone()),
            "SOL round trip"
        );
        let now = tokio::time::Instant::now();
        let mut state = SolState::new(u16::from(data[2]));
        state.queue(&data[..data.len().min(64)]);
        let _ = state.poll_send(now);
        let first = state.on_packet(&p, now);
        let again = state.on_packet(&p, now);
        if p.seq != 0 && !p.data.is_empty() {
            let ack = first.ack.expect("characters are acknowledged");
            assert_eq!((ack.seq, ack.ack), (0, p.seq));
            assert_eq!(usize::from(ack.accepted), p.data.len().min(255));
            assert_eq!(first.data, p.data);
            assert!(
                again.data.is_empty(),
                "a retransmission was delivered twice"
            );
        } else {
            assert!(first.ack.is_none() && first.data.is_empty());
        }
    }
    if let Ok(parsed) = fru::parse(data) {
        let text = format!("{parsed:?}");
        assert!(!text.contains('\u{0}'), "a NUL in a FRU string: {text}");
    }
});
