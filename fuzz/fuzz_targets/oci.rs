//! OCI references (from the command line and from registries' answers) and manifests/indexes fetched from a
//! registry. Invariant: a reference that parses prints as one that parses to the same reference.
#![no_main]

use csctl::oci::manifest::ImageManifest;
use csctl::oci::reference::Reference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(r) = Reference::parse(text)
    {
        let again = Reference::parse(&r.to_string()).expect("a printed reference parses");
        assert_eq!(again, r);
    }
    for ct in [
        None,
        Some("application/vnd.oci.image.manifest.v1+json"),
        Some("application/vnd.oci.image.index.v1+json"),
    ] {
        let _ = ImageManifest::parse(data, ct);
    }
});
