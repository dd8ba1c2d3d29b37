//! What a host's BMC says about its hardware (Redfish inventory, IPMI FRU), recorded apart from the in-band
//! inspection report.
//!
//! [`OutOfBand`] is what [`crate::bmc::BmcDriver::inventory`] returns. Every fact is optional: BMCs differ in
//! what they know (an IPMI FRU has no NICs or drives, an emulator no serial numbers), so an absent value is
//! normal and never an error. The drivers fill it from the wire and call [`OutOfBand::normalize`], which
//! trims the text, drops values that are empty, overlong or contain control characters (a BMC's strings are
//! shown on status pages and in logs), and bounds the lists. No Kubernetes and no I/O here; the types derive
//! `JsonSchema` so they can be recorded in a resource's status.
//!
//! The IPMI Platform Management FRU format (v1.0 rev 1.3) is parsed here too ([`fru`]), as pure functions of
//! bytes: the IPMI driver reads the bytes, the parser never trusts them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// At most this many NICs and drives are recorded.
pub const MAX_ITEMS: usize = 1024;
/// Longer text from a BMC is dropped (a model name or serial number is a few dozen bytes).
pub const MAX_TEXT: usize = 256;

/// `source` of an inventory read over Redfish.
pub const SOURCE_REDFISH: &str = "redfish";
/// `source` of an inventory read from the IPMI FRU of device 0.
pub const SOURCE_IPMI_FRU: &str = "ipmi-fru";

/// A host's hardware as its BMC reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutOfBand {
    /// Where the facts come from: `redfish` (the ComputerSystem and its links) or `ipmi-fru` (the FRU
    /// inventory of device 0).
    pub source: String,
    /// System manufacturer (Redfish `Manufacturer`; FRU product manufacturer, else board manufacturer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    /// System model (Redfish `Model`; FRU product name, else board product name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// System serial number (Redfish `SerialNumber`; FRU product serial, else board serial).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Stock-keeping unit (Redfish `SKU`; FRU product part/model number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bios_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processors: Option<Processors>,
    /// Installed memory in bytes (Redfish `MemorySummary.TotalSystemMemoryGiB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<OutOfBandNic>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drives: Vec<OutOfBandDrive>,
    /// The FRU areas as read (IPMI only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fru: Option<Fru>,
}

/// Redfish `ProcessorSummary`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Processors {
    /// Processor packages (sockets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// A Redfish `EthernetInterface`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutOfBandNic {
    /// The BMC's id of the interface (Redfish `Id`).
    pub id: String,
    /// `aa:bb:cc:dd:ee:ff`, lowercase (Redfish `MACAddress`, else `PermanentMACAddress`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_mbps: Option<u32>,
}

/// A Redfish `Drive` (or a `SimpleStorage` device, which has only a name and a capacity).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutOfBandDrive {
    /// Redfish `Name` (else `Id`).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// As Redfish says it: `HDD`, `SSD`, `SMR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// As Redfish says it: `SATA`, `SAS`, `NVMe`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// The info areas of an IPMI FRU (absent areas are `None`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fru {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chassis: Option<FruChassis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board: Option<FruBoard>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<FruProduct>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FruChassis {
    /// The SMBIOS chassis type number (23: rack mount chassis, 17: main server chassis, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chassis_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FruBoard {
    /// When the board was made, RFC 3339 (UTC, minute resolution).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufactured: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_number: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FruProduct {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Part/model number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_tag: Option<String>,
}

/// A BMC's text as it may be recorded: trimmed (whitespace and the NULs FRUs pad with); `None` when that
/// leaves nothing, or when it is longer than [`MAX_TEXT`] bytes or contains control characters (such a value
/// is dropped, not repaired: it is not what the BMC meant to say).
pub(crate) fn clean_text(raw: &str) -> Option<String> {
    let t = raw.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    if t.is_empty() || t.len() > MAX_TEXT || t.chars().any(char::is_control) {
        return None;
    }
    Some(t.to_string())
}

fn clean_opt(v: &mut Option<String>) {
    *v = v.as_deref().and_then(clean_text);
}

impl OutOfBand {
    /// An inventory with nothing in it yet.
    pub fn new(source: &str) -> Self {
        OutOfBand {
            source: source.to_string(),
            ..OutOfBand::default()
        }
    }

    /// Cleans every string (as `clean_text` does), normalizes MACs (`aa:bb:…`, lowercase; one that does not
    /// parse is dropped), drops NICs and drives left without a name, and keeps at most [`MAX_ITEMS`] of each.
    pub fn normalize(&mut self) {
        for v in [
            &mut self.manufacturer,
            &mut self.model,
            &mut self.serial,
            &mut self.sku,
            &mut self.bios_version,
        ] {
            clean_opt(v);
        }
        if let Some(p) = &mut self.processors {
            clean_opt(&mut p.model);
            if p.count.is_none() && p.model.is_none() {
                self.processors = None;
            }
        }
        self.nics.truncate(MAX_ITEMS);
        self.nics.retain_mut(|n| {
            n.mac = n
                .mac
                .as_deref()
                .and_then(|m| m.trim().parse::<crate::boot::MacAddr>().ok())
                .map(|m| m.to_string());
            match clean_text(&n.id) {
                Some(id) => {
                    n.id = id;
                    true
                }
                None => false,
            }
        });
        self.drives.truncate(MAX_ITEMS);
        self.drives.retain_mut(|d| {
            for v in [
                &mut d.serial,
                &mut d.model,
                &mut d.media_type,
                &mut d.protocol,
            ] {
                clean_opt(v);
            }
            match clean_text(&d.name) {
                Some(n) => {
                    d.name = n;
                    true
                }
                None => false,
            }
        });
        if let Some(f) = &mut self.fru {
            f.normalize();
        }
    }

    /// Whether the BMC told nothing at all (besides where it was asked).
    pub fn is_empty(&self) -> bool {
        *self == OutOfBand::new(&self.source)
    }
}

impl Fru {
    fn normalize(&mut self) {
        if let Some(c) = &mut self.chassis {
            clean_opt(&mut c.part_number);
            clean_opt(&mut c.serial);
        }
        if let Some(b) = &mut self.board {
            for v in [
                &mut b.manufactured,
                &mut b.manufacturer,
                &mut b.product,
                &mut b.serial,
                &mut b.part_number,
            ] {
                clean_opt(v);
            }
        }
        if let Some(p) = &mut self.product {
            for v in [
                &mut p.manufacturer,
                &mut p.name,
                &mut p.part_number,
                &mut p.version,
                &mut p.serial,
                &mut p.asset_tag,
            ] {
                clean_opt(v);
            }
        }
    }

    /// The FRU's facts as an inventory: manufacturer from the product area, else the board's; model from the
    /// product name, else the board's product name; serial from the product, else the board; SKU from the
    /// product part number. The areas themselves are kept in `fru`.
    pub fn into_out_of_band(mut self) -> OutOfBand {
        self.normalize();
        let p = self.product.clone().unwrap_or_default();
        let b = self.board.clone().unwrap_or_default();
        let mut o = OutOfBand::new(SOURCE_IPMI_FRU);
        o.manufacturer = p.manufacturer.or(b.manufacturer);
        o.model = p.name.or(b.product);
        o.serial = p.serial.or(b.serial);
        o.sku = p.part_number;
        if self != Fru::default() {
            o.fru = Some(self);
        }
        o.normalize();
        o
    }
}

/// The IPMI Platform Management FRU Information Storage Definition (v1.0 rev 1.3): the common header, and
/// the chassis, board and product info areas with their type/length-encoded fields. Every read is bounds
/// checked; hostile or truncated bytes give an [`fru::FruError`], never a panic.
pub mod fru {
    use super::{Fru, FruBoard, FruChassis, FruProduct};

    /// The common header's length.
    pub const HEADER_LEN: usize = 8;
    /// The longest an info area can be (its length byte counts 8-byte multiples).
    pub const MAX_AREA_LEN: usize = 255 * 8;
    /// Board manufacturing dates count minutes from 1996-01-01 00:00 UTC.
    const EPOCH_1996: i64 = 820_454_400;

    /// Which info area.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Area {
        Chassis,
        Board,
        Product,
    }

    impl std::fmt::Display for Area {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(match self {
                Area::Chassis => "chassis info area",
                Area::Board => "board info area",
                Area::Product => "product info area",
            })
        }
    }

    /// Why FRU bytes cannot be read.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum FruError {
        #[error(
            "the FRU common header is not one (format version {0:#04x}, expected 0x01, or a bad checksum); the FRU is empty or corrupt: reprogram it with the vendor's tool"
        )]
        Header(u8),
        #[error(
            "the FRU {0} has a bad checksum; the FRU is corrupt: reprogram it with the vendor's tool"
        )]
        Checksum(Area),
        #[error("the FRU {area} is malformed: {why}")]
        Malformed { area: Area, why: String },
        #[error("the FRU {area} is truncated (it needs {need} bytes, the FRU has {have})")]
        Truncated {
            area: Area,
            need: usize,
            have: usize,
        },
    }

    /// The byte offsets of the info areas the common header names (`None`: no such area).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct Header {
        pub chassis: Option<usize>,
        pub board: Option<usize>,
        pub product: Option<usize>,
    }

    impl Header {
        pub fn areas(&self) -> impl Iterator<Item = (Area, usize)> {
            [
                (Area::Chassis, self.chassis),
                (Area::Board, self.board),
                (Area::Product, self.product),
            ]
            .into_iter()
            .filter_map(|(a, o)| o.map(|o| (a, o)))
        }
    }

    fn zero_sum(b: &[u8]) -> bool {
        b.iter().fold(0u8, |s, x| s.wrapping_add(*x)) == 0
    }

    /// Parses the common header (the first [`HEADER_LEN`] bytes).
    pub fn parse_header(b: &[u8]) -> Result<Header, FruError> {
        let h = b.get(..HEADER_LEN).ok_or(FruError::Header(0))?;
        let version = h.first().copied().unwrap_or(0);
        if version & 0x0f != 0x01 || !zero_sum(h) {
            return Err(FruError::Header(version));
        }
        let at = |i: usize| {
            h.get(i)
                .copied()
                .filter(|&o| o != 0)
                .map(|o| usize::from(o) * 8)
        };
        Ok(Header {
            chassis: at(2),
            board: at(3),
            product: at(4),
        })
    }

    /// The length of an area from its first two bytes (version, length in 8-byte multiples).
    pub fn area_len(area: Area, first: &[u8]) -> Result<usize, FruError> {
        let (&version, &len) = match first {
            [v, l, ..] => (v, l),
            _ => {
                return Err(FruError::Truncated {
                    area,
                    need: 2,
                    have: first.len(),
                });
            }
        };
        if version & 0x0f != 0x01 {
            return Err(FruError::Malformed {
                area,
                why: format!("format version {version:#04x}, expected 0x01"),
            });
        }
        if len == 0 {
            return Err(FruError::Malformed {
                area,
                why: "length 0".into(),
            });
        }
        Ok(usize::from(len) * 8)
    }

    /// Parses a whole FRU image: the header and every area it names.
    pub fn parse(image: &[u8]) -> Result<Fru, FruError> {
        let h = parse_header(image)?;
        let mut fru = Fru::default();
        for (area, off) in h.areas() {
            let rest = image.get(off..).unwrap_or_default();
            let len = area_len(area, rest)?;
            let bytes = rest.get(..len).ok_or(FruError::Truncated {
                area,
                need: off + len,
                have: image.len(),
            })?;
            parse_area(&mut fru, area, bytes)?;
        }
        Ok(fru)
    }

    /// Parses one info area (exactly its bytes, checksum included) into `fru`.
    pub fn parse_area(fru: &mut Fru, area: Area, bytes: &[u8]) -> Result<(), FruError> {
        let len = area_len(area, bytes)?;
        let b = bytes.get(..len).ok_or(FruError::Truncated {
            area,
            need: len,
            have: bytes.len(),
        })?;
        if !zero_sum(b) {
            return Err(FruError::Checksum(area));
        }
        // Fixed fields: chassis type (chassis); language, date (board); language (product).
        let (fixed, english) = match area {
            Area::Chassis => (3, true),
            Area::Board => (6, is_english(b.get(2))),
            Area::Product => (3, is_english(b.get(2))),
        };
        // The last byte is the checksum; fields end before it.
        let body = b.get(..len - 1).unwrap_or_default();
        let mut fields = Fields {
            area,
            b: body,
            at: fixed,
            english,
        };
        let mut next = || fields.next_field();
        match area {
            Area::Chassis => {
                let c = FruChassis {
                    chassis_type: b.get(2).copied().filter(|&t| t != 0),
                    part_number: next()?,
                    serial: next()?,
                };
                fru.chassis = Some(c);
            }
            Area::Board => {
                let minutes = match b.get(3..6) {
                    Some([a, m, c]) => i64::from(u32::from_le_bytes([*a, *m, *c, 0])),
                    _ => 0,
                };
                fru.board = Some(FruBoard {
                    manufactured: (minutes != 0)
                        .then(|| jiff::Timestamp::from_second(EPOCH_1996 + minutes * 60).ok())
                        .flatten()
                        .map(|t| t.to_string()),
                    manufacturer: next()?,
                    product: next()?,
                    serial: next()?,
                    part_number: next()?,
                });
            }
            Area::Product => {
                fru.product = Some(FruProduct {
                    manufacturer: next()?,
                    name: next()?,
                    part_number: next()?,
                    version: next()?,
                    serial: next()?,
                    asset_tag: next()?,
                });
            }
        }
        Ok(())
    }

    /// Language code 0 and 25 are English (for fields of type 11b: Latin-1 instead of UCS-2).
    fn is_english(code: Option<&u8>) -> bool {
        matches!(code, None | Some(0) | Some(25))
    }

    /// The type/length-encoded fields of one area, in order.
    struct Fields<'a> {
        area: Area,
        b: &'a [u8],
        at: usize,
        english: bool,
    }

    impl Fields<'_> {
        /// The next field's text; `None` once the end marker (0xC1) or the end of the area is reached, and
        /// for empty fields.
        fn next_field(&mut self) -> Result<Option<String>, FruError> {
            let Some(&tl) = self.b.get(self.at) else {
                return Ok(None);
            };
            if tl == 0xc1 {
                return Ok(None);
            }
            let len = usize::from(tl & 0x3f);
            let start = self.at + 1;
            let data = self
                .b
                .get(start..start + len)
                .ok_or_else(|| FruError::Malformed {
                    area: self.area,
                    why: format!(
                        "a field of {len} bytes at offset {} runs past the end of the area ({} bytes)",
                        self.at,
                        self.b.len() + 1
                    ),
                })?;
            self.at = start + len;
            Ok(decode(tl >> 6, data, self.english))
        }
    }

    /// Decodes a field of type `kind` (bits 7:6 of its type/length byte).
    pub fn decode(kind: u8, data: &[u8], english: bool) -> Option<String> {
        if data.is_empty() {
            return None;
        }
        let s = match kind {
            // Binary or unspecified: shown as hex.
            0 => data.iter().map(|b| format!("{b:02x}")).collect(),
            1 => bcd_plus(data),
            2 => six_bit(data),
            _ if english => data.iter().map(|&b| char::from(b)).collect(),
            _ => ucs2(data),
        };
        Some(s)
    }

    /// BCD plus: digits, space, dash, period, two per byte (high nibble first).
    fn bcd_plus(data: &[u8]) -> String {
        let ch = |n: u8| match n {
            0..=9 => char::from(b'0' + n),
            0xa => ' ',
            0xb => '-',
            0xc => '.',
            _ => '?',
        };
        data.iter()
            .flat_map(|b| [ch(b >> 4), ch(b & 0x0f)])
            .collect()
    }

    /// 6-bit packed ASCII: four characters (0x20 + value) in every three bytes, least significant bits first.
    pub fn six_bit(data: &[u8]) -> String {
        let mut out = String::new();
        let mut acc: u32 = 0;
        let mut bits = 0;
        for &b in data {
            acc |= u32::from(b) << bits;
            bits += 8;
            while bits >= 6 {
                out.push(char::from(0x20 + (acc & 0x3f) as u8));
                acc >>= 6;
                bits -= 6;
            }
        }
        out
    }

    /// 2-byte Unicode, least significant byte first (unpaired surrogates become U+FFFD).
    fn ucs2(data: &[u8]) -> String {
        let units: Vec<u16> = data
            .chunks_exact(2)
            .map(|c| match c {
                [lo, hi] => u16::from_le_bytes([*lo, *hi]),
                _ => 0,
            })
            .collect();
        char::decode_utf16(units)
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect()
    }
}

#[cfg(test)]
mod tests;
