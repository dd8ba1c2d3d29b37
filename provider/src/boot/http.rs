//! The boot plane's HTTP server: per-host iPXE scripts, boot files, the NoCloud datasource, ignition, the
//! completion callback, and the operator's views (`/`, `/api/hosts`, `/metrics`).
//!
//! Authentication (docs/architecture.md, "Boot plane authentication"):
//! - the iPXE script URL (handed out by DHCP, which is broadcast) carries no secret; the request must come from
//!   the address reserved for the MAC in its path. The script then carries a fresh per-boot token;
//! - everything per host and secret (`/nocloud/<token>/…`, `/ignition/<token>`, `/callback/<token>`,
//!   `/inspection/<token>`) needs that token, and it must come from the token's host's address; anything else gets the same bare 403;
//! - boot files (`/images/…`) are shared by every host of an image and hold no secrets.
//!
//! Nothing here logs a URL, a token or a response body: request paths contain tokens.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use prometheus_client::registry::Registry;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::directory::{ArtifactSource, Directory, Host};
use super::plane::{BootPlane, CallbackReport};
use super::script::{BootContext, render_script};
use super::tokens::TokenGrant;
use super::{BootDirectory, Phase};

#[derive(Clone)]
struct AppState {
    plane: Arc<BootPlane>,
    registry: Arc<Registry>,
}

/// The router; serve it with `into_make_service_with_connect_info::<SocketAddr>()` (handlers need the peer
/// address).
pub fn router(plane: Arc<BootPlane>, registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/", get(pages::status_page))
        .route("/hosts/{name}", get(pages::host_page))
        .route("/api/hosts", get(api_hosts))
        .route("/api/hosts/{name}/console", get(api_console))
        .route("/metrics", get(metrics))
        .route("/boot/{file}", get(ipxe_script))
        .route("/images/{image}/{file}", get(artifact))
        .route("/nocloud/{token}/{item}", get(nocloud))
        .route("/ignition/{token}", get(ignition))
        .route("/callback/{token}", any(callback))
        .route("/inspection/{token}", post(inspection))
        .route("/disks/{token}", post(disks))
        .with_state(AppState { plane, registry })
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    plane: Arc<BootPlane>,
    registry: Arc<Registry>,
    limits: accept::ConnLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let refused = plane.metrics.http_refused.clone();
    accept::serve(listener, router(plane, registry), limits, refused, shutdown).await
}

fn forbidden() -> Response {
    (StatusCode::FORBIDDEN, "forbidden\n").into_response()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

fn v4(addr: SocketAddr) -> Option<Ipv4Addr> {
    match addr.ip() {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    }
}

fn text(content_type: &'static str, body: String) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// `GET /boot/<mac>.ipxe` (MAC with `-` or `:`): the host's script, if the request comes from its address.
async fn ipxe_script(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(file): Path<String>,
) -> Response {
    let Some(mac) = file
        .strip_suffix(".ipxe")
        .and_then(|m| m.parse::<super::MacAddr>().ok())
    else {
        return not_found();
    };
    let inv = s.plane.directory.get();
    let host = v4(peer).and_then(|ip| s.plane.host_at(&inv, ip));
    let Some(host) = host.filter(|h| h.mac == mac) else {
        s.plane.metrics.unknown_clients.inc();
        tracing::warn!(peer = %peer.ip(), %mac, "iPXE script refused: the address does not hold this MAC's reservation");
        return forbidden();
    };
    let Some(image) = s.plane.boot_image(&inv, &host) else {
        return not_found();
    };
    s.plane.record(&host.mac, Phase::IpxeScript);
    let token = s.plane.start_boot(&host);
    let server = s.plane.server_url(&inv, &host);
    let ctx = BootContext {
        server: &server,
        namespace: &host.namespace,
        token: token.expose(),
    };
    match render_script(&host, image, &ctx) {
        Ok(script) => {
            tracing::info!(host = %host.name, image = %image.name, "iPXE script served");
            text("text/plain; charset=utf-8", script)
        }
        Err(e) => {
            // The template was checked at load; an error here is a bug, not user input: say so, no secrets.
            tracing::error!(host = %host.name, error = %e, "rendering the iPXE script failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "script rendering failed\n",
            )
                .into_response()
        }
    }
}

/// `GET|HEAD /images/<image>/<file>`: a boot file, with Range support. Records the kernel/initrd/rootfs phase
/// for the host at the requesting address.
async fn artifact(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((image_name, file)): Path<(String, String)>,
    req: Request,
) -> Response {
    let inv = s.plane.directory.get();
    let Some(image) = inv.images.get(&image_name) else {
        return not_found();
    };
    let Some(art) = image.artifact(&file) else {
        return not_found();
    };
    let ArtifactSource::File(path) = &art.source else {
        return not_found();
    };
    let phase = if art.name == image.kernel.name {
        Phase::Kernel
    } else if image.rootfs.as_ref().is_some_and(|r| r.name == art.name) {
        Phase::Rootfs
    } else {
        Phase::Initrd
    };
    if req.method() == Method::GET
        && let Some(host) = v4(peer).and_then(|ip| s.plane.host_at(&inv, ip))
    {
        s.plane.record(&host.mac, phase);
    }
    files::serve(path, req.method(), req.headers())
}

/// The host at the peer address, and its grant for `token`; `None`: answer 403.
fn authorize(
    s: &AppState,
    inv: &Directory,
    peer: SocketAddr,
    token: &str,
) -> Option<(Arc<Host>, TokenGrant)> {
    let host = v4(peer).and_then(|ip| s.plane.host_at(inv, ip));
    let expected = host.as_ref().map(|h| h.name.as_str()).unwrap_or("");
    match s.plane.verify(token, Some(expected)) {
        Ok(grant) => match host {
            Some(h) if h.mac == grant.mac => Some((h, grant)),
            _ => None,
        },
        Err(reason) => {
            tracing::warn!(peer = %peer.ip(), host = expected, reason = reason.as_str(), "token refused");
            None
        }
    }
}

/// Changes whenever the user-data does: cloud-init then treats the boot as a new instance.
fn instance_id(host: &Host) -> String {
    let digest = Sha256::digest(host.user_data.expose().as_bytes());
    format!(
        "{}-{}-{}",
        host.namespace,
        host.name,
        &hex::encode(digest)[..12]
    )
}

fn provider_id(host: &Host) -> String {
    format!("beowulf://{}/{}", host.namespace, host.name)
}

/// `GET /nocloud/<token>/{meta-data,user-data,vendor-data,network-config}`.
async fn nocloud(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((token, item)): Path<(String, String)>,
) -> Response {
    let inv = s.plane.directory.get();
    let Some((host, grant)) = authorize(&s, &inv, peer, &token) else {
        return forbidden();
    };
    let body = match item.as_str() {
        // Names are DNS labels (validated), so plain YAML needs no quoting. `provider_id` is what the cluster
        // templates read (`{{ ds.meta_data.provider_id }}` for kubelet's `--provider-id`); `provider-id` is the
        // spelling of the earlier releases, kept for inventories' own templates.
        "meta-data" => {
            let pid = provider_id(&host);
            format!(
                "instance-id: {}\nlocal-hostname: {}\nprovider_id: {pid}\nprovider-id: {pid}\n",
                instance_id(&host),
                host.name,
            )
        }
        "user-data" => host.user_data.expose().to_string(),
        "vendor-data" => match &host.vendor_data {
            Some(v) => v.expose().to_string(),
            // Our own vendor-data makes cloud-init call back when it is done, without the operator writing it.
            None => {
                let server = s.plane.server_url(&inv, &host);
                format!(
                    "#cloud-config\nphone_home:\n  url: {}\n  post: [pub_key_rsa, pub_key_ecdsa, pub_key_ed25519, instance_id, hostname, fqdn]\n  tries: 10\n",
                    super::script::callback_url(&server, &token)
                )
            }
        },
        "network-config" => match &host.network_config {
            Some(n) => n.clone(),
            None => format!(
                "version: 2\nethernets:\n  boot:\n    match:\n      macaddress: \"{}\"\n    dhcp4: true\n",
                host.mac
            ),
        },
        _ => return not_found(),
    };
    s.plane.record(&grant.mac, Phase::Metadata);
    tracing::info!(host = %host.name, item = %item, "NoCloud data served");
    text("text/plain; charset=utf-8", body)
}

/// `GET /ignition/<token>`: the host's ignition config.
async fn ignition(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
) -> Response {
    let inv = s.plane.directory.get();
    let Some((host, grant)) = authorize(&s, &inv, peer, &token) else {
        return forbidden();
    };
    let Some(ign) = &host.ignition else {
        return not_found();
    };
    s.plane.record(&grant.mac, Phase::Metadata);
    tracing::info!(host = %host.name, "ignition served");
    text("application/json", ign.expose().to_string())
}

/// `POST|GET /callback/<token>`: the boot is done (cloud-init `phone_home`: form fields `instance_id`,
/// `hostname`, `fqdn`, `pub_key_*`; GET with the same query parameters for minimal images). Consumes the token.
async fn callback(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    req: Request,
) -> Response {
    let inv = s.plane.directory.get();
    let Some((host, grant)) = authorize(&s, &inv, peer, &token) else {
        return forbidden();
    };
    let mut fields = query;
    if req.method() == Method::POST {
        // phone_home posts a small form; 64 KiB is plenty for a few public keys.
        let Ok(bytes) = axum::body::to_bytes(req.into_body(), 64 * 1024).await else {
            return (StatusCode::PAYLOAD_TOO_LARGE, "callback body too large\n").into_response();
        };
        if let Ok(form) = serde_urlencoded_pairs(&bytes) {
            fields.extend(form);
        }
    } else if req.method() != Method::GET {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let mut report = CallbackReport {
        instance_id: fields.remove("instance_id"),
        hostname: fields.remove("hostname"),
        fqdn: fields.remove("fqdn"),
        pub_keys: Vec::new(),
        at: jiff::Timestamp::now().to_string(),
    };
    let mut keys: Vec<(String, String)> = fields
        .into_iter()
        .filter(|(k, _)| k.starts_with("pub_key_"))
        .collect();
    keys.sort();
    report.pub_keys = keys;
    s.plane.complete(&grant, report);
    tracing::info!(host = %host.name, "boot completed (callback)");
    text("text/plain; charset=utf-8", "ok\n".to_string())
}

/// A node's upload of at most `max` bytes; a larger one is refused with 413 (and logged), nothing read further.
async fn upload(
    req: Request,
    max: usize,
    what: &str,
    host: &Host,
) -> Result<axum::body::Bytes, Response> {
    axum::body::to_bytes(req.into_body(), max)
        .await
        .map_err(|_| {
            tracing::warn!(host = %host.name, "{what} refused: larger than {max} bytes");
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("{what} larger than {max} bytes\n"),
            )
                .into_response()
        })
}

/// `POST /inspection/<token>`: the inspector's hardware report (JSON, `crate::hardware`). Consumes the token;
/// a report that is too large (413) or unusable (400, saying why) changes nothing and leaves the token valid.
async fn inspection(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    req: Request,
) -> Response {
    use crate::hardware::{Hardware, MAX_REPORT_BYTES};
    let inv = s.plane.directory.get();
    let Some((host, grant)) = authorize(&s, &inv, peer, &token) else {
        return forbidden();
    };
    let body = match upload(req, MAX_REPORT_BYTES, "inspection report", &host).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let hardware = match Hardware::from_report(&body) {
        Ok(hw) => hw,
        Err(e) => {
            tracing::warn!(host = %host.name, error = %e, "inspection report refused");
            return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
        }
    };
    let summary = hardware.summary();
    match s.plane.complete_inspection(&grant, &host, hardware) {
        Ok(_) => {
            tracing::info!(host = %host.name, hardware = %summary, "inspection report stored");
            text("text/plain; charset=utf-8", "ok\n".to_string())
        }
        Err(e) => {
            tracing::error!(host = %host.name, error = %e, "inspection report not stored");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the report could not be stored; try again\n",
            )
                .into_response()
        }
    }
}

/// `POST /disks/<token>`: the node's report on its local disks (`crate::storage::DiskReport`, a line per disk),
/// sent before its callback. The token stays valid; a report that is too large (413) or does not fit the
/// boot's plan (400, saying why) is not stored.
async fn disks(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    req: Request,
) -> Response {
    use crate::storage::{DiskReport, MAX_REPORT_BYTES};
    let inv = s.plane.directory.get();
    let Some((host, _grant)) = authorize(&s, &inv, peer, &token) else {
        return forbidden();
    };
    let body = match upload(req, MAX_REPORT_BYTES, "disk report", &host).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    match DiskReport::parse(&body, &host.local_disks) {
        Ok(report) => {
            let (ok, reason, message) = report.condition(&host.local_disks);
            if ok {
                tracing::info!(host = %host.name, disks = %message, "local disks ready");
            } else {
                tracing::warn!(host = %host.name, reason, disks = %message, "local disks not ready");
            }
            s.plane.store_disk_report(&host, report);
            text("text/plain; charset=utf-8", "ok\n".to_string())
        }
        Err(e) => {
            tracing::warn!(host = %host.name, error = %e, "disk report refused");
            (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
        }
    }
}

/// Parses `application/x-www-form-urlencoded` with axum's own form support. Public for the fuzz targets.
#[doc(hidden)]
#[allow(clippy::result_unit_err)]
pub fn serde_urlencoded_pairs(bytes: &[u8]) -> Result<HashMap<String, String>, ()> {
    let uri = format!("/?{}", String::from_utf8_lossy(bytes));
    let uri: axum::http::Uri = uri.parse().map_err(|_| ())?;
    Query::<HashMap<String, String>>::try_from_uri(&uri)
        .map(|q| q.0)
        .map_err(|_| ())
}

#[derive(Serialize)]
struct HostView {
    name: String,
    mac: String,
    ip: String,
    image: String,
    network: String,
    provider_id: String,
    /// Not in the inventory: an unknown MAC that booted on a network with discovery (`discovered-<mac>`).
    discovered: bool,
    /// `booted` (callback seen in the current boot), `booting`, or `idle` (never seen).
    state: &'static str,
    boot: u64,
    /// Phase name → RFC 3339 time it was first reached in the current boot.
    phases: serde_json::Value,
    /// The last phase reached.
    last_phase: Option<&'static str>,
    callback: Option<CallbackReport>,
    /// The image its next boot gets (the inspection image while it is to be inspected).
    boots: Option<String>,
    /// Its latest inspection report (`crate::hardware::Hardware`) and when it arrived.
    hardware: Option<crate::hardware::Hardware>,
    inspected_at: Option<String>,
    /// Its local disks: each one's plan (`name`, `disk`, `mountPath`) and, once the current boot's node
    /// reported, what it did (`outcome`, `device`, `detail`).
    local_disks: Vec<serde_json::Value>,
}

fn local_disk_views(
    h: &Host,
    report: Option<crate::storage::DiskReport>,
) -> Vec<serde_json::Value> {
    h.local_disks
        .iter()
        .map(|p| {
            let mut v = serde_json::json!({
                "name": p.name, "disk": p.id.to_string(), "mountPath": p.mount_path,
                "filesystem": p.filesystem.as_str(),
            });
            if let Some(r) = report
                .as_ref()
                .and_then(|r| r.0.iter().find(|r| r.name == p.name))
            {
                v["outcome"] = r.outcome.as_str().into();
                v["device"] = r.device.clone().into();
                v["detail"] = r.detail.clone().into();
            }
            v
        })
        .collect()
}

fn host_views(plane: &BootPlane) -> Vec<HostView> {
    let inv = plane.directory.get();
    let discovered = plane.discovered_hosts(&inv);
    inv.hosts
        .iter()
        .map(|h| (h, false))
        .chain(discovered.iter().map(|h| (h, true)))
        .map(|(h, discovered)| {
            let rec = plane.boot_record(&h.mac).unwrap_or_default();
            let inspection = plane.inspections.get(&super::plane::host_key(h));
            let state = if rec.completed() {
                "booted"
            } else if rec.phases.is_empty() {
                "idle"
            } else {
                "booting"
            };
            HostView {
                name: h.name.clone(),
                mac: h.mac.to_string(),
                ip: h.ip.to_string(),
                image: h.image.clone(),
                network: inv
                    .networks
                    .get(h.network)
                    .map(|n| n.name.clone())
                    .unwrap_or_default(),
                provider_id: provider_id(h),
                discovered,
                state,
                boot: rec.boot,
                phases: serde_json::to_value(&rec)
                    .ok()
                    .and_then(|v| v.get("phases").cloned())
                    .unwrap_or_default(),
                last_phase: rec.latest().map(|p| p.as_str()),
                callback: if rec.completed() {
                    plane.callback_report(&h.name)
                } else {
                    None
                },
                // A discovered host that reported is not answered until it is in the inventory.
                boots: if discovered && inspection.is_some() {
                    None
                } else {
                    plane.boot_image(&inv, h).map(|i| i.name.clone())
                },
                hardware: inspection.as_ref().map(|i| i.hardware.clone()),
                inspected_at: inspection.map(|i| i.at.to_string()),
                local_disks: local_disk_views(h, plane.disk_report(&super::plane::host_key(h))),
            }
        })
        .collect()
}

async fn api_hosts(State(s): State<AppState>) -> Response {
    axum::Json(host_views(&s.plane)).into_response()
}

/// Lines `/api/hosts/<name>/console` returns when `lines` is not given.
const CONSOLE_LINES: usize = 200;

/// `GET /api/hosts/<name>/console[?lines=N][&follow=1]`: the host's captured serial console as text, one
/// `TIMESTAMP LINE` per line (scrubbed of tokens and secrets when captured); `follow` keeps the response open
/// and sends new lines as they come (a reader too slow for them is told how many it missed).
async fn api_console(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(logs) = s.plane.consoles() else {
        return (
            StatusCode::NOT_FOUND,
            "console capture is off on this server (beowulf standalone --consoles boot|always)\n",
        )
            .into_response();
    };
    if s.plane.directory.get().host(&name).is_none() {
        return (StatusCode::NOT_FOUND, "no such host\n").into_response();
    }
    let lines = match query.get("lines").map(|v| v.parse::<usize>()) {
        None => CONSOLE_LINES,
        Some(Ok(n)) => n.min(crate::console::log::TAIL_LINES),
        Some(Err(_)) => {
            return (StatusCode::BAD_REQUEST, "lines: a number of lines\n").into_response();
        }
    };
    let follow = matches!(query.get("follow").map(String::as_str), Some("1" | "true"));
    let log = if follow {
        Some(logs.host(&name))
    } else {
        logs.existing(&name)
    };
    let Some(log) = log else {
        return (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            String::new(),
        )
            .into_response();
    };
    // Subscribe before reading the tail: a line logged in between is sent twice rather than lost.
    let rx = follow.then(|| log.subscribe());
    let mut text = String::new();
    for l in log.tail(lines) {
        text.push_str(&l);
        text.push('\n');
    }
    let body = match rx {
        None => axum::body::Body::from(text),
        Some(rx) => {
            let head = futures::stream::once(async move { Ok::<_, std::io::Error>(text) });
            let rest = futures::stream::unfold(rx, |mut rx| async move {
                use tokio::sync::broadcast::error::RecvError;
                let item = match rx.recv().await {
                    Ok(l) => l + "\n",
                    Err(RecvError::Lagged(n)) => {
                        format!("[beowulf] {n} lines skipped (reader too slow)\n")
                    }
                    Err(RecvError::Closed) => return None,
                };
                Some((Ok(item), rx))
            });
            axum::body::Body::from_stream(futures::StreamExt::chain(head, rest))
        }
    };
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn metrics(State(s): State<AppState>) -> Response {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &s.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let mut r = out.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

pub mod accept;
#[doc(hidden)]
pub mod files;
mod pages;
pub mod sendfile;

#[cfg(test)]
mod tests;
