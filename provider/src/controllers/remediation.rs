//! The BeowulfRemediation controller: Cluster API's external remediation for Beowulf hosts.
//!
//! MachineHealthCheck creates a `BeowulfRemediation` named after each unhealthy Machine and deletes it once
//! the Machine is healthy again. This controller works through the object's strategy with
//! [`provisioning::remediation::next`](crate::provisioning::remediation::next): it hands each step (power
//! cycle, re-provision) to the driver of the host — the BeowulfMachine controller, the only writer of a
//! claimed host — through the [`REMEDIATE_ANNOTATION`] on the BeowulfMachine, and takes the host's
//! `status.remediations` record as the receipt. When nothing is left to try it marks the host
//! [`UNHEALTHY_ANNOTATION`] (no machine claims it until an operator removes the annotation) and deletes the
//! Machine, which its MachineSet or control plane replaces.
//!
//! Nothing happens while the Cluster, the Machine or the remediation is paused.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DeleteParams, Patch, PatchParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::capi::{CLUSTER_NAME_LABEL, Cluster, Machine};
use super::hostops::{HostRequest, has_record};
use super::{Context, Error, has_paused_annotation, write_status};
use crate::api::conditions::{self, PAUSED};
use crate::api::host::HostStateName;
use crate::api::remediation::{BeowulfRemediationStatus, RemediationPhase};
use crate::api::{BeowulfHost, BeowulfMachine, BeowulfRemediation};
use crate::provisioning::Request;
use crate::provisioning::remediation::{self, HostView, Next, Record, Step, Strategy};

/// On a BeowulfMachine: a remediation step for its host, `<BeowulfRemediation uid>/<step>` with step
/// `power-cycle-<n>` or `reprovision`. Set by this controller, removed by the BeowulfMachine controller once
/// the host's driver answered it.
pub const REMEDIATE_ANNOTATION: &str = "beowulf.infrastructure.cluster.x-k8s.io/remediate";
/// On a BeowulfHost: remediation gave up on it (the value says why). No machine claims it while it is set.
pub const UNHEALTHY_ANNOTATION: &str = "beowulf.infrastructure.cluster.x-k8s.io/unhealthy";
/// Condition: True while steps remain, False with reason `GaveUp` at the end.
pub const REMEDIATING: &str = "Remediating";

/// How often to look while a step is handed over (the BeowulfMachine watch usually wakes us first).
const AWAIT_REQUEST: Duration = Duration::from_secs(5);

/// The request a BeowulfMachine's [`REMEDIATE_ANNOTATION`] carries; `Err` for a value that is not one.
pub fn request_of(bm: &BeowulfMachine, machine: &str) -> Option<Result<HostRequest, String>> {
    let id = bm.annotations().get(REMEDIATE_ANNOTATION)?;
    let step = id.rsplit_once('/').map_or(id.as_str(), |(_, s)| s);
    let request = if step == Step::Reprovision.id() {
        Request::Reprovision
    } else if step
        .strip_prefix("power-cycle-")
        .is_some_and(|n| n.parse::<u32>().is_ok())
    {
        Request::PowerCycle
    } else {
        return Some(Err(format!(
            "annotation {REMEDIATE_ANNOTATION}={id:?} names no remediation step"
        )));
    };
    Some(Ok(HostRequest {
        request,
        id: id.clone(),
        machine: Some(machine.to_string()),
    }))
}

/// Whether the remediation that asked for request `id` still wants it: the Machine's BeowulfRemediation
/// exists, is the one the id names (its uid), and has not ended. MachineHealthCheck deletes the remediation
/// once the Machine is healthy again; a step still waiting (for a BMC that did not answer) is then dropped.
pub async fn still_wanted(ctx: &Context, ns: &str, machine: &str, id: &str) -> Result<bool, Error> {
    let Some(r) = Api::<BeowulfRemediation>::namespaced(ctx.client.clone(), ns)
        .get_opt(machine)
        .await?
    else {
        return Ok(false);
    };
    let asker = id.rsplit_once('/').map_or("", |(who, _)| who);
    let uid = r.uid().unwrap_or_else(|| r.name_any());
    Ok(asker == uid
        && r.meta().deletion_timestamp.is_none()
        && r.status.as_ref().and_then(|s| s.phase) != Some(RemediationPhase::GaveUp))
}

/// Whether remediation gave up on `host`.
pub fn is_unhealthy(host: &BeowulfHost) -> bool {
    host.annotations().contains_key(UNHEALTHY_ANNOTATION)
}

fn strategy_of(r: &BeowulfRemediation) -> Strategy {
    let s = &r.spec.strategy;
    Strategy {
        power_cycles: s.power_cycles,
        timeout: Duration::from_secs(u64::from(s.timeout_seconds.max(1))),
        reprovision: s.reprovision,
        reprovision_timeout: Duration::from_secs(u64::from(s.reprovision_timeout_seconds.max(1))),
    }
}

/// Reconciles one BeowulfRemediation.
pub async fn reconcile(rem: Arc<BeowulfRemediation>, ctx: Arc<Context>) -> Result<Action, Error> {
    let r = reconcile_inner(&rem, &ctx).await;
    ctx.metrics.count("BeowulfRemediation", r.is_ok());
    r
}

/// The Machine being remediated: the owner (MachineHealthCheck sets it), else the one of the same name.
fn machine_name(rem: &BeowulfRemediation) -> String {
    rem.owner_references()
        .iter()
        .find(|o| o.kind == "Machine" && o.api_version.starts_with("cluster.x-k8s.io/"))
        .map_or_else(|| rem.name_any(), |o| o.name.clone())
}

async fn reconcile_inner(rem: &BeowulfRemediation, ctx: &Context) -> Result<Action, Error> {
    let ns = rem
        .namespace()
        .ok_or_else(|| Error::Invalid("BeowulfRemediation without namespace".into()))?;
    let name = rem.name_any();
    let api: Api<BeowulfRemediation> = Api::namespaced(ctx.client.clone(), &ns);
    let machines: Api<Machine> = Api::namespaced(ctx.client.clone(), &ns);
    let generation = rem.meta().generation;
    let now_ts = ctx.now_ts();
    let old = rem.status.clone();
    let mut status = old.clone().unwrap_or_default();

    if rem.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let machine_name = machine_name(rem);
    let Some(machine) = machines.get_opt(&machine_name).await? else {
        // Gone: the remediation goes with it (garbage collection of the owned object).
        return Ok(Action::await_change());
    };
    let cluster_name = machine
        .labels()
        .get(CLUSTER_NAME_LABEL)
        .cloned()
        .unwrap_or_else(|| machine.spec.cluster_name.clone());
    let cluster = Api::<Cluster>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&cluster_name)
        .await?;
    let paused = cluster
        .as_ref()
        .is_some_and(|c| c.spec.paused == Some(true))
        || has_paused_annotation(rem)
        || has_paused_annotation(&machine);
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
        now_ts,
    );
    if paused || machine.metadata.deletion_timestamp.is_some() {
        write_status(&api, &name, old.as_ref(), &status).await?;
        return Ok(Action::await_change());
    }

    let bm = match &machine.spec.infrastructure_ref {
        Some(r) if r.kind == "BeowulfMachine" => {
            Api::<BeowulfMachine>::namespaced(ctx.client.clone(), &ns)
                .get_opt(&r.name)
                .await?
        }
        _ => None,
    };
    let host = match bm.as_ref().and_then(|b| b.spec.host_ref.as_ref()) {
        Some(r) => Api::<BeowulfHost>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&r.name)
            .await?
            .filter(|h| h.metadata.deletion_timestamp.is_none()),
        None => None,
    };
    status.host = host.as_ref().map(ResourceExt::name_any);
    if status.phase == Some(RemediationPhase::GaveUp) {
        // Recorded before the Machine was deleted: a failed deletion is retried here.
        let why = conditions::get(&status.conditions, REMEDIATING)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        give_up(ctx, &ns, &machine_name, host.as_ref(), &why).await?;
        return Ok(Action::await_change());
    }
    // The receipt: the host's driver recorded the pending step.
    if let (Some(id), Some(h)) = (&status.pending, &host)
        && has_record(h, id)
    {
        status.pending = None;
    }
    let view = match &host {
        None => HostView::None,
        Some(h) if h.status.as_ref().map(|s| s.state) == Some(HostStateName::Error) => {
            HostView::Failed
        }
        Some(_) => HostView::Ok,
    };
    let record = Record {
        power_cycles: status.power_cycles,
        reprovisioned: status.reprovisioned,
        pending: status.pending.is_some(),
        last: status.last_remediated.as_ref().map(|t| t.0.as_second()),
    };
    let now = ctx.now();
    let next = remediation::next(&strategy_of(rem), &record, view, now);
    let action = match next {
        Next::Wait(d) => {
            // The deadline, not a countdown: a message that changed at every reconcile would rewrite the
            // status, whose watch event would reconcile again.
            let until = jiff::Timestamp::from_second(
                now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(0)),
            )
            .unwrap_or(now_ts);
            remediating(
                &mut status,
                true,
                "Waiting",
                &format!("waiting until {until} for the Machine to become healthy"),
                generation,
                now_ts,
            );
            Action::requeue(d)
        }
        Next::AwaitRequest => {
            remediating(
                &mut status,
                true,
                "StepRequested",
                "waiting for the host's driver to carry out the step",
                generation,
                now_ts,
            );
            Action::requeue(AWAIT_REQUEST)
        }
        Next::Request(step) => {
            let (Some(bm), Some(h)) = (&bm, &host) else {
                return Err(Error::Invalid("remediation step without a host".into()));
            };
            let id = format!(
                "{}/{}",
                rem.uid().unwrap_or_else(|| name.clone()),
                step.id()
            );
            let patch = json!({"metadata": {"annotations": {REMEDIATE_ANNOTATION: id}}});
            Api::<BeowulfMachine>::namespaced(ctx.client.clone(), &ns)
                .patch(
                    &bm.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            let (phase, reason, what) = match step {
                Step::PowerCycle(n) => {
                    status.power_cycles = n;
                    (
                        RemediationPhase::PowerCycling,
                        "PowerCycle",
                        format!("power cycle {n} of host {}", h.name_any()),
                    )
                }
                Step::Reprovision => {
                    status.reprovisioned = true;
                    (
                        RemediationPhase::Reprovisioning,
                        "Reprovision",
                        format!("re-provisioning host {}", h.name_any()),
                    )
                }
            };
            tracing::info!(remediation = %name, host = %h.name_any(), step = %step.id(), "remediation step requested");
            status.phase = Some(phase);
            status.pending = Some(id);
            status.last_remediated =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now_ts));
            remediating(&mut status, true, reason, &what, generation, now_ts);
            ctx.event(rem, false, reason, &what).await;
            Action::requeue(AWAIT_REQUEST)
        }
        Next::GiveUp(why) => {
            // The status first: once the Machine is deleted, this object goes with it.
            status.phase = Some(RemediationPhase::GaveUp);
            status.pending = None;
            remediating(&mut status, false, "GaveUp", &why, generation, now_ts);
            write_status(&api, &name, old.as_ref(), &status).await?;
            ctx.event(rem, true, "GaveUp", &why).await;
            give_up(ctx, &ns, &machine_name, host.as_ref(), &why).await?;
            return Ok(Action::await_change());
        }
    };
    write_status(&api, &name, old.as_ref(), &status).await?;
    Ok(action)
}

fn remediating(
    status: &mut BeowulfRemediationStatus,
    on: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
) {
    conditions::set(
        &mut status.conditions,
        REMEDIATING,
        on,
        reason,
        message,
        generation,
        now,
    );
}

/// The end: the host is marked unhealthy (so the replacement does not claim it again), then the Machine is
/// deleted (its owner replaces it; the BeowulfMachine's deletion powers the host off and releases it).
async fn give_up(
    ctx: &Context,
    ns: &str,
    machine: &str,
    host: Option<&BeowulfHost>,
    why: &str,
) -> Result<(), Error> {
    if let Some(h) = host {
        let patch = json!({"metadata": {"annotations": {UNHEALTHY_ANNOTATION: why}}});
        Api::<BeowulfHost>::namespaced(ctx.client.clone(), ns)
            .patch(
                &h.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        ctx.event(h, true, "MarkedUnhealthy", why).await;
    }
    tracing::warn!(
        machine,
        host = host.map(ResourceExt::name_any).unwrap_or_default(),
        "{why}"
    );
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match Api::<Machine>::namespaced(ctx.client.clone(), ns)
        .delete(machine, &dp)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Retry failed reconciles after a pause.
pub fn error_policy(_r: Arc<BeowulfRemediation>, error: &Error, _ctx: Arc<Context>) -> Action {
    super::retry_after("BeowulfRemediation", error)
}
