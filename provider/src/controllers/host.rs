//! The BeowulfHost controller: registration (BMC reachability, power state), and direct provisioning of
//! hosts with `spec.image` + `spec.userData` and no consumer (HPC compute nodes that are not Kubernetes
//! nodes). Claimed hosts are driven by the BeowulfMachine controller.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;

use super::hostops::{self, ProvisionInput};
use super::{
    Context, Error, HOST_FINALIZER, add_finalizer, has_paused_annotation, remove_finalizer,
    write_status,
};
use crate::api::conditions::{self, PAUSED};
use crate::api::host::HostStateName;
use crate::api::{BeowulfHost, BeowulfImage};
use crate::provisioning::io::UserDataFormat;
use crate::provisioning::{Goal, HostState};

/// How often an idle host's BMC is checked.
pub const IDLE_RECHECK: Duration = Duration::from_secs(300);

/// Reconciles one BeowulfHost.
pub async fn reconcile(host: Arc<BeowulfHost>, ctx: Arc<Context>) -> Result<Action, Error> {
    let r = reconcile_inner(&host, &ctx).await;
    ctx.metrics.count("BeowulfHost", r.is_ok());
    r
}

async fn reconcile_inner(host: &BeowulfHost, ctx: &Context) -> Result<Action, Error> {
    let ns = host
        .namespace()
        .ok_or_else(|| Error::Invalid("BeowulfHost without namespace".into()))?;
    let api: Api<BeowulfHost> = Api::namespaced(ctx.client.clone(), &ns);
    if has_paused_annotation(host) {
        let mut status = host.status.clone().unwrap_or_default();
        conditions::set(
            &mut status.conditions,
            PAUSED,
            true,
            "Paused",
            "reconciliation is paused",
            host.metadata.generation,
            ctx.now_ts(),
        );
        write_status(&api, &host.name_any(), host.status.as_ref(), &status).await?;
        return Ok(Action::await_change());
    }
    if host.metadata.deletion_timestamp.is_some() {
        return reconcile_delete(host, ctx, &api).await;
    }
    if super::discovery::is_discovered(host) {
        // No BMC yet: nothing to drive until an operator accepts it (controllers::discovery).
        return Ok(Action::await_change());
    }
    let host = &add_finalizer(&api, host, HOST_FINALIZER).await?;
    if host.spec.consumer_ref.is_some() {
        // The consumer's controller drives it; a second writer would race on the status.
        return Ok(Action::await_change());
    }
    if let Some((goal, input)) = inspection(host, ctx, &api, &ns).await? {
        let outcome = hostops::drive(ctx, host, goal, input.as_ref()).await?;
        return Ok(Action::requeue(outcome.requeue.unwrap_or(IDLE_RECHECK)));
    }
    let (goal, input) = match (&host.spec.image, &host.spec.user_data) {
        (Some(image), Some(ud)) => {
            let image = Api::<BeowulfImage>::namespaced(ctx.client.clone(), &ns)
                .get_opt(&image.name)
                .await?
                .ok_or_else(|| {
                    Error::Invalid(format!("BeowulfImage {ns}/{} not found", image.name))
                })?;
            let secret = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
                .get_opt(&ud.name)
                .await?
                .ok_or_else(|| {
                    Error::Invalid(format!("user-data Secret {ns}/{} not found", ud.name))
                })?;
            let key = ud.key.clone().unwrap_or_else(|| "value".to_string());
            let data = secret
                .data
                .and_then(|d| d.get(&key).map(|b| b.0.clone()))
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "user-data Secret {ns}/{} has no key {key:?}",
                        ud.name
                    ))
                })?;
            let input = ProvisionInput {
                image,
                user_data: data,
                format: UserDataFormat::CloudConfig,
                local_disks: Some(Vec::new()),
                cleaning: None,
                consumer_says_provisioned: false,
            };
            (Goal::Provision, Some(input))
        }
        _ => (Goal::Idle, None),
    };
    let outcome = hostops::drive(ctx, host, goal, input.as_ref()).await?;
    Ok(Action::requeue(outcome.requeue.unwrap_or(IDLE_RECHECK)))
}

/// Whether an unclaimed host is to be inspected now, and with what: the manager has an inspection image
/// (`--inspection-image`), and the host has no `status.hardware` yet or carries [`INSPECT_ANNOTATION`].
/// `None`: go on with the host's other goals. The annotation is removed once the inspection boot starts;
/// on a host in `error` (an inspection or a provisioning that failed) it first releases the host.
async fn inspection(
    host: &BeowulfHost,
    ctx: &Context,
    api: &Api<BeowulfHost>,
    ns: &str,
) -> Result<Option<(Goal, Option<ProvisionInput>)>, Error> {
    let Some(image_name) = &ctx.inspection_image else {
        return Ok(None);
    };
    let status = host.status.clone().unwrap_or_default();
    let requested = host.annotations().contains_key(INSPECT_ANNOTATION);
    let inspecting = status.state == HostStateName::Inspecting;
    if !(inspecting || requested || status.hardware.is_none()) {
        return Ok(None);
    }
    if status.state == HostStateName::Error {
        // A failed host inspects again only when asked: release it first (power off, then available).
        return Ok(requested.then_some((Goal::Idle, None)));
    }
    if requested && inspecting {
        // The inspection the annotation asked for is under way: the request is answered.
        let patch = serde_json::json!({"metadata": {"annotations": {INSPECT_ANNOTATION: null}}});
        api.patch(
            &host.name_any(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await?;
    }
    let Some(image) = Api::<BeowulfImage>::namespaced(ctx.client.clone(), ns)
        .get_opt(image_name)
        .await?
    else {
        tracing::warn!(host = %hostops::host_key(host), image = %image_name,
            "inspection image not found in the host's namespace; the host is not inspected");
        return Ok(None);
    };
    let input = ProvisionInput {
        image,
        user_data: Vec::new(),
        format: UserDataFormat::CloudConfig,
        local_disks: None,
        cleaning: None,
        consumer_says_provisioned: false,
    };
    Ok(Some((Goal::Inspect, Some(input))))
}

/// Asks for a host to be inspected again (any value); removed when that inspection starts.
pub const INSPECT_ANNOTATION: &str = "beowulf.infrastructure.cluster.x-k8s.io/inspect";

/// Deletion: a host that is (or was being) provisioned is deprovisioned first — boot profile withdrawn, powered
/// off through its BMC, confirmed off — and only then is the finalizer removed. This holds whether a machine
/// claims it or not (the machine then reports `HostDeleted` and leaves the host alone). A BMC that stays
/// unreachable keeps the host (condition `BMCReachable=False`); removing the finalizer by hand is the escape.
async fn reconcile_delete(
    host: &BeowulfHost,
    ctx: &Context,
    api: &Api<BeowulfHost>,
) -> Result<Action, Error> {
    if !host.finalizers().iter().any(|f| f == HOST_FINALIZER) {
        return Ok(Action::await_change());
    }
    let idle = matches!(
        host.status.as_ref().map(|s| s.state),
        None | Some(HostStateName::Registering) | Some(HostStateName::Available)
    );
    if idle {
        ctx.boot.withdraw(&hostops::host_key(host));
    } else {
        let outcome = hostops::drive(ctx, host, Goal::Release, None).await?;
        if outcome.state != HostState::Available {
            return Ok(Action::requeue(outcome.requeue.unwrap_or(ctx.engine.poll)));
        }
    }
    tracing::info!(host = %hostops::host_key(host), "host deprovisioned; removing its finalizer");
    if let Some(consoles) = &ctx.consoles {
        consoles.forget(&hostops::host_key(host));
    }
    // Re-read: the drive above may have written the status (a newer resourceVersion).
    if let Some(fresh) = api.get_opt(&host.name_any()).await? {
        remove_finalizer(api, &fresh, HOST_FINALIZER).await?;
    }
    Ok(Action::await_change())
}

/// Retry failed reconciles after a pause.
pub fn error_policy(_host: Arc<BeowulfHost>, error: &Error, _ctx: Arc<Context>) -> Action {
    super::retry_after("BeowulfHost", error)
}
