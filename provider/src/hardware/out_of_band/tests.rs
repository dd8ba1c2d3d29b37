#![allow(clippy::unwrap_used)]

use super::fru::{self, Area, FruError};
use super::*;

/// A field of 8-bit ASCII/Latin-1 (type 11b).
fn ascii(s: &str) -> Vec<u8> {
    let b: Vec<u8> = s.chars().map(|c| c as u8).collect();
    typed(3, &b)
}

fn typed(kind: u8, data: &[u8]) -> Vec<u8> {
    assert!(data.len() < 64);
    let mut v = vec![kind << 6 | data.len() as u8];
    v.extend_from_slice(data);
    v
}

/// An info area: version, length, the fixed bytes, the fields, the end marker, padding, checksum.
fn area(fixed: &[u8], fields: &[Vec<u8>]) -> Vec<u8> {
    let mut a = vec![0x01, 0];
    a.extend_from_slice(fixed);
    for f in fields {
        a.extend_from_slice(f);
    }
    a.push(0xc1);
    while (a.len() + 1) % 8 != 0 {
        a.push(0);
    }
    a[1] = ((a.len() + 1) / 8) as u8;
    let sum = a.iter().fold(0u8, |s, x| s.wrapping_add(*x));
    a.push(sum.wrapping_neg());
    a
}

/// A FRU image with the given areas (chassis, board, product), in that order after the header.
fn image(chassis: Option<Vec<u8>>, board: Option<Vec<u8>>, product: Option<Vec<u8>>) -> Vec<u8> {
    let mut h = vec![0x01, 0, 0, 0, 0, 0, 0];
    let mut body = Vec::new();
    for (slot, a) in [(2, chassis), (3, board), (4, product)] {
        if let Some(a) = a {
            h[slot] = ((8 + body.len()) / 8) as u8;
            body.extend_from_slice(&a);
        }
    }
    let sum = h.iter().fold(0u8, |s, x| s.wrapping_add(*x));
    h.push(sum.wrapping_neg());
    h.extend_from_slice(&body);
    h
}

fn sample() -> Vec<u8> {
    image(
        Some(area(&[23], &[ascii("CH-PN-1"), ascii("CH-SN-7")])),
        // Language English (25); made 2024-01-01 00:00 UTC: 14726880 = 0xe0b6e0 minutes after 1996-01-01.
        Some(area(
            &[25, 0xe0, 0xb6, 0xe0],
            &[
                ascii("Acme Boards"),
                ascii("X11-DPi"),
                ascii("BSN0001"),
                ascii("BPN-9"),
                ascii("fru-file-id"),
            ],
        )),
        Some(area(
            &[25],
            &[
                ascii("AcmeHPC"),
                ascii("Rack9000"),
                ascii("R9K-A"),
                ascii("v2"),
                ascii("PSN-42"),
                ascii("asset-17"),
                ascii("fru-file-id"),
            ],
        )),
    )
}

#[test]
fn fru_areas_are_parsed_and_mapped() {
    let fru = fru::parse(&sample()).unwrap();
    assert_eq!(
        fru.chassis,
        Some(FruChassis {
            chassis_type: Some(23),
            part_number: Some("CH-PN-1".into()),
            serial: Some("CH-SN-7".into()),
        })
    );
    let made = "2024-01-01T00:00:00Z".to_string();
    assert_eq!(
        fru.board,
        Some(FruBoard {
            manufactured: Some(made),
            manufacturer: Some("Acme Boards".into()),
            product: Some("X11-DPi".into()),
            serial: Some("BSN0001".into()),
            part_number: Some("BPN-9".into()),
        })
    );
    let p = fru.product.clone().unwrap();
    assert_eq!(
        (p.version.as_deref(), p.asset_tag.as_deref()),
        (Some("v2"), Some("asset-17"))
    );
    let o = fru.clone().into_out_of_band();
    assert_eq!(o.source, "ipmi-fru");
    assert_eq!(o.manufacturer.as_deref(), Some("AcmeHPC"));
    assert_eq!(o.model.as_deref(), Some("Rack9000"));
    assert_eq!(o.serial.as_deref(), Some("PSN-42"));
    assert_eq!(o.sku.as_deref(), Some("R9K-A"));
    assert_eq!(o.fru, Some(fru));
    // JSON field names are camelCase; absent facts are left out.
    let j = serde_json::to_value(&o).unwrap();
    assert_eq!(j["fru"]["board"]["partNumber"], "BPN-9");
    assert_eq!(j["fru"]["chassis"]["chassisType"], 23);
    assert!(j.get("memoryBytes").is_none() && j.get("nics").is_none());
}

#[test]
fn without_a_product_area_the_board_names_the_system() {
    let img = image(
        None,
        Some(area(
            &[0, 0, 0, 0],
            &[
                ascii("Acme"),
                ascii("Board X"),
                ascii("BSN123"),
                ascii("BPN"),
            ],
        )),
        None,
    );
    let o = fru::parse(&img).unwrap().into_out_of_band();
    assert_eq!(
        (
            o.manufacturer.as_deref(),
            o.model.as_deref(),
            o.serial.as_deref(),
            o.sku.as_deref()
        ),
        (Some("Acme"), Some("Board X"), Some("BSN123"), None)
    );
    assert_eq!(o.fru.unwrap().board.unwrap().manufactured, None);
}

#[test]
fn six_bit_packed_bcd_plus_latin1_ucs2_and_binary_fields() {
    // The FRU specification's own example: "IPMI" packs into 29 DC A6.
    assert_eq!(fru::six_bit(&[0x29, 0xdc, 0xa6]), "IPMI");
    assert_eq!(
        fru::decode(2, &[0x29, 0xdc, 0xa6], true).as_deref(),
        Some("IPMI")
    );
    // "ACME" by hand: A=0x21 C=0x23 M=0x2d E=0x25.
    assert_eq!(fru::six_bit(&[0xe1, 0xd8, 0x96]), "ACME");
    assert_eq!(
        fru::decode(1, &[0x12, 0x3b, 0x4c], true).as_deref(),
        Some("123-4.")
    );
    assert_eq!(fru::decode(3, &[b'C', 0xe9], true).as_deref(), Some("Cé"));
    assert_eq!(
        fru::decode(3, &[b'h', 0, b'i', 0], false).as_deref(),
        Some("hi")
    );
    assert_eq!(fru::decode(0, &[0xde, 0xad], true).as_deref(), Some("dead"));
    assert_eq!(fru::decode(3, &[], true), None);

    // In an area: a 6-bit packed product name and a BCD plus serial.
    let img = image(
        None,
        None,
        Some(area(
            &[0],
            &[
                ascii("Vendor"),
                typed(2, &[0x29, 0xdc, 0xa6]),
                typed(3, &[]),
                typed(3, &[]),
                typed(1, &[0x20, 0x24, 0xb1]),
            ],
        )),
    );
    let o = fru::parse(&img).unwrap().into_out_of_band();
    assert_eq!(o.model.as_deref(), Some("IPMI"));
    assert_eq!(o.serial.as_deref(), Some("2024-1"));
    assert_eq!(o.sku, None);
    let p = o.fru.unwrap().product.unwrap();
    assert_eq!((p.version, p.asset_tag), (None, None));
}

#[test]
fn a_bad_checksum_names_the_area() {
    let mut img = sample();
    // The board area starts at the header's offset; flip a byte of its manufacturer name.
    let board = usize::from(img[3]) * 8;
    img[board + 8] ^= 0x01;
    let err = fru::parse(&img).unwrap_err();
    assert_eq!(err, FruError::Checksum(Area::Board));
    assert!(err.to_string().contains("board info area"), "{err}");
    assert!(err.to_string().contains("reprogram"), "{err}");

    let mut img = sample();
    img[7] = img[7].wrapping_add(1);
    assert!(matches!(fru::parse(&img), Err(FruError::Header(1))));
    // A blank FRU is not a header either.
    assert!(matches!(
        fru::parse(&[0xff; 64]),
        Err(FruError::Header(0xff))
    ));
}

#[test]
fn truncated_areas_and_overlong_fields_are_errors() {
    let img = sample();
    let product = usize::from(img[4]) * 8;
    let err = fru::parse(&img[..product + 10]).unwrap_err();
    assert!(
        matches!(err, FruError::Truncated { area: Area::Product, have, .. } if have == product + 10),
        "{err:?}"
    );
    // An area that ends where its header says it starts.
    let err = fru::parse(&img[..product]).unwrap_err();
    assert!(
        matches!(
            err,
            FruError::Truncated {
                area: Area::Product,
                need: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(matches!(fru::parse(&img[..5]), Err(FruError::Header(_))));

    // A field whose length runs past the end of its area (checksum kept valid).
    let mut a = area(&[25], &[ascii("Vendor")]);
    a[3] = 0xc0 | 0x3f;
    let last = a.len() - 1;
    a[last] = 0;
    let sum = a.iter().fold(0u8, |s, x| s.wrapping_add(*x));
    a[last] = sum.wrapping_neg();
    let err = fru::parse(&image(None, None, Some(a))).unwrap_err();
    assert!(
        matches!(
            err,
            FruError::Malformed {
                area: Area::Product,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("runs past the end"), "{err}");
}

#[test]
fn every_prefix_and_every_corruption_of_an_image_parses_or_fails_without_panic() {
    let img = sample();
    for n in 0..=img.len() {
        let _ = fru::parse(&img[..n]);
    }
    for i in 0..img.len() {
        for v in [0x00, 0xff, 0xc1, 0x3f, 0x01] {
            let mut m = img.clone();
            m[i] = v;
            let _ = fru::parse(&m);
        }
    }
    // Areas named beyond the end, overlapping the header, of the largest length.
    let _ = fru::parse(&[0x01, 0, 0xff, 0xff, 0xff, 0, 0, 0x04]);
    let _ = fru::parse(&[0x01, 0, 0, 1, 0, 0, 0, 0xfe, 0x01, 0xff]);
}

proptest::proptest! {
    #[test]
    fn hostile_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
        let _ = fru::parse(&bytes);
        let mut f = Fru::default();
        let _ = fru::parse_area(&mut f, Area::Board, &bytes);
        let _ = f.into_out_of_band();
    }

    #[test]
    fn hostile_headers_with_valid_checksums_never_panic(
        h in proptest::array::uniform7(proptest::num::u8::ANY),
        tail in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
    ) {
        let mut img = h.to_vec();
        img[0] = 0x01;
        let sum = img.iter().fold(0u8, |s, x| s.wrapping_add(*x));
        img.push(sum.wrapping_neg());
        img.extend_from_slice(&tail);
        let _ = fru::parse(&img);
    }
}

#[test]
fn normalize_cleans_text_macs_and_bounds_lists() {
    let mut o = OutOfBand::new(SOURCE_REDFISH);
    o.manufacturer = Some("  Contoso \0\0".into());
    o.model = Some("bad\u{1b}[31m".into());
    o.serial = Some("   ".into());
    o.sku = Some("x".repeat(MAX_TEXT + 1));
    o.bios_version = Some("x".repeat(MAX_TEXT));
    o.processors = Some(Processors {
        count: None,
        model: Some("\n".into()),
    });
    o.nics = (0..MAX_ITEMS + 5)
        .map(|i| OutOfBandNic {
            id: format!("nic{i}"),
            mac: Some("52:54:00:AB:CD:EF".into()),
            speed_mbps: None,
        })
        .collect();
    o.nics[1].mac = Some("not-a-mac".into());
    o.nics[2].id = " \t".into();
    o.drives = vec![OutOfBandDrive {
        name: " Disk 1 ".into(),
        media_type: Some("SSD".into()),
        protocol: Some("NVMe\r".into()),
        ..OutOfBandDrive::default()
    }];
    o.normalize();
    assert_eq!(o.manufacturer.as_deref(), Some("Contoso"));
    assert_eq!(o.model, None);
    assert_eq!(o.serial, None);
    assert_eq!(o.sku, None);
    assert_eq!(o.bios_version.as_ref().map(String::len), Some(MAX_TEXT));
    assert_eq!(o.processors, None);
    // Cut to the bound first, then the nameless NIC dropped.
    assert_eq!(o.nics.len(), MAX_ITEMS - 1);
    assert_eq!(o.nics[0].mac.as_deref(), Some("52:54:00:ab:cd:ef"));
    assert_eq!(
        (o.nics[1].id.as_str(), o.nics[1].mac.as_deref()),
        ("nic1", None)
    );
    assert_eq!(o.nics[2].id, "nic3");
    assert_eq!(o.drives[0].name, "Disk 1");
    assert_eq!(o.drives[0].media_type.as_deref(), Some("SSD"));
    assert_eq!(o.drives[0].protocol.as_deref(), Some("NVMe"));
    assert_eq!(
        clean_text("a\u{85}x"),
        None,
        "C1 controls are control characters"
    );
    assert_eq!(clean_text("a\u{9f}x"), None);
}

#[test]
fn the_schema_names_the_fields_in_camel_case() {
    let schema = serde_json::to_value(schemars::schema_for!(OutOfBand)).unwrap();
    let props = &schema["properties"];
    for f in [
        "source",
        "manufacturer",
        "biosVersion",
        "memoryBytes",
        "nics",
        "drives",
        "fru",
    ] {
        assert!(props.get(f).is_some(), "{f} in {props}");
    }
}
