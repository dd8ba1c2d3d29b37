//! Runs the provisioning engine for one `BeowulfHost`: gathers observations (BMC power through
//! [`PowerControl`], boot phases from the engine's
//! [`BootProfiles`](crate::provisioning::io::BootProfiles)), calls [`decide`], runs the actions, and writes
//! the host's status when it changed. Shared by the BeowulfMachine controller (claimed hosts) and the
//! BeowulfHost controller (unclaimed and directly provisioned hosts).

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::Api;

use super::{Context, Error, write_status};
use crate::api::conditions;
use crate::api::host::{
    BeowulfHostStatus, BootMode, HostStateName, REMEDIATION_HISTORY, RemediationRecord,
};
use crate::api::{BeowulfHost, BeowulfImage};
use crate::bmc::endpoint::parse_bmc_key;
use crate::boot::{MacAddr, Phase};
use crate::provisioning::engine::{action_failed, bmc_failure};
use crate::provisioning::io::{
    BmcFailure, BmcTarget, BootProfile, LiveBoot, PowerError, UserDataFormat,
};
use crate::provisioning::{
    Action, BootObservation, Goal, HostState, Observation, PowerObservation, Progress, Request,
    decide,
};

/// What a host is to be provisioned with.
pub struct ProvisionInput {
    pub image: BeowulfImage,
    pub user_data: Vec<u8>,
    pub format: UserDataFormat,
    /// The machine's local disks (the host's own are added in [`boot_profile`]); `None`: a boot that keeps
    /// none (inspection: the inspector only reads, and a host not inspected yet cannot resolve properties).
    pub local_disks: Option<Vec<crate::storage::LocalDisk>>,
    /// A cleaning boot on release (`Goal::Release`): the host's policy, when it is not `none` and there are
    /// disks to clean. The profile then boots the image with `beowulf.clean=` and empty user-data.
    pub cleaning: Option<crate::storage::Cleaning>,
    /// The consumer already recorded the host as provisioned (rebuild after `clusterctl move`).
    pub consumer_says_provisioned: bool,
}

/// The result of one drive.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub state: HostState,
    pub reason: String,
    pub message: String,
    pub requeue: Option<Duration>,
    pub last_phase: Option<String>,
    /// The request passed to [`drive_with`] was answered and recorded in the host's
    /// `status.remediations`.
    pub answered: bool,
}

/// A remediation step for the host's driver, with the id its record will carry.
#[derive(Debug, Clone)]
pub struct HostRequest {
    pub request: Request,
    pub id: String,
    /// The Machine the host serves (recorded with it).
    pub machine: Option<String>,
}

/// Whether the host already carried out request `id` (its receipt is in `status.remediations`).
pub fn has_record(host: &BeowulfHost, id: &str) -> bool {
    host.status
        .as_ref()
        .is_some_and(|s| s.remediations.iter().any(|r| r.id == id))
}

/// `<namespace>/<name>`: the host's key in the boot plane, and the `beowulf://` provider ID's path.
pub fn host_key(host: &BeowulfHost) -> String {
    format!(
        "{}/{}",
        host.namespace().unwrap_or_default(),
        host.name_any()
    )
}

/// The provider ID of a host: `beowulf://<namespace>/<host>`.
pub fn provider_id(host: &BeowulfHost) -> String {
    format!("beowulf://{}", host_key(host))
}

/// The host's IPv4 addresses from its interfaces (the DHCP reservations).
pub fn host_ips(host: &BeowulfHost) -> Vec<String> {
    host.spec
        .interfaces
        .iter()
        .filter_map(|i| i.address.as_deref())
        .map(|a| a.split('/').next().unwrap_or(a).to_string())
        .collect()
}

/// The optional key of the BMC credentials Secret holding the IPMI BMC key (Kg), hex as for `ipmitool -y`.
pub const BMC_KEY_FIELD: &str = "bmcKey";

/// Reads the BMC credentials Secret; the error text names the Secret, never its content.
async fn bmc_target(ctx: &Context, host: &BeowulfHost) -> Result<BmcTarget, String> {
    let ns = host.namespace().unwrap_or_default();
    let secret_name = &host.spec.bmc.credentials_secret_ref.name;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let secret = match secrets.get_opt(secret_name).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(format!(
                "BMC credentials Secret {ns}/{secret_name} not found"
            ));
        }
        Err(e) => {
            return Err(format!(
                "reading BMC credentials Secret {ns}/{secret_name}: {e}"
            ));
        }
    };
    let optional = |k: &str| -> Option<String> {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|b| {
                String::from_utf8_lossy(&b.0)
                    .trim_end_matches('\n')
                    .to_string()
            })
            .or_else(|| secret.string_data.as_ref().and_then(|d| d.get(k)).cloned())
    };
    let field = |k: &str| -> Result<String, String> {
        optional(k)
            .ok_or_else(|| format!("BMC credentials Secret {ns}/{secret_name} has no key {k:?}"))
    };
    // The IPMI BMC key, as `ipmitool -y` takes it; the parse error never echoes the value.
    let bmc_key = optional(BMC_KEY_FIELD)
        .map(|text| {
            parse_bmc_key(&text).map_err(|e| {
                format!("BMC credentials Secret {ns}/{secret_name} key {BMC_KEY_FIELD:?}: {e}")
            })
        })
        .transpose()?;
    Ok(BmcTarget {
        address: host.spec.bmc.address.clone(),
        username: field("username")?,
        password: field("password")?,
        cipher_suite: host.spec.bmc.cipher_suite,
        bmc_key,
        insecure_tls: host.spec.bmc.insecure_tls.unwrap_or(false),
        uefi: host.spec.boot_mode == BootMode::Uefi,
    })
}

fn to_engine(s: HostStateName) -> HostState {
    match s {
        HostStateName::Registering => HostState::Registering,
        HostStateName::Available => HostState::Available,
        HostStateName::Provisioning => HostState::Provisioning,
        HostStateName::Provisioned => HostState::Provisioned,
        HostStateName::Deprovisioning => HostState::Deprovisioning,
        HostStateName::Error => HostState::Error,
        HostStateName::Inspecting => HostState::Inspecting,
        HostStateName::Cleaning => HostState::Cleaning,
        // Accepted from discovery: it registers like a new host (its report is kept).
        HostStateName::Discovered => HostState::Registering,
    }
}

fn from_engine(s: HostState) -> HostStateName {
    match s {
        HostState::Registering => HostStateName::Registering,
        HostState::Available => HostStateName::Available,
        HostState::Provisioning => HostStateName::Provisioning,
        HostState::Provisioned => HostStateName::Provisioned,
        HostState::Deprovisioning => HostStateName::Deprovisioning,
        HostState::Error => HostStateName::Error,
        HostState::Inspecting => HostStateName::Inspecting,
        HostState::Cleaning => HostStateName::Cleaning,
    }
}

fn ts(t: Option<i64>) -> Option<Time> {
    t.and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map(Time)
}

/// The engine's progress as persisted in the host's status.
pub fn progress_of(status: &BeowulfHostStatus) -> Progress {
    let failure = if status.state == HostStateName::Error {
        conditions::get(&status.conditions, conditions::PROVISIONED)
            .map(|c| (c.reason.clone(), c.message.clone()))
    } else {
        None
    };
    Progress {
        state: to_engine(status.state),
        attempt: status.boot_attempt,
        since: status.state_since.as_ref().map(|t| t.0.as_second()),
        retry_at: status.retry_at.as_ref().map(|t| t.0.as_second()),
        bmc_failures: status.bmc_failures,
        failure,
    }
}

/// The boot in progress the status kept, if it is whole and its token has not expired at `now`.
fn live_boot_of(status: &BeowulfHostStatus, now: i64) -> Option<LiveBoot> {
    let l = status.live_boot.as_ref()?;
    let token_sha256: [u8; 32] = hex::decode(&l.token_sha256).ok()?.try_into().ok()?;
    let token_expires = l.token_expires.0.as_second();
    let last_phase = match (&l.phase, &l.phase_time) {
        (Some(p), Some(t)) => Some((crate::boot::Phase::from_name(p)?, t.0.as_second())),
        _ => None,
    };
    (token_expires > now).then_some(LiveBoot {
        token_sha256,
        token_expires,
        last_phase,
        server: l.server.clone(),
    })
}

fn live_boot_status(l: &LiveBoot) -> Option<crate::api::host::LiveBootStatus> {
    Some(crate::api::host::LiveBootStatus {
        token_sha256: hex::encode(l.token_sha256),
        token_expires: ts(Some(l.token_expires))?,
        phase: l.last_phase.map(|(p, _)| p.as_str().to_string()),
        phase_time: l.last_phase.and_then(|(_, t)| ts(Some(t))),
        server: l.server.clone(),
    })
}

fn boot_profile(host: &BeowulfHost, input: &ProvisionInput) -> Result<BootProfile, String> {
    let mac: MacAddr = host
        .spec
        .boot_mac_address
        .parse()
        .map_err(|e| format!("host {}: {e}", host.name_any()))?;
    let iface = host
        .spec
        .interfaces
        .iter()
        .find(|i| {
            i.mac_address
                .eq_ignore_ascii_case(&host.spec.boot_mac_address)
        })
        .or_else(|| host.spec.interfaces.first());
    let ip = iface.and_then(|i| i.address.as_deref()).and_then(|a| {
        let (ip, len) = a.split_once('/').unwrap_or((a, "32"));
        Some((ip.parse::<Ipv4Addr>().ok()?, len.parse::<u8>().ok()?))
    });
    let gateway = iface
        .and_then(|i| i.gateway.as_deref())
        .and_then(|g| g.parse().ok());
    // The host's disks, then the machine's (one of the same name replaces the host's).
    let mut disks: Vec<crate::storage::LocalDisk> = Vec::new();
    if let Some(machine) = &input.local_disks {
        disks.extend(
            host.spec
                .local_disks
                .iter()
                .filter(|d| !machine.iter().any(|m| m.name == d.name))
                .cloned(),
        );
        disks.extend(machine.iter().cloned());
    }
    let hardware = host.status.as_ref().and_then(|s| s.hardware.as_ref());
    let local_disks = crate::storage::resolve(&disks, hardware)
        .map_err(|e| format!("host {}: {e}", host.name_any()))?;
    let spec = &input.image.spec;
    Ok(BootProfile {
        host: host_key(host),
        hostname: host.name_any(),
        mac,
        ip,
        gateway,
        provider_id: provider_id(host),
        kernel: spec.kernel.url.clone(),
        initrds: spec.initrds.iter().map(|a| a.url.clone()).collect(),
        rootfs: spec.rootfs.as_ref().map(|a| a.url.clone()),
        cmdline: spec.cmdline.clone(),
        user_data: input.user_data.clone(),
        format: input.format,
        local_disks,
        cleaning: input.cleaning,
    })
}

/// Drives one host one step towards `goal` and persists the result.
pub async fn drive(
    ctx: &Context,
    host: &BeowulfHost,
    goal: Goal,
    input: Option<&ProvisionInput>,
) -> Result<Outcome, Error> {
    drive_with(ctx, host, goal, input, None).await
}

/// [`drive`] with a one-off request (a remediation step). Once the engine answered it and its actions ran,
/// the answer is recorded in `status.remediations` in the same status write, so a request is carried out
/// at most once whatever happens to the caller afterwards.
pub async fn drive_with(
    ctx: &Context,
    host: &BeowulfHost,
    goal: Goal,
    input: Option<&ProvisionInput>,
    request: Option<&HostRequest>,
) -> Result<Outcome, Error> {
    let ns = host.namespace().unwrap_or_default();
    let key = host_key(host);
    let old_status = host.status.clone().unwrap_or_default();
    let progress = progress_of(&old_status);

    let target = bmc_target(ctx, host).await;
    let power = match &target {
        Err(why) => PowerObservation::Failed(PowerError::new(BmcFailure::Credentials, why.clone())),
        Ok(t) => match ctx.power.power_state(t).await {
            Ok(true) => PowerObservation::On,
            Ok(false) => PowerObservation::Off,
            Err(e) => PowerObservation::Failed(e),
        },
    };
    // A boot this process does not serve but the status kept (the manager restarted, or leadership moved):
    // serve it on with the node's token and phases, instead of booting the host again.
    let booting = matches!(
        progress.state,
        HostState::Provisioning | HostState::Inspecting | HostState::Cleaning
    );
    if booting
        && progress.retry_at.is_none()
        && !ctx.boot.serves(&key)
        && let (Some(live), Some(i)) = (live_boot_of(&old_status, ctx.now()), input)
    {
        match boot_profile(host, i).and_then(|p| ctx.boot.resume(p, &live).map_err(|e| e.0)) {
            Ok(()) => tracing::info!(
                host = %key,
                phase = live.last_phase.map_or("none", |(p, _)| p.as_str()),
                "boot in progress taken over from the host's status"
            ),
            // Expected after a leader change to another machine: the engine boots the host again.
            Err(e) => {
                tracing::info!(host = %key, reason = %e, "cannot take over the boot in progress")
            }
        }
    }
    let last_phase = ctx.boot.last_phase(&key);
    let obs = Observation {
        now: ctx.now(),
        power: power.clone(),
        boot: BootObservation {
            last_phase,
            served: ctx.boot.serves(&key),
        },
        online: host.spec.online,
        consumer_says_provisioned: input.is_some_and(|i| i.consumer_says_provisioned),
        request: request
            .filter(|r| !has_record(host, &r.id))
            .map(|r| r.request),
        cleaning: goal == Goal::Release && input.is_some_and(|i| i.cleaning.is_some()),
    };
    let mut d = decide(&ctx.engine, &progress, goal, &obs);
    if !d.actions.is_empty() {
        tracing::info!(host = %key, reason = %d.reason, "{}", d.message);
    }

    let mut actions_ok = true;
    for action in d.actions.clone() {
        let result: Result<(), String> = match (&action, &target) {
            (Action::PublishProfile, _) => match input {
                Some(i) => boot_profile(host, i).and_then(|p| ctx.boot.publish(p).map_err(|e| e.0)),
                None => Err("no image and user-data to publish".to_string()),
            },
            (Action::WithdrawProfile, _) => {
                ctx.boot.withdraw(&key);
                Ok(())
            }
            (_, Err(why)) => Err(why.clone()),
            (Action::SetBootPxe, Ok(t)) => {
                ctx.power.set_next_boot_pxe(t).await.map_err(|e| e.message)
            }
            (Action::PowerOn, Ok(t)) => ctx.power.power_on(t).await.map_err(|e| e.message),
            (Action::PowerOff, Ok(t)) => ctx.power.power_off(t).await.map_err(|e| e.message),
        };
        if let Err(e) = result {
            tracing::warn!(host = %key, ?action, error = %e, "host action failed");
            d = action_failed(&ctx.engine, &progress, &action, &e);
            actions_ok = false;
            break;
        }
        tracing::info!(host = %key, ?action, "host action done");
    }

    // Consoles: followed while a boot is under way; a boot that got stuck quotes what the node printed last
    // (scrubbed when captured), so the condition and its event say why.
    if let Some(consoles) = &ctx.consoles {
        let booting = matches!(
            d.progress.state,
            HostState::Provisioning | HostState::Inspecting | HostState::Cleaning
        );
        consoles.observe(&key, booting, target.as_ref().ok());
        if crate::provisioning::engine::is_stall(&d.reason)
            && d.actions.contains(&Action::WithdrawProfile)
        {
            let lines = consoles.last_lines(&key);
            d.message = crate::runtime::consoles::with_console(&d.message, &lines);
            if let Some(f) = &mut d.progress.failure {
                f.1 = d.message.clone();
            }
        }
    }

    // Status: the persisted progress plus what was observed. Conditions keep their transition times.
    let now = ctx.now_ts();
    let generation = host.metadata.generation;
    let mut status = old_status.clone();
    status.state = from_engine(d.progress.state);
    status.boot_attempt = d.progress.attempt;
    status.state_since = ts(d.progress.since);
    status.retry_at = ts(d.progress.retry_at);
    status.bmc_failures = d.progress.bmc_failures;
    status.live_boot = match d.progress.state {
        HostState::Provisioning | HostState::Inspecting | HostState::Cleaning => {
            ctx.boot.live_boot(&key).as_ref().and_then(live_boot_status)
        }
        _ => None,
    };
    match &power {
        PowerObservation::On => status.power_state = Some("on".into()),
        PowerObservation::Off => status.power_state = Some("off".into()),
        PowerObservation::Failed(_) => {}
    }
    // The boot plane forgets a host's phases when its profile is (re)published or withdrawn; keep the last
    // one seen for hosts that are (or failed) provisioning, so `kubectl get` still shows it.
    status.last_boot_phase = match (last_phase, d.progress.state) {
        (Some((p, _)), _) => Some(p.as_str().to_string()),
        (None, HostState::Available | HostState::Registering) => None,
        (None, _) => status.last_boot_phase,
    };
    match &power {
        PowerObservation::Failed(e) => {
            // False for every kind: the BMC cannot be used; the reason says which fix it needs.
            conditions::set(
                &mut status.conditions,
                conditions::BMC_REACHABLE,
                false,
                bmc_failure(e.kind).0,
                &e.message,
                generation,
                now,
            );
        }
        _ => {
            conditions::set(
                &mut status.conditions,
                conditions::BMC_REACHABLE,
                true,
                "BMCReachable",
                "",
                generation,
                now,
            );
        }
    }
    let provisioned = d.progress.state == HostState::Provisioned;
    conditions::set(
        &mut status.conditions,
        conditions::PROVISIONED,
        provisioned,
        &d.reason,
        &d.message,
        generation,
        now,
    );
    // The BMC's own inventory, once, while the host is idle (a BMC that cannot give one is asked again at the
    // next idle check; it never holds up anything else).
    if status.bmc_inventory.is_none()
        && d.progress.state == HostState::Available
        && let (Ok(t), PowerObservation::On | PowerObservation::Off) = (&target, &power)
    {
        match ctx.power.inventory(t).await {
            Ok(inv) => status.bmc_inventory = Some(inv),
            Err(e) => tracing::debug!(host = %key, error = %e, "no inventory from the BMC"),
        }
    }
    // The node's word on its local disks; a node that called back without one does not carry the agent.
    if let Some((plan, report)) = ctx.boot.local_disks(&key)
        && !plan.is_empty()
    {
        let reached_callback = matches!(last_phase, Some((crate::boot::Phase::Callback, _)));
        if let Some(report) = report.or_else(|| reached_callback.then(Default::default)) {
            let (ok, reason, message) = report.condition(&plan);
            conditions::set(
                &mut status.conditions,
                conditions::LOCAL_DISKS,
                ok,
                reason,
                &message,
                generation,
                now,
            );
            status.local_disks = report.0;
        }
    }
    // A report newer than the one in the status replaces it (the boot plane keeps reports in memory only).
    if let Some((hardware, at)) = ctx.boot.inspection(&key)
        && status
            .inspected_at
            .as_ref()
            .is_none_or(|t| t.0.as_second() < at)
    {
        conditions::set(
            &mut status.conditions,
            conditions::INSPECTED,
            true,
            "Inspected",
            &hardware.summary(),
            generation,
            now,
        );
        status.hardware = Some(hardware);
        status.inspected_at = ts(Some(at));
    }
    let already = request.is_some_and(|r| has_record(host, &r.id));
    let recorded = match (request, &d.request_note) {
        (Some(r), Some(note)) if actions_ok && !already => {
            tracing::info!(host = %key, request = ?r.request, id = %r.id, "{note}");
            status.remediations.push(RemediationRecord {
                id: r.id.clone(),
                action: format!("{:?}", r.request),
                at: Time(now),
                machine: r.machine.clone(),
                message: note.clone(),
            });
            let excess = status
                .remediations
                .len()
                .saturating_sub(REMEDIATION_HISTORY);
            status.remediations.drain(..excess);
            true
        }
        _ => false,
    };
    let api: Api<BeowulfHost> = Api::namespaced(ctx.client.clone(), &ns);
    write_status(&api, &host.name_any(), host.status.as_ref(), &status).await?;
    announce(ctx, host, host.status.as_ref(), &status).await;
    if recorded && let Some(r) = request {
        let note = d.request_note.as_deref().unwrap_or("");
        let reason = match r.request {
            Request::PowerCycle => "PowerCycled",
            Request::Reprovision => "Reprovisioning",
        };
        ctx.event(host, false, reason, note).await;
    }

    Ok(Outcome {
        state: d.progress.state,
        reason: d.reason,
        message: d.message,
        requeue: d.requeue,
        last_phase: status.last_boot_phase.clone(),
        answered: already || recorded,
    })
}

/// Events for what an operator watching `kubectl get events` wants to see of a host: each lifecycle state it
/// enters (reason = the state, note = why) and its BMC becoming unreachable or reachable again. Notes are
/// condition messages, which never carry credentials.
async fn announce(
    ctx: &Context,
    host: &BeowulfHost,
    old: Option<&BeowulfHostStatus>,
    new: &BeowulfHostStatus,
) {
    let bmc_reachable = |s: Option<&BeowulfHostStatus>| {
        s.and_then(|s| conditions::get(&s.conditions, conditions::BMC_REACHABLE))
            .map(|c| (c.status == "True", c.reason.clone(), c.message.clone()))
    };
    match (bmc_reachable(old), bmc_reachable(Some(new))) {
        // Once per outage, or when the kind of failure changes (an outage, then a wrong password).
        (before, Some((false, reason, why)))
            if before.as_ref().is_none_or(|(up, r, _)| *up || *r != reason) =>
        {
            ctx.event(host, true, &reason, &why).await;
        }
        (Some((false, ..)), Some((true, ..))) => {
            ctx.event(host, false, "BMCReachable", "the BMC answers again")
                .await;
        }
        _ => {}
    }
    if let Some(hw) = &new.hardware
        && old.and_then(|o| o.inspected_at.as_ref()) != new.inspected_at.as_ref()
    {
        ctx.event(host, false, "Inspected", &hw.summary()).await;
    }
    // What the node did with its local disks, once per report (a foreign or missing disk is a warning).
    let disks = |s: Option<&BeowulfHostStatus>| {
        s.and_then(|s| conditions::get(&s.conditions, conditions::LOCAL_DISKS))
            .map(|c| (c.status.clone(), c.message.clone()))
    };
    if let Some((status, message)) = disks(Some(new))
        && disks(old) != Some((status.clone(), message.clone()))
    {
        let ok = status == "True";
        let reason = conditions::get(&new.conditions, conditions::LOCAL_DISKS)
            .map_or("LocalDisks", |c| c.reason.as_str());
        ctx.event(host, !ok, reason, &message).await;
    }
    if old.map(|o| o.state) != Some(new.state) {
        let provisioned = conditions::get(&new.conditions, conditions::PROVISIONED);
        let note = provisioned.map_or("", |c| c.message.as_str());
        let reason = match new.state {
            HostStateName::Registering => "Registering",
            HostStateName::Available => "Available",
            HostStateName::Provisioning => "Provisioning",
            HostStateName::Provisioned => "Provisioned",
            HostStateName::Deprovisioning => "Deprovisioning",
            HostStateName::Error => "ProvisioningFailed",
            HostStateName::Inspecting => "Inspecting",
            HostStateName::Discovered => "Discovered",
            HostStateName::Cleaning => "Cleaning",
        };
        ctx.event(host, new.state == HostStateName::Error, reason, note)
            .await;
    }
}

/// Whether `phase` names the node's completion callback.
pub fn is_callback(phase: Option<&str>) -> bool {
    phase == Some(Phase::Callback.as_str())
}
