//! The standalone inventory (hand-written YAML). Invariant: parsing either succeeds or names its problems;
//! never a panic, whatever the bytes.
#![no_main]

use std::path::Path;

use beowulf::inventory::Inventory;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(problems) = Inventory::parse(text, Path::new("/nonexistent")) {
        assert!(!problems.is_empty(), "refused without a reason");
    }
});
