//! The BeowulfMachine controller (CAPI InfraMachine).
//!
//! Contract order: owner Machine → Cluster → pause → deletion → finalizer → Cluster infrastructure
//! provisioned → bootstrap data → claim a host → drive it to provisioned → providerID, addresses,
//! `status.initialization.provisioned`, `Ready`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::capi::{CLUSTER_NAME_LABEL, CONTROL_PLANE_LABEL, Cluster, Machine};
use super::hostops::{self, ProvisionInput, host_ips, provider_id};
use super::remediation;
use super::spread::{self, GROUP_LABEL, PREVIOUS_GROUP_LABEL, RELEASED_AT_ANNOTATION};
use super::{
    Context, Error, MACHINE_FINALIZER, add_finalizer, has_paused_annotation, remove_finalizer,
    write_status,
};
use crate::api::conditions::{self, PAUSED, READY};
use crate::api::host::HostStateName;
use crate::api::{
    API_VERSION, BeowulfHost, BeowulfImage, BeowulfMachine, BeowulfMachineStatus, ConsumerRef,
    Initialization, LocalRef, MachineAddress,
};
use crate::hardware::Hardware;
use crate::hardware::requirements::explain;
use crate::provisioning::io::UserDataFormat;
use crate::provisioning::{Goal, HostState};

/// How long to wait before looking for a free host again.
pub const NO_HOST_REQUEUE: Duration = Duration::from_secs(30);

/// Reasons on the `Ready` condition besides the engine's.
pub mod reason {
    pub const WAITING_FOR_CLUSTER_INFRASTRUCTURE: &str = "WaitingForClusterInfrastructure";
    pub const WAITING_FOR_BOOTSTRAP_DATA: &str = "WaitingForBootstrapData";
    pub const WAITING_FOR_CONTROL_PLANE: &str = "WaitingForControlPlaneInitialized";
    pub const NO_HOST_AVAILABLE: &str = "NoHostAvailable";
    /// A Machine of the same group is being deleted: its host comes back to the group (a rollout on fixed
    /// hardware), so the machine waits for it instead of taking another host.
    pub const WAITING_FOR_HOST_RELEASE: &str = "WaitingForHostRelease";
    /// `spec.hardwareRequirements` cannot be read (a bad quantity, a count of 0, an unknown GPU vendor); nothing
    /// is claimed until it is fixed.
    pub const INVALID_HARDWARE_REQUIREMENTS: &str = "InvalidHardwareRequirements";
    pub const BOOTSTRAP_SECRET_INVALID: &str = "BootstrapSecretInvalid";
    pub const IMAGE_NOT_FOUND: &str = "ImageNotFound";
    pub const DELETING: &str = "Deleting";
    /// The claimed BeowulfHost is being deleted (its controller deprovisions it) or is gone. `hostRef` is
    /// immutable: the machine needs remediation (a new Machine), as CAPI expects of lost infrastructure.
    pub const HOST_DELETED: &str = "HostDeleted";
}

/// The owner `Machine`'s name: group `cluster.x-k8s.io`, kind `Machine`, any version.
pub fn owner_machine(bm: &BeowulfMachine) -> Option<String> {
    bm.owner_references()
        .iter()
        .find(|o| {
            o.kind == "Machine" && o.api_version.split('/').next() == Some("cluster.x-k8s.io")
        })
        .map(|o| o.name.clone())
}

fn consumer_of(bm: &BeowulfMachine) -> ConsumerRef {
    ConsumerRef {
        api_version: API_VERSION.to_string(),
        kind: "BeowulfMachine".to_string(),
        name: bm.name_any(),
        uid: bm.uid(),
    }
}

fn held_by(host: &BeowulfHost, bm: &BeowulfMachine) -> bool {
    host.spec.consumer_ref.as_ref().is_some_and(|c| {
        c.kind == "BeowulfMachine"
            && c.name == bm.name_any()
            && (c.uid.is_none() || bm.uid().is_none() || c.uid == bm.uid())
    })
}

/// Claims `host` for `bm`: a merge patch carrying the resourceVersion the host was read at, so of two
/// machines that saw the same free host, exactly one succeeds and the other gets 409 Conflict. The same patch
/// records the machine's group on the host ([`GROUP_LABEL`], removed when the machine has none), so the
/// hosts show how a group is spread over failure domains exactly when they show the claims.
pub async fn claim(
    api: &Api<BeowulfHost>,
    host: &BeowulfHost,
    bm: &BeowulfMachine,
) -> Result<Option<BeowulfHost>, Error> {
    let patch = json!({
        "metadata": {
            "resourceVersion": host.resource_version(),
            "labels": {GROUP_LABEL: spread::group_of(bm), PREVIOUS_GROUP_LABEL: null},
            "annotations": {RELEASED_AT_ANNOTATION: null},
        },
        "spec": {"consumerRef": consumer_of(bm)},
    });
    match api
        .patch(
            &host.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(h) => Ok(Some(h)),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn selectable(host: &BeowulfHost, bm: &BeowulfMachine, failure_domain: Option<&str>) -> bool {
    if host.spec.consumer_ref.is_some()
        || !host.spec.online
        || host.metadata.deletion_timestamp.is_some()
    {
        return false;
    }
    if host.status.as_ref().map(|s| s.state) != Some(HostStateName::Available)
        || remediation::is_unhealthy(host)
    {
        return false;
    }
    if let Some(fd) = failure_domain
        && host.spec.failure_domain.as_deref() != Some(fd)
    {
        return false;
    }
    match &bm.spec.host_selector {
        None => true,
        Some(sel) => Selector::try_from(sel.clone()).is_ok_and(|s| s.matches(host.labels())),
    }
}

fn hardware_of(host: &BeowulfHost) -> Option<&Hardware> {
    host.status.as_ref().and_then(|s| s.hardware.as_ref())
}

/// The `NoHostAvailable` message when no host passes the other filters (or every one was claimed first).
const NO_HOST_MESSAGE: &str =
    "no available BeowulfHost matches spec.hostSelector (and the Machine's failure domain)";

/// What [`find_or_claim`] found.
enum Found {
    Host(Box<BeowulfHost>),
    /// Nothing to claim; the `NoHostAvailable` message.
    None(String),
    /// `spec.hardwareRequirements` is invalid; why.
    Invalid(String),
    /// A machine of the group is being deleted; wait for the host it releases (why).
    AwaitRelease(String),
}

/// How often a machine waiting for its group's released host looks again (nothing wakes it on the release).
const AWAIT_RELEASE_REQUEUE: Duration = Duration::from_secs(5);

/// A Machine of `bm`'s group (selected by the label its group comes from) that is being deleted, for at most
/// [`spread::REUSE_HOLD`] so far: its host will come back to the group. A deletion that takes longer (a BMC
/// that does not answer) no longer holds the group's new machines back.
async fn releasing_machine(
    ctx: &Context,
    ns: &str,
    bm: &BeowulfMachine,
    now: i64,
) -> Result<Option<String>, Error> {
    let Some((label, value)) = spread::group_source(bm) else {
        return Ok(None);
    };
    let hold = i64::try_from(spread::REUSE_HOLD.as_secs()).unwrap_or(i64::MAX);
    let lp = ListParams::default().labels(&format!("{label}={value}"));
    let machines = Api::<Machine>::namespaced(ctx.client.clone(), ns)
        .list(&lp)
        .await?;
    Ok(machines
        .items
        .iter()
        .filter(|m| {
            m.metadata
                .deletion_timestamp
                .as_ref()
                .is_some_and(|t| now < t.0.as_second().saturating_add(hold))
        })
        .map(ResourceExt::name_any)
        .min())
}

/// For a machine without `spec.hostRef`: the host it holds (a lost hostRef write), else a freshly claimed one
/// that passes [`selectable`] and meets `spec.hardwareRequirements` (validated first).
async fn find_or_claim(
    ctx: &Context,
    bm: &BeowulfMachine,
    machine: &Machine,
) -> Result<Found, Error> {
    let ns = bm.namespace().unwrap_or_default();
    let api: Api<BeowulfHost> = Api::namespaced(ctx.client.clone(), &ns);
    // Candidates from the host controller's store (in memory); an API list only without one (tests) or
    // before its first list completed.
    let cached = match &ctx.hosts {
        Some(cache) => cache.hosts(&ns).await,
        None => None,
    };
    let from_store = cached.is_some();
    let mut hosts: Vec<Arc<BeowulfHost>> = match cached {
        Some(h) => h,
        None => api
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .map(Arc::new)
            .collect(),
    };
    // A claim whose hostRef write was lost (crash between the two writes) is picked up again.
    if let Some(h) = hosts.iter().find(|h| held_by(h, bm)) {
        return Ok(Found::Host(Box::new((**h).clone())));
    }
    let reqs = bm.spec.hardware_requirements.clone().unwrap_or_default();
    if let Err(why) = reqs.validate() {
        return Ok(Found::Invalid(why));
    }
    // Every host, claimed ones included, for spreading (API list only; the cache counts from its store).
    let listed = (!from_store).then(|| hosts.clone());
    let fd = machine.spec.failure_domain.as_deref();
    hosts.retain(|h| selectable(h, bm, fd));
    // Hosts another group released a moment ago wait for that group's next machine (a rollout on fixed
    // hardware); counted for the message when nothing else is left.
    let group = spread::group_of(bm);
    let now = ctx.now();
    let before = hosts.len();
    hosts.retain(|h| !spread::kept_for_another_group(h, group.as_deref(), now));
    let kept = before - hosts.len();
    // Hardware last, so that when nothing is left the message can say which requirement excluded how many
    // of the hosts that were otherwise eligible.
    let (candidates, excluded): (Vec<_>, Vec<_>) = hosts
        .into_iter()
        .partition(|h| reqs.check(hardware_of(h)).is_ok());
    // Reuse on fixed hardware: while a machine of the group is being deleted and no host the group released
    // is free yet, wait for its host instead of taking a spare (with its local data, the host belongs to the
    // group's replacement).
    if !candidates
        .iter()
        .any(|h| spread::reused_by(h, group.as_deref()))
        && let Some(m) = releasing_machine(ctx, &ns, bm, now).await?
    {
        return Ok(Found::AwaitRelease(format!(
            "Machine {m} of the same group is being deleted: waiting for the host it releases"
        )));
    }
    if candidates.is_empty() && !excluded.is_empty() {
        let why = explain(&reqs, excluded.iter().map(|h| hardware_of(h)));
        return Ok(Found::None(why));
    }
    // Reuse, then spreading: the hosts the machine's group released first, then fewest hosts of the group
    // in the failure domain, then by name (plain name order without a group). With the cache, the order is
    // computed at each attempt together with the reservation, counting the claims the store does not show
    // yet.
    let mut candidates = candidates;
    if ctx.hosts.is_none() {
        let counts = match (&group, &listed) {
            (Some(g), Some(all)) => spread::counts(all, g),
            _ => Default::default(),
        };
        spread::order(&mut candidates, &counts, group.as_deref());
    }
    loop {
        let next = match &ctx.hosts {
            Some(cache) => {
                cache.reserve_next(&ns, &candidates, group.as_deref(), listed.as_deref())
            }
            None => candidates.first().cloned(),
        };
        let Some(host) = next else { break };
        let name = host.name_any();
        candidates.retain(|h| h.name_any() != name);
        let result = match claim(&api, &host, bm).await {
            Ok(r) => r,
            Err(e) => {
                if let Some(cache) = &ctx.hosts {
                    cache.unreserve(&host);
                }
                return Err(e);
            }
        };
        if let Some(claimed) = result {
            tracing::info!(machine = %bm.name_any(), host = %name, group = group.as_deref().unwrap_or(""),
                failure_domain = spread::domain_of(&host), "claimed host");
            return Ok(Found::Host(Box::new(claimed)));
        }
        if let Some(cache) = &ctx.hosts {
            cache.lost(&host);
        }
        tracing::debug!(host = %name, "host claimed concurrently; trying the next one");
    }
    if kept > 0 {
        return Ok(Found::None(format!(
            "{NO_HOST_MESSAGE}; {kept} released host(s) are kept for the next machine of the group that released them (up to {}s after the release)",
            spread::REUSE_HOLD.as_secs()
        )));
    }
    Ok(Found::None(NO_HOST_MESSAGE.to_string()))
}

async fn bootstrap_data(
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Result<Result<(Vec<u8>, UserDataFormat), String>, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let Some(secret) = secrets.get_opt(name).await? else {
        return Ok(Err(format!("bootstrap data Secret {ns}/{name} not found")));
    };
    let data = secret.data.unwrap_or_default();
    let Some(value) = data.get("value") else {
        return Ok(Err(format!(
            "bootstrap data Secret {ns}/{name} has no key \"value\""
        )));
    };
    let format = match data
        .get("format")
        .map(|b| String::from_utf8_lossy(&b.0).to_string())
    {
        None => UserDataFormat::CloudConfig,
        Some(f) if f == "cloud-config" => UserDataFormat::CloudConfig,
        Some(f) if f == "ignition" => UserDataFormat::Ignition,
        Some(f) => {
            return Ok(Err(format!(
                "bootstrap data Secret {ns}/{name}: unknown format {f:?}"
            )));
        }
    };
    Ok(Ok((value.0.clone(), format)))
}

/// Reconciles one BeowulfMachine.
pub async fn reconcile(bm: Arc<BeowulfMachine>, ctx: Arc<Context>) -> Result<Action, Error> {
    let r = reconcile_inner(&bm, &ctx).await;
    ctx.metrics.count("BeowulfMachine", r.is_ok());
    r
}

async fn reconcile_inner(bm: &BeowulfMachine, ctx: &Context) -> Result<Action, Error> {
    let ns = bm
        .namespace()
        .ok_or_else(|| Error::Invalid("BeowulfMachine without namespace".into()))?;
    let name = bm.name_any();
    let api: Api<BeowulfMachine> = Api::namespaced(ctx.client.clone(), &ns);
    let now = ctx.now_ts();
    let generation = bm.meta().generation;
    let old = bm.status.clone();
    let mut status = old.clone().unwrap_or_default();

    let Some(machine_name) = owner_machine(bm) else {
        tracing::debug!(machine = %name, "no owner Machine yet");
        return Ok(Action::await_change());
    };
    let Some(machine) = Api::<Machine>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&machine_name)
        .await?
    else {
        return Ok(Action::await_change());
    };
    let cluster_name = machine
        .labels()
        .get(CLUSTER_NAME_LABEL)
        .cloned()
        .unwrap_or_else(|| machine.spec.cluster_name.clone());
    let Some(cluster) = Api::<Cluster>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&cluster_name)
        .await?
    else {
        return Ok(Action::await_change());
    };

    // Paused stops everything, deletion included (CAPI's EnsurePausedCondition order).
    let paused = cluster.spec.paused == Some(true) || has_paused_annotation(bm);
    let (pr, pm) = if paused {
        ("Paused", "reconciliation is paused")
    } else {
        ("NotPaused", "")
    };
    conditions::set(
        &mut status.conditions,
        PAUSED,
        paused,
        pr,
        pm,
        generation,
        now,
    );
    if paused {
        write_status(&api, &name, old.as_ref(), &status).await?;
        return Ok(Action::await_change());
    }

    if bm.meta().deletion_timestamp.is_some() {
        return reconcile_delete(bm, ctx, status).await;
    }
    let bm = &add_finalizer(&api, bm, MACHINE_FINALIZER).await?;
    // Conditions carry the generation of the object they were computed for.
    let generation = bm.meta().generation;
    conditions::set(
        &mut status.conditions,
        PAUSED,
        false,
        "NotPaused",
        "",
        generation,
        now,
    );

    let wait = |status: &mut BeowulfMachineStatus, reason: &str, message: &str| {
        conditions::set(
            &mut status.conditions,
            READY,
            false,
            reason,
            message,
            generation,
            now,
        );
    };
    if !cluster.infrastructure_provisioned() {
        wait(
            &mut status,
            reason::WAITING_FOR_CLUSTER_INFRASTRUCTURE,
            "Cluster.status.initialization.infrastructureProvisioned is not true",
        );
        write_status(&api, &name, old.as_ref(), &status).await?;
        return Ok(Action::await_change());
    }
    let Some(secret_name) = machine.spec.bootstrap.data_secret_name.clone() else {
        let control_plane = machine.labels().contains_key(CONTROL_PLANE_LABEL);
        if !control_plane && !cluster.control_plane_initialized() {
            wait(
                &mut status,
                reason::WAITING_FOR_CONTROL_PLANE,
                "workers wait for the control plane",
            );
        } else {
            wait(
                &mut status,
                reason::WAITING_FOR_BOOTSTRAP_DATA,
                "Machine.spec.bootstrap.dataSecretName is not set",
            );
        }
        write_status(&api, &name, old.as_ref(), &status).await?;
        return Ok(Action::await_change());
    };

    let mut held = None;
    if let Some(r) = &bm.spec.host_ref {
        let host = Api::<BeowulfHost>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&r.name)
            .await?;
        let gone = match &host {
            None => Some(format!("BeowulfHost {ns}/{} no longer exists", r.name)),
            Some(h) if h.metadata.deletion_timestamp.is_some() => Some(format!(
                "BeowulfHost {ns}/{} is being deleted; its controller deprovisions it",
                r.name
            )),
            Some(_) => None,
        };
        if let Some(message) = gone {
            // The host controller is the only writer of a deleting host; nothing to drive from here.
            wait(&mut status, reason::HOST_DELETED, &message);
            write_status(&api, &name, old.as_ref(), &status).await?;
            announce(ctx, bm, old.as_ref(), &status).await;
            return Ok(Action::await_change());
        }
        match host {
            Some(h) if held_by(&h, bm) => held = Some(h),
            _ => {
                return Err(Error::Invalid(format!(
                    "host {ns}/{} in spec.hostRef is not claimed by this machine",
                    r.name
                )));
            }
        }
    }
    let found = match held {
        Some(h) => Found::Host(Box::new(h)),
        None => find_or_claim(ctx, bm, &machine).await?,
    };
    let host = match found {
        Found::Host(h) => *h,
        Found::None(message) => {
            wait(&mut status, reason::NO_HOST_AVAILABLE, &message);
            write_status(&api, &name, old.as_ref(), &status).await?;
            return Ok(Action::requeue(NO_HOST_REQUEUE));
        }
        Found::AwaitRelease(message) => {
            wait(&mut status, reason::WAITING_FOR_HOST_RELEASE, &message);
            write_status(&api, &name, old.as_ref(), &status).await?;
            return Ok(Action::requeue(AWAIT_RELEASE_REQUEUE));
        }
        Found::Invalid(message) => {
            // A spec edit brings the machine back; nothing to retry before that.
            wait(&mut status, reason::INVALID_HARDWARE_REQUIREMENTS, &message);
            write_status(&api, &name, old.as_ref(), &status).await?;
            announce(ctx, bm, old.as_ref(), &status).await;
            return Ok(Action::await_change());
        }
    };
    if bm.spec.host_ref.is_none() {
        let patch = json!({"spec": {"hostRef": LocalRef { name: host.name_any() }}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }

    let image = match Api::<BeowulfImage>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&bm.spec.image_ref.name)
        .await?
    {
        Some(i) => i,
        None => {
            wait(
                &mut status,
                reason::IMAGE_NOT_FOUND,
                &format!("BeowulfImage {ns}/{} not found", bm.spec.image_ref.name),
            );
            write_status(&api, &name, old.as_ref(), &status).await?;
            return Ok(Action::requeue(NO_HOST_REQUEUE));
        }
    };
    let (user_data, format) = match bootstrap_data(ctx, &ns, &secret_name).await? {
        Ok(d) => d,
        Err(why) => {
            wait(&mut status, reason::BOOTSTRAP_SECRET_INVALID, &why);
            write_status(&api, &name, old.as_ref(), &status).await?;
            return Ok(Action::await_change());
        }
    };
    let input = ProvisionInput {
        image,
        user_data,
        format,
        local_disks: Some(bm.spec.local_disks.clone()),
        cleaning: None,
        consumer_says_provisioned: bm.spec.provider_id.is_some(),
    };
    // A remediation step for the host (the BeowulfRemediation controller's request); answered requests,
    // requests whose remediation ended, and values that are no request are removed.
    let request = remediation::request_of(bm, &machine_name);
    let mut drop_request = false;
    let valid = match &request {
        Some(Err(why)) => {
            tracing::warn!(machine = %name, "{why}; removing it");
            drop_request = true;
            None
        }
        Some(Ok(r)) if !remediation::still_wanted(ctx, &ns, &machine_name, &r.id).await? => {
            tracing::info!(machine = %name, id = %r.id, "the remediation that asked for this step ended; dropping it");
            drop_request = true;
            None
        }
        Some(Ok(r)) => Some(r),
        None => None,
    };
    let outcome = hostops::drive_with(ctx, &host, Goal::Provision, Some(&input), valid).await?;
    if drop_request || (valid.is_some() && outcome.answered) {
        let patch = json!({"metadata": {"annotations": {remediation::REMEDIATE_ANNOTATION: null}}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }

    status.failure_domain = host.spec.failure_domain.clone();
    status.last_boot_phase = outcome.last_phase.clone();
    if outcome.state == HostState::Provisioned {
        if bm.spec.provider_id.is_none() {
            let patch = json!({"spec": {"providerID": provider_id(&host)}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        let mut addresses = vec![MachineAddress {
            type_: "Hostname".into(),
            address: host.name_any(),
        }];
        addresses.extend(host_ips(&host).into_iter().map(|a| MachineAddress {
            type_: "InternalIP".into(),
            address: a,
        }));
        status.addresses = addresses;
        status.initialization = Some(Initialization {
            provisioned: Some(true),
        });
        status.ready = Some(true);
        conditions::set(
            &mut status.conditions,
            READY,
            true,
            "Provisioned",
            &format!("host {}", host.name_any()),
            generation,
            now,
        );
    } else {
        conditions::set(
            &mut status.conditions,
            READY,
            false,
            &outcome.reason,
            &outcome.message,
            generation,
            now,
        );
    }
    write_status(&api, &name, old.as_ref(), &status).await?;
    announce(ctx, bm, old.as_ref(), &status).await;
    Ok(outcome
        .requeue
        .map_or_else(Action::await_change, Action::requeue))
}

/// An event when the `Ready` reason changed (claims, boots, retries, failures, provisioned).
async fn announce(
    ctx: &Context,
    bm: &BeowulfMachine,
    old: Option<&BeowulfMachineStatus>,
    new: &BeowulfMachineStatus,
) {
    let before = old
        .and_then(|o| conditions::get(&o.conditions, READY))
        .map(|c| c.reason.clone());
    let Some(now) = conditions::get(&new.conditions, READY) else {
        return;
    };
    if before.as_deref() == Some(now.reason.as_str()) {
        return;
    }
    let warning =
        now.status != "True" && !matches!(now.reason.as_str(), "Provisioning" | "RetryBackoff");
    ctx.event(bm, warning, &now.reason, &now.message).await;
}

/// Deletion: power the host off, release it, and only then drop the finalizer.
async fn reconcile_delete(
    bm: &BeowulfMachine,
    ctx: &Context,
    mut status: BeowulfMachineStatus,
) -> Result<Action, Error> {
    let ns = bm.namespace().unwrap_or_default();
    let name = bm.name_any();
    let api: Api<BeowulfMachine> = Api::namespaced(ctx.client.clone(), &ns);
    let hosts: Api<BeowulfHost> = Api::namespaced(ctx.client.clone(), &ns);
    let host = match &bm.spec.host_ref {
        Some(r) => hosts.get_opt(&r.name).await?,
        None => hosts
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .find(|h| held_by(h, bm)),
    };
    // A host that is itself being deleted is deprovisioned by the host controller: just let go of it.
    if let Some(host) = host.filter(|h| held_by(h, bm)) {
        let outcome = if host.metadata.deletion_timestamp.is_some() {
            hostops::Outcome {
                state: HostState::Available,
                reason: String::new(),
                message: String::new(),
                requeue: None,
                last_phase: None,
                answered: false,
            }
        } else {
            match cleaning_input(ctx, bm, &host).await? {
                Ok(input) => hostops::drive(ctx, &host, Goal::Release, input.as_ref()).await?,
                Err(why) => hostops::Outcome {
                    state: HostState::Deprovisioning,
                    reason: reason::IMAGE_NOT_FOUND.to_string(),
                    message: why,
                    requeue: Some(NO_HOST_REQUEUE),
                    last_phase: None,
                    answered: false,
                },
            }
        };
        if outcome.state != HostState::Available {
            let now = ctx.now_ts();
            conditions::set(
                &mut status.conditions,
                READY,
                false,
                reason::DELETING,
                &format!("{}: {}", outcome.reason, outcome.message),
                bm.meta().generation,
                now,
            );
            write_status(&api, &name, bm.status.as_ref(), &status).await?;
            return Ok(Action::requeue(outcome.requeue.unwrap_or(ctx.engine.poll)));
        }
        // Powered off: release (guarded, so a concurrent change is not overwritten), moving the group the
        // claim recorded to the previous group in the same patch (the group's next machine gets the host
        // back first: `spread::PREVIOUS_GROUP_LABEL`).
        let fresh = hosts.get(&host.name_any()).await?;
        let group = fresh
            .labels()
            .get(GROUP_LABEL)
            .cloned()
            .or_else(|| spread::group_of(bm));
        let mut metadata = spread::release_metadata(group.as_deref(), ctx.now());
        metadata["resourceVersion"] = json!(fresh.resource_version());
        let patch = json!({"metadata": metadata, "spec": {"consumerRef": null}});
        hosts
            .patch(
                &host.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        tracing::info!(machine = %name, host = %host.name_any(), "host released");
    }
    remove_finalizer(&api, bm, MACHINE_FINALIZER).await?;
    Ok(Action::await_change())
}

/// The release's cleaning boot, when the host's policy asks for one and there are local disks: the machine's
/// image with empty user-data (a cleaning boot joins nothing) and the disks the machine kept. `Err`: the image
/// is gone, so the disks cannot be cleaned; the host is not released uncleaned (set `spec.cleaning: none` to
/// release it as it is).
async fn cleaning_input(
    ctx: &Context,
    bm: &BeowulfMachine,
    host: &BeowulfHost,
) -> Result<Result<Option<ProvisionInput>, String>, Error> {
    use crate::storage::Cleaning;
    let cleaning = host.spec.cleaning;
    if cleaning == Cleaning::None
        || (host.spec.local_disks.is_empty() && bm.spec.local_disks.is_empty())
    {
        return Ok(Ok(None));
    }
    let ns = bm.namespace().unwrap_or_default();
    let Some(image) = Api::<BeowulfImage>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&bm.spec.image_ref.name)
        .await?
    else {
        return Ok(Err(format!(
            "the host's local disks are to be cleaned ({}) with the machine's image, and BeowulfImage {ns}/{} is not found; \
             restore it, or set spec.cleaning: none on host {} to release it uncleaned",
            cleaning.as_str(),
            bm.spec.image_ref.name,
            host.name_any()
        )));
    };
    Ok(Ok(Some(ProvisionInput {
        image,
        user_data: b"#cloud-config\n".to_vec(),
        format: UserDataFormat::CloudConfig,
        local_disks: Some(bm.spec.local_disks.clone()),
        cleaning: Some(cleaning),
        consumer_says_provisioned: false,
    })))
}

/// Retry failed reconciles after a pause.
pub fn error_policy(_bm: Arc<BeowulfMachine>, error: &Error, _ctx: Arc<Context>) -> Action {
    super::retry_after("BeowulfMachine", error)
}
