//! Discovered hosts become BeowulfHosts (`beowulf manager --discovery-namespace`): an unknown MAC that
//! network-booted on the discovery network, booted the inspection image and reported, is written as
//! BeowulfHost `discovered-<mac>` in the discovery namespace, labelled [`DISCOVERED_LABEL`], offline, with its
//! report in `status.hardware` and state `discovered`. The host controller leaves such a host alone (it has no
//! BMC yet): an operator (or a policy) accepts it by filling in `spec.bmc` and `spec.interfaces` and removing
//! the label; it then registers like any host, already inspected.
//!
//! One MAC is one object: the name comes from the MAC, creation is idempotent (AlreadyExists is success), and
//! a MAC that any BeowulfHost already boots from is never written (the boot plane does not even answer it).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::{Context, Error, write_status};
use crate::api::BeowulfHost;
use crate::api::conditions;
use crate::api::host::HostStateName;
use crate::boot::MacAddr;
use crate::hardware::Hardware;

/// Marks a BeowulfHost as discovered and not yet accepted: the controllers do not drive it.
pub const DISCOVERED_LABEL: &str = "beowulf.infrastructure.cluster.x-k8s.io/discovered";

/// Whether `host` is discovered and not accepted yet.
pub fn is_discovered(host: &BeowulfHost) -> bool {
    use kube::ResourceExt as _;
    host.labels().contains_key(DISCOVERED_LABEL)
}

/// Writes (or updates) the BeowulfHost of the host discovered with `mac`, whose report arrived at `at`
/// (Unix seconds). Returns `false` when some BeowulfHost already boots from that MAC (nothing written).
pub async fn record(
    ctx: &Context,
    namespace: &str,
    mac: MacAddr,
    hardware: Hardware,
    at: i64,
) -> Result<bool, Error> {
    let name = crate::boot::discovery::host_name(&mac);
    if let Some(hosts) = &ctx.hosts
        && let Some(other) = hosts.with_boot_mac(&mac)
        && other.metadata.name.as_deref() != Some(name.as_str())
    {
        tracing::info!(%mac, host = ?other.metadata.name, "discovered MAC belongs to a registered host; not recorded");
        return Ok(false);
    }
    let api: Api<BeowulfHost> = Api::namespaced(ctx.client.clone(), namespace);
    let object: BeowulfHost = serde_json::from_value(json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1",
        "kind": "BeowulfHost",
        "metadata": {"name": name, "namespace": namespace, "labels": {DISCOVERED_LABEL: "true"}},
        "spec": {"online": false, "bootMACAddress": mac.to_string(),
                 "bmc": {"address": "", "credentialsSecretRef": {"name": ""}}},
    }))?;
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => tracing::info!(%mac, host = %name, %namespace, "discovered host recorded"),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let current = api.get(&name).await?;
    if !is_discovered(&current) {
        // Accepted meanwhile: its controller owns its status now.
        return Ok(true);
    }
    let mut status = current.status.clone().unwrap_or_default();
    status.state = HostStateName::Discovered;
    let at_time = jiff::Timestamp::from_second(at).ok().map(Time);
    conditions::set(
        &mut status.conditions,
        conditions::INSPECTED,
        true,
        "Inspected",
        &hardware.summary(),
        current.metadata.generation,
        ctx.now_ts(),
    );
    status.hardware = Some(hardware);
    status.inspected_at = at_time;
    write_status(&api, &name, current.status.as_ref(), &status).await?;
    Ok(true)
}
