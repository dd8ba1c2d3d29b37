//! `BeowulfHost`: one physical server in the inventory.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{ConsumerRef, LocalRef, SecretKeyRef};

/// A physical server: how to reach its BMC, how it network-boots, and who (if anyone) holds it.
#[derive(CustomResource, Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "BeowulfHost",
    plural = "beowulfhosts",
    shortname = "bwh",
    category = "cluster-api",
    namespaced,
    status = "BeowulfHostStatus",
    derive = "Default",
    derive = "PartialEq",
    label("cluster.x-k8s.io/v1beta2", "v1alpha1"),
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state","description":"Provisioning state"}"#,
    printcolumn = r#"{"name":"Power","type":"string","jsonPath":".status.powerState","description":"Power state reported by the BMC"}"#,
    printcolumn = r#"{"name":"Consumer","type":"string","jsonPath":".spec.consumerRef.name","description":"Machine holding the host"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.lastBootPhase","description":"Last boot phase seen"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BeowulfHostSpec {
    /// Whether the host may be powered on at all. An offline host is never claimed.
    #[serde(default = "default_true")]
    pub online: bool,
    /// The MAC address the host PXE boots from (`aa:bb:cc:dd:ee:ff`).
    #[serde(rename = "bootMACAddress")]
    pub boot_mac_address: String,
    /// The host's network interfaces with their static addresses (the DHCP reservations).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<HostInterface>,
    /// How to reach the host's baseboard management controller.
    pub bmc: BmcSpec,
    /// Firmware boot mode.
    #[serde(default)]
    pub boot_mode: BootMode,
    /// CPU architecture (`x86_64`, `aarch64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// The failure domain (rack) the host sits in; matched against `Machine.spec.failureDomain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_domain: Option<String>,
    /// For a host provisioned without a CAPI Machine (an HPC compute node): the image to boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<LocalRef>,
    /// For a host provisioned without a CAPI Machine: the Secret key holding its cloud-init user-data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<SecretKeyRef>,
    /// The object that claimed the host. Written by the BeowulfMachine controller with a
    /// resourceVersion-guarded update, so two machines can never hold one host; kept in spec so that
    /// `clusterctl move` carries the binding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_ref: Option<ConsumerRef>,
    /// Local disks every machine on this host keeps (formatted when blank, mounted, kept across reboots and
    /// re-provisioning; a disk holding a filesystem not labelled `bw-<name>` is never touched). A machine's
    /// `localDisks` add to these (and replace one of the same name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_disks: Vec<crate::storage::LocalDisk>,
    /// What happens to the local disks when a machine releases the host: `none` (kept for the next machine),
    /// `metadata` or `wipe`.
    #[serde(default, skip_serializing_if = "is_no_cleaning")]
    pub cleaning: crate::storage::Cleaning,
}

fn is_no_cleaning(c: &crate::storage::Cleaning) -> bool {
    *c == crate::storage::Cleaning::None
}

fn default_true() -> bool {
    true
}

/// A network interface with its static IPv4 address.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostInterface {
    /// Interface name, informational (`eno1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "macAddress")]
    pub mac_address: String,
    /// Address with prefix length, for example `10.0.0.11/24`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// A host's BMC.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BmcSpec {
    /// `ipmi://HOST[:PORT]` or `redfish://HOST[/SYSTEM]` (or `redfish+https://…`).
    pub address: String,
    /// Secret (same namespace) with keys `username` and `password`, and optionally `bmcKey`: the IPMI BMC key
    /// (Kg) in hex, as `ipmitool -y` takes it.
    pub credentials_secret_ref: LocalRef,
    /// IPMI cipher suite (3 or 17; default: negotiated with the BMC, 17 preferred, then 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher_suite: Option<u8>,
    /// Redfish: skip TLS verification. Only for lab BMCs with self-signed certificates.
    #[serde(
        default,
        rename = "insecureTLS",
        skip_serializing_if = "Option::is_none"
    )]
    pub insecure_tls: Option<bool>,
}

/// Firmware boot mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    #[default]
    Uefi,
    Legacy,
}

/// Where a host is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostStateName {
    /// The BMC has not been reached yet.
    #[default]
    Registering,
    /// Powered off, free to be claimed.
    Available,
    /// Booting the inspection image; never claimed until its report is in and it is off again.
    Inspecting,
    /// Found by discovery (an unknown MAC that booted the inspection image); not driven until accepted: give
    /// it `spec.bmc` and `spec.interfaces` and remove the label `beowulf.infrastructure.cluster.x-k8s.io/discovered`.
    Discovered,
    /// Booting towards the node's callback.
    Provisioning,
    /// The node called back.
    Provisioned,
    /// Being powered off and released.
    Deprovisioning,
    /// Released with `spec.cleaning` `metadata` or `wipe`: booting to clean its local disks, then powered off.
    Cleaning,
    /// Provisioning failed after every retry; see the `Provisioned` condition's reason.
    Error,
}

/// What the controllers observed and decided about the host. All of it can be rebuilt: a host whose status
/// was lost (`clusterctl move`) starts over at `registering`, and a claimed host whose machine already has a
/// providerID is recognised as provisioned.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BeowulfHostStatus {
    #[serde(default)]
    pub state: HostStateName,
    /// `on`, `off` or `unknown` as last read from the BMC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_state: Option<String>,
    /// The last boot phase the boot plane recorded (`dhcp-offer` … `callback`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_boot_phase: Option<String>,
    /// The current boot attempt (1 = first boot; each power-cycle retry adds one).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub boot_attempt: u32,
    /// The boot in progress, kept so that a restarted manager (or a new leader) serves it on instead of
    /// starting it again: the per-boot token's SHA-256 (never the token), when it expires, and the last phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_boot: Option<LiveBootStatus>,
    /// When the current state (or boot attempt) began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_since: Option<Time>,
    /// During a retry back-off: when the host is powered on again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Time>,
    /// Consecutive failed BMC operations (drives the BMC back-off).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bmc_failures: u32,
    /// What the host's last in-band inspection reported (CPU, memory, disks, NICs, PCI devices, DMI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<crate::hardware::Hardware>,
    /// When that inspection report arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspected_at: Option<Time>,
    /// What the current boot's node did with each local disk (`formatted`, `mounted`, `foreign`, `missing`,
    /// `failed`, `wiped`); the `LocalDisks` condition sums it up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_disks: Vec<crate::storage::DiskResult>,
    /// What the BMC says about the hardware (Redfish inventory or IPMI FRU), read once the host is available;
    /// kept apart from the in-band `hardware`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc_inventory: Option<crate::hardware::out_of_band::OutOfBand>,
    /// What remediation did to the host, oldest first (at most [`REMEDIATION_HISTORY`] entries): each power
    /// cycle and re-provisioning a `BeowulfRemediation` asked for, when it was carried out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remediations: Vec<RemediationRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A boot in progress as the host's status keeps it (`BeowulfHostStatus::live_boot`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveBootStatus {
    /// SHA-256 of the per-boot token, hex: enough to recognise the token, useless to present it.
    pub token_sha256: String,
    pub token_expires: Time,
    /// The boot plane the node talks to (`ADDRESS:PORT`): only a manager serving there can take the boot on.
    pub server: String,
    /// The furthest boot phase reached, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_time: Option<Time>,
}

/// How many remediation records a host keeps.
pub const REMEDIATION_HISTORY: usize = 10;

/// One remediation step carried out on a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemediationRecord {
    /// The request's id (`<BeowulfRemediation uid>/<step>`): the remediation controller's receipt.
    pub id: String,
    /// `PowerCycle` or `Reprovision`.
    pub action: String,
    /// When the host's driver carried it out.
    pub at: Time,
    /// The Machine the host served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// What was done (the engine's message).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}
