//! `beowulf manager`: the Cluster API controllers in one process.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::api::{BeowulfCluster, BeowulfHost, BeowulfMachine};
use crate::controllers::bootplane::ProfileRegistry;
use crate::controllers::capi::{CLUSTER_NAME_LABEL, Cluster, Machine, WATCH_FILTER_LABEL};
use crate::controllers::leader::Elector;
use crate::controllers::power::BmcPower;
use crate::controllers::{Context, cluster, host, machine};

/// Run the BeowulfCluster, BeowulfMachine and BeowulfHost controllers against the cluster in the current
/// kubeconfig (or the in-cluster service account).
#[derive(Debug, clap::Args)]
pub struct ManagerArgs {
    /// Watch only this namespace; empty watches all namespaces (what clusterctl installs).
    #[arg(long, default_value = "")]
    pub namespace: String,
    /// Only reconcile objects labelled `cluster.x-k8s.io/watch-filter=<VALUE>`; empty reconciles all.
    #[arg(long, default_value = "")]
    pub watch_filter: String,
    /// Where to serve Prometheus metrics (`/metrics`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub metrics_bind_address: String,
    /// Where to serve `/healthz` and `/readyz`.
    #[arg(long, default_value = ":9440")]
    pub health_bind_address: String,
    /// Reconcile only while holding the Lease `beowulf-manager` (for more than one replica).
    #[arg(long)]
    pub leader_elect: bool,
    /// Namespace of the leader Lease (default: `$POD_NAMESPACE`, else `beowulf-system`).
    #[arg(long)]
    pub leader_election_namespace: Option<String>,
}

fn parse_addr(s: &str) -> anyhow::Result<SocketAddr> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    full.parse()
        .with_context(|| format!("invalid bind address {s:?}: expected HOST:PORT or :PORT"))
}

fn api<K>(client: &Client, namespace: &str) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    if namespace.is_empty() {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), namespace)
    }
}

/// Maps a request path to a response body (`None`: 404).
type Handler = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// A minimal HTTP/1.1 responder: `path → body` (the manager needs three fixed endpoints, not a framework).
async fn serve(addr: SocketAddr, handler: Handler) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    loop {
        let (mut sock, _) = listener.accept().await?;
        let handler = handler.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = match handler(path) {
                Some(b) => ("200 OK", b),
                None => ("404 Not Found", "not found\n".to_string()),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

pub async fn run(args: ManagerArgs) -> anyhow::Result<()> {
    let metrics_addr = parse_addr(&args.metrics_bind_address)?;
    let health_addr = parse_addr(&args.health_bind_address)?;
    let client = Client::try_default()
        .await
        .context("connecting to Kubernetes (kubeconfig or in-cluster service account)")?;
    let mut ctx = Context::new(
        client.clone(),
        Arc::new(BmcPower::default()),
        Arc::new(ProfileRegistry::default()),
    );
    ctx.recorder = Some(kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: "beowulf-manager".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    ));
    let ctx = Arc::new(ctx);

    // Health and metrics answer while waiting for leadership (a follower is alive and ready).
    let mut registry = prometheus_client::registry::Registry::default();
    ctx.metrics.register(&mut registry);
    let registry = Arc::new(registry);

    let metrics = serve(
        metrics_addr,
        Arc::new(move |path: &str| {
            (path == "/metrics").then(|| {
                let mut out = String::new();
                match prometheus_client::encoding::text::encode(&mut out, &registry) {
                    Ok(()) => out,
                    Err(e) => format!("# encoding failed: {e}\n"),
                }
            })
        }),
    );
    let health = serve(
        health_addr,
        Arc::new(|path: &str| matches!(path, "/healthz" | "/readyz").then(|| "ok\n".to_string())),
    );
    let metrics = tokio::spawn(metrics);
    let health = tokio::spawn(health);

    // Controllers start only once this replica leads (health and metrics answer meanwhile).
    let lost: std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Error> + Send>> =
        if args.leader_elect {
            let identity = std::env::var("POD_NAME")
                .unwrap_or_else(|_| format!("beowulf-{}", std::process::id()));
            let lease_ns = args
                .leader_election_namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .unwrap_or_else(|| crate::release::NAMESPACE.to_string());
            let elector = Elector {
                api: Api::namespaced(client.clone(), &lease_ns),
                name: "beowulf-manager".into(),
                identity,
                duration: std::time::Duration::from_secs(15),
            };
            let lost = elector.lead().await.context("leader election")?;
            Box::pin(async move { anyhow::Error::new(lost.await).context("leader election") })
        } else {
            Box::pin(std::future::pending())
        };

    let mut cfg = watcher::Config::default();
    if !args.watch_filter.is_empty() {
        cfg = cfg.labels(&format!("{WATCH_FILTER_LABEL}={}", args.watch_filter));
    }
    let ns = args.namespace.as_str();
    tracing::info!(namespace = ns, watch_filter = %args.watch_filter, "starting controllers");

    let machines = Controller::new(api::<BeowulfMachine>(&client, ns), cfg.clone());
    let machine_store = machines.store();
    let machines = machines
        .watches(api::<Machine>(&client, ns), cfg.clone(), |m: Machine| {
            let r = m.spec.infrastructure_ref.as_ref()?;
            (r.kind == "BeowulfMachine")
                .then(|| ObjectRef::new(&r.name).within(&m.namespace().unwrap_or_default()))
        })
        .watches(
            api::<Cluster>(&client, ns),
            cfg.clone(),
            move |c: Cluster| {
                let ns = c.namespace().unwrap_or_default();
                let name = c.name_any();
                machine_store
                    .state()
                    .into_iter()
                    .filter(|bm| {
                        bm.namespace().as_deref() == Some(ns.as_str())
                            && bm.labels().get(CLUSTER_NAME_LABEL) == Some(&name)
                    })
                    .map(|bm| ObjectRef::from_obj(&*bm))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(machine::reconcile, machine::error_policy, ctx.clone())
        .for_each(|_| async {});
    let clusters = Controller::new(api::<BeowulfCluster>(&client, ns), cfg.clone())
        .watches(api::<Cluster>(&client, ns), cfg.clone(), |c: Cluster| {
            let r = c.spec.infrastructure_ref.as_ref()?;
            (r.kind == "BeowulfCluster")
                .then(|| ObjectRef::new(&r.name).within(&c.namespace().unwrap_or_default()))
        })
        .shutdown_on_signal()
        .run(cluster::reconcile, cluster::error_policy, ctx.clone())
        .for_each(|_| async {});
    let hosts = Controller::new(api::<BeowulfHost>(&client, ns), cfg)
        .shutdown_on_signal()
        .run(host::reconcile, host::error_policy, ctx.clone())
        .for_each(|_| async {});

    tokio::select! {
        _ = async { tokio::join!(machines, clusters, hosts) } => Ok(()),
        e = lost => Err(e),
        r = metrics => r.context("metrics server task")?.context("metrics server"),
        r = health => r.context("health server task")?.context("health server"),
    }
}
