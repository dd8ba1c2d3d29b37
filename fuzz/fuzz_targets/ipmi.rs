//! Whatever a BMC (or anyone spoofing one) sends back: RMCP/RMCP+ datagrams with and without a session's
//! keys, IPMI responses, ASF pongs, boot flags, cipher suite listings, FRU inventory areas.
//! Invariants beyond "no panic": a datagram that decodes with session keys was authenticated (a
//! one-bit change of it no longer decodes); a FRU image that parses keeps its strings printable.
#![no_main]

use beowulf::bmc::ipmi::crypto::{SessionKeys, Suite};
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
    if let Ok(parsed) = fru::parse(data) {
        let text = format!("{parsed:?}");
        assert!(!text.contains('\u{0}'), "a NUL in a FRU string: {text}");
    }
});
