//! The IPMI commands this driver sends: request data and response parsing, as pure functions.

use super::super::{
    BmcError, BootDevice, BootMode, BootOverride, BootOverrideStatus, PowerAction, PowerState,
};

pub const NETFN_CHASSIS: u8 = 0x00;
pub const NETFN_APP: u8 = 0x06;
pub const NETFN_STORAGE: u8 = 0x0a;

pub const CMD_GET_CHASSIS_STATUS: u8 = 0x01;
pub const CMD_CHASSIS_CONTROL: u8 = 0x02;
pub const CMD_SET_BOOT_OPTIONS: u8 = 0x08;
pub const CMD_GET_BOOT_OPTIONS: u8 = 0x09;
pub const CMD_GET_FRU_INVENTORY_AREA_INFO: u8 = 0x10;
pub const CMD_READ_FRU_DATA: u8 = 0x11;
pub const CMD_GET_CHANNEL_AUTH_CAPS: u8 = 0x38;
pub const CMD_SET_SESSION_PRIVILEGE: u8 = 0x3b;
pub const CMD_CLOSE_SESSION: u8 = 0x3c;
pub const CMD_GET_CHANNEL_CIPHER_SUITES: u8 = 0x54;

pub const PRIV_ADMIN: u8 = 0x04;

/// Get Channel Authentication Capabilities for the current channel, asking for the IPMI v2.0 extended data.
pub fn channel_auth_caps_request() -> [u8; 2] {
    [0x8e, PRIV_ADMIN]
}

/// Whether the channel supports IPMI v2.0 (RMCP+), from the Get Channel Authentication Capabilities data.
pub fn supports_v20(data: &[u8]) -> bool {
    // data[1] bit 7: extended capabilities present; data[3] bit 1: IPMI v2.0 connections supported.
    data.len() >= 4 && data[1] & 0x80 != 0 && data[3] & 0x02 != 0
}

/// Chassis Control data byte.
pub fn chassis_control(action: PowerAction) -> u8 {
    match action {
        PowerAction::ForceOff => 0x00,
        PowerAction::On => 0x01,
        PowerAction::Cycle => 0x02,
        PowerAction::Reset => 0x03,
        PowerAction::SoftOff => 0x05,
    }
}

/// Current power state from Get Chassis Status data (byte 1 bit 0).
pub fn power_state(data: &[u8]) -> Option<PowerState> {
    data.first().map(|b| {
        if b & 0x01 != 0 {
            PowerState::On
        } else {
            PowerState::Off
        }
    })
}

/// The boot device selector (bits 5:2 of data byte 2 of boot flags), `None` for devices IPMI cannot name.
fn selector(device: BootDevice) -> Option<u8> {
    match device {
        BootDevice::Pxe => Some(0x1),
        BootDevice::Disk => Some(0x2),
        BootDevice::Cdrom => Some(0x5),
        BootDevice::BiosSetup => Some(0x6),
        BootDevice::UefiHttp => None,
    }
}

/// Set System Boot Options, parameter 5 (boot flags): `[param, flags, device, 0, 0, 0]`.
/// `None` when the device has no IPMI selector.
pub fn set_boot_flags(boot: BootOverride) -> Option<[u8; 6]> {
    let sel = selector(boot.device)?;
    let mut flags = 0x80; // valid
    if boot.persistent {
        flags |= 0x40;
    }
    if boot.mode == BootMode::Uefi {
        flags |= 0x20;
    }
    Some([0x05, flags, sel << 2, 0, 0, 0])
}

/// Get System Boot Options request for parameter 5.
pub fn get_boot_flags_request() -> [u8; 3] {
    [0x05, 0x00, 0x00]
}

/// Parses the Get System Boot Options response for parameter 5:
/// `[version, param (bit 7: invalid/locked), flags, device, …]`.
pub fn parse_boot_flags(data: &[u8]) -> Option<BootOverrideStatus> {
    if data.len() < 4 || data[1] & 0x7f != 0x05 {
        return None;
    }
    let flags = data[2];
    let device = match (data[3] >> 2) & 0x0f {
        0x1 => Some(BootDevice::Pxe),
        0x2 => Some(BootDevice::Disk),
        0x5 => Some(BootDevice::Cdrom),
        0x6 => Some(BootDevice::BiosSetup),
        _ => None,
    };
    // Some BMCs (ipmi_sim among them) never set the valid bit, so the flags beside the device are only
    // reported when it is set.
    let valid = flags & 0x80 != 0;
    Some(BootOverrideStatus {
        device,
        persistent: valid.then_some(flags & 0x40 != 0),
        mode: valid.then_some(if flags & 0x20 != 0 {
            BootMode::Uefi
        } else {
            BootMode::Legacy
        }),
    })
}

/// The error for a request the BMC answered with completion code `cc` (not 0).
pub fn completion_error(bmc: &str, netfn: u8, cmd: u8, cc: u8) -> BmcError {
    BmcError::Protocol {
        bmc: bmc.to_string(),
        detail: format!(
            "netfn {netfn:#04x} command {cmd:#04x} failed: {} (completion code {cc:#04x})",
            completion_text(cc)
        ),
    }
}

/// Get FRU Inventory Area Info data: `(size in bytes, accessed by words)`.
pub fn parse_fru_area_info(data: &[u8]) -> Option<(usize, bool)> {
    match data {
        [lo, hi, access, ..] => Some((
            usize::from(u16::from_le_bytes([*lo, *hi])),
            access & 0x01 != 0,
        )),
        _ => None,
    }
}

/// Read FRU Data request: device, offset (little-endian, in bytes or words as the device is accessed), count.
pub fn read_fru_request(device: u8, offset: u16, count: u8) -> [u8; 4] {
    let [lo, hi] = offset.to_le_bytes();
    [device, lo, hi, count]
}

/// The bytes of a Read FRU Data response (`[count, data…]`; `count` in words for word-accessed devices);
/// `None` when the response holds fewer bytes than it says.
pub fn parse_read_fru(data: &[u8], words: bool) -> Option<&[u8]> {
    let (&count, rest) = data.split_first()?;
    let n = usize::from(count) * if words { 2 } else { 1 };
    rest.get(..n)
}

/// Completion codes of Get FRU Inventory Area Info that mean "no FRU device 0 here": invalid command (no FRU
/// support), requested data not present, and invalid data field (ipmi_sim's answer for a device id it has no
/// FRU for).
pub const FRU_ABSENT: [u8; 3] = [0xc1, 0xcb, 0xcc];

/// Human-readable completion codes (IPMI v2.0 table 5-2) for error messages.
pub fn completion_text(cc: u8) -> &'static str {
    match cc {
        0xc0 => "node busy",
        0xc1 => "invalid command",
        0xc2 => "command invalid for given LUN",
        0xc3 => "timeout while processing command",
        0xc4 => "out of space",
        0xc5 => "reservation cancelled or invalid",
        0xc6 => "request data truncated",
        0xc7 => "request data length invalid",
        0xc8 => "request data field length limit exceeded",
        0xc9 => "parameter out of range",
        0xca => "cannot return number of requested data bytes",
        0xcb => "requested sensor, data, or record not present",
        0xcc => "invalid data field in request",
        0xcd => "command illegal for specified sensor or record type",
        0xce => "command response could not be provided",
        0xcf => "cannot execute duplicated request",
        0xd0 => "SDR repository in update mode",
        0xd1 => "device in firmware update mode",
        0xd2 => "BMC initialization in progress",
        0xd3 => "destination unavailable",
        0xd4 => "insufficient privilege level",
        0xd5 => "command not supported in present state",
        0xd6 => "command sub-function disabled or unavailable",
        0xff => "unspecified error",
        _ => "unknown completion code",
    }
}

/// RMCP+ status codes (IPMI v2.0 table 13-15) from Open Session and RAKP responses.
pub fn rmcp_status_text(code: u8) -> &'static str {
    match code {
        0x01 => "insufficient resources to create a session",
        0x02 => "invalid session ID",
        0x03 => "invalid payload type",
        0x04 => "invalid authentication algorithm",
        0x05 => "invalid integrity algorithm",
        0x06 => "no matching authentication payload",
        0x07 => "no matching integrity payload",
        0x08 => "inactive session ID",
        0x09 => "invalid role",
        0x0a => "unauthorized role or privilege level requested",
        0x0b => "insufficient resources to create a session at the requested role",
        0x0c => "invalid name length",
        0x0d => "unauthorized name",
        0x0e => "unauthorized GUID",
        0x0f => "invalid integrity check value",
        0x10 => "invalid confidentiality algorithm",
        0x11 => "no cipher suite match with proposed security algorithms",
        0x12 => "illegal or unrecognized parameter",
        _ => "unknown status code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_flags_encode_valid_persistent_and_efi_bits() {
        let b = |device, persistent, mode| BootOverride {
            device,
            persistent,
            mode,
        };
        assert_eq!(
            set_boot_flags(b(BootDevice::Pxe, false, BootMode::Legacy)),
            Some([5, 0x80, 0x04, 0, 0, 0])
        );
        assert_eq!(
            set_boot_flags(b(BootDevice::Pxe, true, BootMode::Uefi)),
            Some([5, 0xe0, 0x04, 0, 0, 0])
        );
        assert_eq!(
            set_boot_flags(b(BootDevice::Disk, false, BootMode::Uefi)),
            Some([5, 0xa0, 0x08, 0, 0, 0])
        );
        assert_eq!(
            set_boot_flags(b(BootDevice::Cdrom, true, BootMode::Legacy)),
            Some([5, 0xc0, 0x14, 0, 0, 0])
        );
        assert_eq!(
            set_boot_flags(b(BootDevice::BiosSetup, false, BootMode::Legacy)),
            Some([5, 0x80, 0x18, 0, 0, 0])
        );
        assert_eq!(
            set_boot_flags(b(BootDevice::UefiHttp, false, BootMode::Uefi)),
            None
        );
    }

    #[test]
    fn boot_flags_parse_with_and_without_the_valid_bit() {
        let s = parse_boot_flags(&[0x01, 0x05, 0xe0, 0x04, 0, 0, 0]).unwrap();
        assert_eq!(
            s,
            BootOverrideStatus {
                device: Some(BootDevice::Pxe),
                persistent: Some(true),
                mode: Some(BootMode::Uefi)
            }
        );
        let s = parse_boot_flags(&[0x01, 0x05, 0x00, 0x04, 0, 0, 0]).unwrap();
        assert_eq!(
            s,
            BootOverrideStatus {
                device: Some(BootDevice::Pxe),
                persistent: None,
                mode: None
            }
        );
        let s = parse_boot_flags(&[0x01, 0x05, 0x80, 0x00, 0, 0, 0]).unwrap();
        assert_eq!(s.device, None);
        assert!(parse_boot_flags(&[0x01, 0x04, 0x80, 0x04]).is_none());
        assert!(parse_boot_flags(&[0x01]).is_none());
    }

    #[test]
    fn fru_requests_and_responses() {
        assert_eq!(
            parse_fru_area_info(&[0x60, 0x00, 0x00]),
            Some((0x60, false))
        );
        assert_eq!(parse_fru_area_info(&[0x00, 0x04, 0x01]), Some((1024, true)));
        assert_eq!(parse_fru_area_info(&[0x60, 0x00]), None);
        assert_eq!(read_fru_request(0, 0x0123, 24), [0, 0x23, 0x01, 24]);
        assert_eq!(
            parse_read_fru(&[3, 0xaa, 0xbb, 0xcc, 0xdd], false),
            Some(&[0xaa, 0xbb, 0xcc][..])
        );
        assert_eq!(
            parse_read_fru(&[2, 1, 2, 3, 4], true),
            Some(&[1, 2, 3, 4][..])
        );
        // A count larger than the data: refused, not read past.
        assert_eq!(parse_read_fru(&[9, 1, 2], false), None);
        assert_eq!(parse_read_fru(&[], false), None);
    }

    #[test]
    fn chassis_status_and_caps() {
        assert_eq!(power_state(&[0x01, 0, 0]), Some(PowerState::On));
        assert_eq!(power_state(&[0x60, 0, 0]), Some(PowerState::Off));
        assert_eq!(power_state(&[]), None);
        assert!(supports_v20(&[0x01, 0x80 | 0x15, 0x04, 0x02, 0, 0, 0, 0]));
        assert!(!supports_v20(&[0x01, 0x15, 0x04, 0x00]));
    }
}
