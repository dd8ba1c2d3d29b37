//! An inspection report as the inspector posts it (any bytes can arrive with a valid token). Invariants: a
//! report that is accepted survives the trip into `BeowulfHost.status.hardware` and back unchanged, and
//! every requirement check over it answers without panicking.
#![no_main]

use beowulf::hardware::Hardware;
use beowulf::hardware::requirements::HardwareRequirements;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(hw) = Hardware::from_report(data) else {
        return;
    };
    let json = serde_json::to_string(&hw).expect("a parsed report serializes");
    let back: Hardware = serde_json::from_str(&json).expect("and reads back");
    assert_eq!(back, hw);
    let _ = hw.summary();
    let _ = HardwareRequirements::default().check(Some(&hw));
});
