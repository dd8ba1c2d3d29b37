//! The out-of-band inventory over IPMI: the FRU inventory of device 0 (Get FRU Inventory Area Info, then
//! Read FRU Data in small chunks), parsed by [`crate::hardware::out_of_band::fru`].
//!
//! Only what is needed is read: the common header, then each info area it names (its first 8 bytes give its
//! length, then the rest). A BMC without FRU device 0 (completion code 0xC1, 0xCB or 0xCC to Get FRU
//! Inventory Area Info) and a blank FRU (a header of all 0x00 or all 0xFF) are not errors: the inventory is
//! then empty (`source` only), as absent facts are normal. A corrupt FRU (bad checksum, malformed area) is a
//! [`BmcError::Protocol`] naming the area.

use std::time::Duration;

use super::super::{BmcError, Result};
use super::IpmiClient;
use super::commands::{self, NETFN_STORAGE};
use crate::hardware::out_of_band::fru::{self, HEADER_LEN};
use crate::hardware::out_of_band::{Fru, OutOfBand, SOURCE_IPMI_FRU};

/// Bytes asked for per Read FRU Data: small enough for every BMC's buffer over lanplus (ipmitool starts at
/// 32 and backs off; 24 never needs to).
const CHUNK: usize = 24;
/// The smallest chunk a BMC that refuses bigger ones is asked for.
const MIN_CHUNK: usize = 4;
/// Reads of one inventory, at most (three areas of the largest size, 2040 bytes, take 255 reads of 24).
const MAX_READS: usize = 384;
/// Retries of a read the BMC answers "FRU device busy" (0x81).
const BUSY_RETRIES: u32 = 3;

/// The FRU device read.
const DEVICE: u8 = 0;

struct Reader<'a> {
    bmc: &'a IpmiClient,
    /// FRU size in bytes.
    size: usize,
    words: bool,
    chunk: usize,
    reads: usize,
}

impl Reader<'_> {
    fn protocol(&self, detail: String) -> BmcError {
        BmcError::Protocol {
            bmc: self.bmc.name.clone(),
            detail,
        }
    }

    /// Bytes `offset..offset + len` of the FRU, cut at its end (the parser reports what is missing).
    async fn read(&mut self, offset: usize, len: usize) -> Result<Vec<u8>> {
        let end = offset.saturating_add(len).min(self.size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset));
        let mut at = offset;
        let mut busy = 0;
        while at < end {
            if self.reads >= MAX_READS {
                return Err(self.protocol(format!(
                    "reading the FRU of device {DEVICE} took more than {MAX_READS} reads; the BMC returns too little per read"
                )));
            }
            self.reads += 1;
            let want = (end - at).min(self.chunk);
            let (unit_offset, unit_count) = if self.words {
                (at / 2, want.div_ceil(2))
            } else {
                (at, want)
            };
            let (Ok(unit_offset), Ok(unit_count)) =
                (u16::try_from(unit_offset), u8::try_from(unit_count))
            else {
                return Err(self.protocol(format!(
                    "FRU offset {at} is beyond what Read FRU Data can address"
                )));
            };
            let (cc, data) = self
                .bmc
                .call_raw(
                    NETFN_STORAGE,
                    commands::CMD_READ_FRU_DATA,
                    &commands::read_fru_request(DEVICE, unit_offset, unit_count),
                )
                .await?;
            match cc {
                0 => {}
                // FRU device busy: the BMC is updating it; a short pause, then again.
                0x81 if busy < BUSY_RETRIES => {
                    busy += 1;
                    tracing::debug!(bmc = %self.bmc.name, at, "FRU device busy, retrying");
                    tokio::time::sleep(Duration::from_millis(100 << busy)).await;
                    continue;
                }
                // Cannot return that many bytes / request too long: smaller reads.
                0xc7 | 0xc8 | 0xca if self.chunk > MIN_CHUNK => {
                    self.chunk = (self.chunk / 2).max(MIN_CHUNK);
                    tracing::debug!(bmc = %self.bmc.name, chunk = self.chunk, "the BMC refuses the FRU read size, reading less at a time");
                    continue;
                }
                cc => {
                    return Err(commands::completion_error(
                        &self.bmc.name,
                        NETFN_STORAGE,
                        commands::CMD_READ_FRU_DATA,
                        cc,
                    ));
                }
            }
            busy = 0;
            let got = commands::parse_read_fru(&data, self.words).ok_or_else(|| {
                self.protocol(format!(
                    "malformed Read FRU Data response at offset {at} (its count exceeds its data)"
                ))
            })?;
            if got.is_empty() {
                return Err(self.protocol(format!(
                    "Read FRU Data returned no bytes at offset {at} of {}",
                    self.size
                )));
            }
            let take = got.len().min(end - at);
            out.extend_from_slice(got.get(..take).unwrap_or_default());
            at += take;
        }
        Ok(out)
    }
}

impl IpmiClient {
    /// The FRU inventory of device 0 as an [`OutOfBand`] (see the module documentation).
    pub(super) async fn fru_inventory(&self) -> Result<OutOfBand> {
        let empty = OutOfBand::new(SOURCE_IPMI_FRU);
        let (cc, info) = self
            .call_raw(
                NETFN_STORAGE,
                commands::CMD_GET_FRU_INVENTORY_AREA_INFO,
                &[DEVICE],
            )
            .await?;
        if commands::FRU_ABSENT.contains(&cc) {
            tracing::debug!(bmc = %self.name, completion = cc, "no FRU device 0; the inventory is empty");
            return Ok(empty);
        }
        if cc != 0 {
            return Err(commands::completion_error(
                &self.name,
                NETFN_STORAGE,
                commands::CMD_GET_FRU_INVENTORY_AREA_INFO,
                cc,
            ));
        }
        let (size, words) =
            commands::parse_fru_area_info(&info).ok_or_else(|| BmcError::Protocol {
                bmc: self.name.clone(),
                detail: "malformed Get FRU Inventory Area Info response".into(),
            })?;
        if size < HEADER_LEN {
            tracing::debug!(bmc = %self.name, size, "FRU device 0 is too small for a header; the inventory is empty");
            return Ok(empty);
        }
        let mut r = Reader {
            bmc: self,
            size,
            words,
            chunk: CHUNK,
            reads: 0,
        };
        let bad = |e: fru::FruError| BmcError::Protocol {
            bmc: self.name.clone(),
            detail: format!("reading the FRU of device {DEVICE}: {e}"),
        };
        let header = r.read(0, HEADER_LEN).await?;
        if header.iter().all(|&b| b == 0) || header.iter().all(|&b| b == 0xff) {
            tracing::debug!(bmc = %self.name, "FRU device 0 is blank; the inventory is empty");
            return Ok(empty);
        }
        let h = fru::parse_header(&header).map_err(bad)?;
        let mut parsed = Fru::default();
        for (area, off) in h.areas() {
            let mut bytes = r.read(off, 8).await?;
            let len = fru::area_len(area, &bytes).map_err(|e| bad(in_fru(e, off, size)))?;
            if len > bytes.len() {
                let rest = r.read(off + bytes.len(), len - bytes.len()).await?;
                bytes.extend_from_slice(&rest);
            }
            fru::parse_area(&mut parsed, area, &bytes).map_err(|e| bad(in_fru(e, off, size)))?;
        }
        let out = parsed.into_out_of_band();
        tracing::debug!(bmc = %self.name, reads = r.reads, "FRU inventory read");
        Ok(out)
    }
}

/// A truncation error of an area read at `off`, restated against the whole FRU (`size` bytes).
fn in_fru(e: fru::FruError, off: usize, size: usize) -> fru::FruError {
    match e {
        fru::FruError::Truncated { area, need, .. } => fru::FruError::Truncated {
            area,
            need: off + need,
            have: size,
        },
        e => e,
    }
}
