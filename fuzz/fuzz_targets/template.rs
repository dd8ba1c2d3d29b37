//! The Go-template engine csctl renders charts with (charts come from stacks users download): parse and
//! execute any text against a small value tree.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let values = serde_json::json!({
        "Values": {"list": [1, "two", {"three": 3}], "name": "x", "on": true, "map": {"k": "v"}},
        "Release": {"Name": "r", "Namespace": "ns"},
        "Chart": {"Name": "c", "Version": "1.0.0"},
    });
    let _ = csctl::render::render_str(text, &values);
});
