//! Whatever a BMC (or anyone spoofing one) sends back: RMCP/RMCP+ datagrams with and without a session's
//! keys, IPMI responses, ASF pongs, boot flags, cipher suite listings, FRU inventory areas, SOL packets and
//! Activate Payload answers.
//! Invariants beyond "no panic": a datagram that decodes with session keys was authenticated (a
//! one-bit change of it no longer decodes); a FRU image that parses keeps its strings printable; a SOL
//! packet round-trips, is acknowledged for its own sequence number and its characters, and is delivered once.
#![no_main]

use beowulf::bmc::ipmi::crypto::{SessionKeys, Suite};
use beowulf::bmc::ipmi::sol::{self, SolPacket, SolState};
use beowulf::bmc::ipmi::{commands, negotiate, packet, ping};
use beowulf::hardware::out_of_band::fru;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = packet::decode(data, None);
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
        assert_eq!(SolPacket::decode(&p.encode()), Ok(p.clone()), "SOL round trip");
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
            assert!(again.data.is_empty(), "a retransmission was delivered twice");
        } else {
            assert!(first.ack.is_none() && first.data.is_empty());
        }
    }
    if let Ok(parsed) = fru::parse(data) {
        let text = format!("{parsed:?}");
        assert!(!text.contains('\u{0}'), "a NUL in a FRU string: {text}");
    }
});
