//! The BeowulfCluster controller (CAPI InfraCluster): control-plane endpoint, failure domains (racks),
//! `status.initialization.provisioned`.

use std::sync::Arc;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::capi::{Cluster, MANAGED_BY_ANNOTATION};
use super::{
    CLUSTER_FINALIZER, Context, Error, add_finalizer, has_paused_annotation, remove_finalizer,
    write_status,
};
use crate::api::conditions::{self, PAUSED, READY};
use crate::api::{BeowulfCluster, Initialization};

/// The owner `Cluster`'s name (group `cluster.x-k8s.io`, kind `Cluster`).
pub fn owner_cluster(bc: &BeowulfCluster) -> Option<String> {
    bc.owner_references()
        .iter()
        .find(|o| {
            o.kind == "Cluster" && o.api_version.split('/').next() == Some("cluster.x-k8s.io")
        })
        .map(|o| o.name.clone())
}

/// Reconciles one BeowulfCluster.
pub async fn reconcile(bc: Arc<BeowulfCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let r = reconcile_inner(&bc, &ctx).await;
    ctx.metrics.count("BeowulfCluster", r.is_ok());
    r
}

async fn reconcile_inner(bc: &BeowulfCluster, ctx: &Context) -> Result<Action, Error> {
    if bc.annotations().contains_key(MANAGED_BY_ANNOTATION) {
        tracing::debug!(cluster = %bc.name_any(), "externally managed; skipped");
        return Ok(Action::await_change());
    }
    let ns = bc
        .namespace()
        .ok_or_else(|| Error::Invalid("BeowulfCluster without namespace".into()))?;
    let name = bc.name_any();
    let api: Api<BeowulfCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(cluster_name) = owner_cluster(bc) else {
        return Ok(Action::await_change());
    };
    let Some(cluster) = Api::<Cluster>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&cluster_name)
        .await?
    else {
        return Ok(Action::await_change());
    };
    let now = ctx.now_ts();
    let generation = bc.meta().generation;
    let old = bc.status.clone();
    let mut status = old.clone().unwrap_or_default();
    let paused = cluster.spec.paused == Some(true) || has_paused_annotation(bc);
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
    if bc.meta().deletion_timestamp.is_some() {
        // Nothing of ours to tear down: the endpoint is the user's VIP and hosts are released by machines,
        // which CAPI deletes before the InfraCluster.
        remove_finalizer(&api, bc, CLUSTER_FINALIZER).await?;
        return Ok(Action::await_change());
    }
    let bc = &add_finalizer(&api, bc, CLUSTER_FINALIZER).await?;
    // Conditions carry the generation of the object they were computed for.
    let generation = bc.meta().generation;
    conditions::set(
        &mut status.conditions,
        PAUSED,
        false,
        "NotPaused",
        "",
        generation,
        now,
    );

    let endpoint_set = bc
        .spec
        .control_plane_endpoint
        .as_ref()
        .is_some_and(|e| e.is_set())
        || cluster
            .spec
            .control_plane_endpoint
            .as_ref()
            .is_some_and(|e| e.is_set());
    if !endpoint_set {
        conditions::set(
            &mut status.conditions,
            READY,
            false,
            "WaitingForControlPlaneEndpoint",
            "set spec.controlPlaneEndpoint (for example the kube-vip VIP) here or on the Cluster",
            generation,
            now,
        );
        write_status(&api, &name, old.as_ref(), &status).await?;
        return Ok(Action::await_change());
    }
    status.initialization = Some(Initialization {
        provisioned: Some(true),
    });
    status.ready = Some(true);
    status.failure_domains = bc.spec.failure_domains.clone();
    conditions::set(
        &mut status.conditions,
        READY,
        true,
        "Provisioned",
        "",
        generation,
        now,
    );
    write_status(&api, &name, old.as_ref(), &status).await?;
    Ok(Action::await_change())
}

/// Retry failed reconciles after a pause.
pub fn error_policy(_bc: Arc<BeowulfCluster>, error: &Error, _ctx: Arc<Context>) -> Action {
    super::retry_after("BeowulfCluster", error)
}
