//! The inventory file as written (YAML), before validation. Every value that can be wrong in a way YAML cannot
//! see (a MAC, an address, a reference to another entry) keeps its location for the error message.

use std::path::PathBuf;

use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InventoryFile {
    /// The namespace in provider IDs (`beowulf://<namespace>/<host>`); default `standalone`.
    #[serde(default)]
    pub namespace: Option<Spanned<String>>,
    #[serde(default)]
    pub networks: Vec<NetworkFile>,
    #[serde(default)]
    pub images: Vec<ImageFile>,
    #[serde(default)]
    pub hosts: Vec<HostFile>,
    /// In-band inspection: the image hosts boot to report their hardware.
    #[serde(default)]
    pub inspection: Option<InspectionFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InspectionFile {
    /// One of `images`: hosts without a hardware report, or asked to be inspected again, boot it.
    pub image: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkFile {
    pub name: Spanned<String>,
    pub subnet: Spanned<String>,
    #[serde(default)]
    pub gateway: Option<Spanned<String>>,
    #[serde(default)]
    pub dns: Vec<Spanned<String>>,
    #[serde(default)]
    pub domain: Option<Spanned<String>>,
    #[serde(default)]
    pub mtu: Option<Spanned<u16>>,
    #[serde(default)]
    pub lease_seconds: Option<Spanned<u32>>,
    pub boot_server: Spanned<String>,
    /// Unknown MACs that network-boot here get an address from this range and are inspected.
    #[serde(default)]
    pub discovery: Option<DiscoveryFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DiscoveryFile {
    /// `FIRST-LAST`, both in the network's subnet.
    pub range: Spanned<String>,
    #[serde(default)]
    pub lease_seconds: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageFile {
    pub name: Spanned<String>,
    #[serde(default)]
    pub format: Option<Spanned<String>>,
    pub kernel: ArtifactFile,
    #[serde(default)]
    pub initrds: Vec<ArtifactFile>,
    #[serde(default)]
    pub rootfs: Option<ArtifactFile>,
    #[serde(default)]
    pub cmdline: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ArtifactFile {
    #[serde(default)]
    pub path: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    #[serde(default)]
    pub sha256: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HostFile {
    pub name: Spanned<String>,
    pub mac: Spanned<String>,
    pub ip: Spanned<String>,
    #[serde(default)]
    pub network: Option<Spanned<String>>,
    pub image: Spanned<String>,
    #[serde(default)]
    pub user_data: Option<String>,
    #[serde(default)]
    pub user_data_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub vendor_data: Option<String>,
    #[serde(default)]
    pub vendor_data_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub network_config: Option<String>,
    #[serde(default)]
    pub ignition: Option<String>,
    #[serde(default)]
    pub ignition_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub bmc: Option<BmcFile>,
    /// Local disks its node keeps (`crate::storage`), each by serial, wwn or byPath.
    #[serde(default)]
    pub local_disks: Vec<crate::storage::LocalDisk>,
}

// Written by hand: the derived one would print user-data and ignition.
impl std::fmt::Debug for HostFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostFile")
            .field("name", &self.name.value)
            .field("mac", &self.mac.value)
            .field("ip", &self.ip.value)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BmcFile {
    pub address: Spanned<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub password_env: Option<Spanned<String>>,
    /// IPMI BMC key (Kg) file, hex as for `ipmitool -y`.
    #[serde(default)]
    pub bmc_key_file: Option<Spanned<PathBuf>>,
}

impl std::fmt::Debug for BmcFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BmcFile")
            .field("address", &self.address.value)
            .finish_non_exhaustive()
    }
}
