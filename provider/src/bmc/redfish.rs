//! Redfish driver (reqwest + rustls).
//!
//! Discovery: the service root (public) gives the Systems collection and the sessions collection; the system
//! is the one named in the address or, without a name, the only member of the collection. Authentication: a
//! session (`POST …/Sessions`, then `X-Auth-Token`) when the service has a SessionService, HTTP Basic when it
//! does not (sushy-tools); the session is reused, renewed once on a 401, and deleted by `close`. Power
//! changes use `ComputerSystem.Reset` with a `ResetType` taken from the system's allowable values, and a
//! reset the BMC accepts as a task (202 and a task monitor) is followed to its end; boot overrides are
//! PATCHed with `If-Match` when the system carries an ETag. Services differ in small ways this driver
//! absorbs: a session answered with 201 or 204, `Location`s relative or absolute (an absolute one may
//! name the BMC by an address we cannot reach, so only its path is used), systems without allowable
//! values (the schema's values are assumed, and the log says so).
//!
//! Inventory: the ComputerSystem's own facts (manufacturer, model, serial, SKU, BIOS version, processor and
//! memory summaries), then its `EthernetInterfaces`, its `Storage` (each storage's `Drives`) and, when that
//! gives no drive, its `SimpleStorage`. Every link is optional and at most `MAX_FOLLOWED` (128) are read; a
//! sub-resource that is missing or fails is left out (debug log), refused credentials and an unreachable BMC
//! are errors as for every other call.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::{
    BmcDriver, BmcError, BootDevice, BootMode, BootOverride, BootOverrideStatus, Credentials,
    Endpoint, Limits, Options, PowerAction, PowerState, Protocol, Result,
};
use crate::hardware::out_of_band::{
    OutOfBand, OutOfBandDrive, OutOfBandNic, Processors, SOURCE_REDFISH,
};

#[derive(Debug, Clone)]
enum Auth {
    Basic,
    Token {
        token: String,
        session: Option<String>,
    },
}

#[derive(Debug, Default)]
struct State {
    auth: Option<Auth>,
    /// Path of the system resource, once discovered.
    system: Option<String>,
}

/// A Redfish BMC. Calls are serialized per BMC and limited globally by [`Limits`].
pub struct RedfishClient {
    endpoint: Endpoint,
    name: String,
    base: String,
    credentials: Credentials,
    options: Options,
    limits: Limits,
    http: reqwest::Client,
    state: Mutex<State>,
}

/// What a response looked like, for the few things we need from it.
struct Reply {
    status: StatusCode,
    etag: Option<String>,
    token: Option<String>,
    location: Option<String>,
    /// `Retry-After` in seconds (a task monitor's hint).
    retry_after: Option<u64>,
    body: Value,
}

/// How long a reset the BMC runs as a task may take before we give up on it.
const TASK_TIMEOUT: Duration = Duration::from_secs(120);

/// `BootSourceOverrideTarget` values in the Redfish schema (ComputerSystem v1.x), assumed when a system
/// lists none.
const SCHEMA_BOOT_TARGETS: &[&str] = &[
    "None",
    "Pxe",
    "Floppy",
    "Cd",
    "Usb",
    "Hdd",
    "BiosSetup",
    "Utilities",
    "Diags",
    "UefiShell",
    "UefiTarget",
    "SDCard",
    "UefiHttp",
    "RemoteDrive",
    "UefiBootNext",
    "Recovery",
];

/// The path (and query) of a `Location` or `@odata.id`: a relative one as it is, an absolute one without
/// its scheme and authority (BMCs behind NAT or a proxy name themselves by addresses we cannot reach).
#[doc(hidden)]
pub fn path_of(location: &str) -> String {
    match location.split_once("://") {
        Some((_, rest)) => match rest.find('/') {
            Some(i) => rest[i..].to_string(),
            None => "/".into(),
        },
        None if location.starts_with('/') => location.to_string(),
        None => format!("/{location}"),
    }
}

fn odata_id(v: &Value) -> Option<&str> {
    v.get("@odata.id").and_then(Value::as_str)
}

/// Redfish's message for an error response, if it has one.
#[doc(hidden)]
pub fn error_message(body: &Value) -> String {
    let e = &body["error"];
    let ext = e["@Message.ExtendedInfo"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(|m| m["Message"].as_str())
        .or_else(|| e["message"].as_str());
    ext.map(|m| format!(": {m}")).unwrap_or_default()
}

impl RedfishClient {
    pub fn new(
        endpoint: Endpoint,
        credentials: Credentials,
        options: Options,
        limits: Limits,
    ) -> Result<Self> {
        let name = endpoint.to_string();
        let tls = matches!(endpoint.protocol, Protocol::Redfish { tls: true });
        let mut b = reqwest::Client::builder()
            .timeout(options.http_timeout)
            .connect_timeout(options.http_timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(1)
            .user_agent(concat!("beowulf/", env!("CARGO_PKG_VERSION")));
        if tls {
            if let Some(pem) = &options.ca_pem {
                let bad = |why: String| BmcError::Unsupported {
                    bmc: name.clone(),
                    what: format!(
                        "the CA bundle given for it ({why}); give a PEM file with one or more certificates"
                    ),
                };
                let certs =
                    reqwest::Certificate::from_pem_bundle(pem).map_err(|e| bad(e.to_string()))?;
                if certs.is_empty() {
                    return Err(bad("no certificate in it".into()));
                }
                b = b.tls_certs_only(certs);
            }
            if options.insecure_tls {
                b = b.danger_accept_invalid_certs(true);
            }
        }
        let http = b.build().map_err(|e| BmcError::Protocol {
            bmc: name.clone(),
            detail: format!("building the HTTP client: {e}"),
        })?;
        let base = format!(
            "{}://{}",
            if tls { "https" } else { "http" },
            endpoint.authority()
        );
        Ok(RedfishClient {
            endpoint,
            name,
            base,
            credentials,
            options,
            limits,
            http,
            state: Mutex::new(State::default()),
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path_of(path))
    }

    fn transport_error(&self, what: &str, e: reqwest::Error) -> BmcError {
        if e.is_timeout() {
            BmcError::Timeout {
                bmc: self.name.clone(),
                what: what.to_string(),
                after: self.options.http_timeout,
            }
        } else if e.is_connect() {
            // Walk to the root cause: "connection refused", a TLS certificate error, …
            let mut detail = e.to_string();
            let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
            while let Some(s) = src {
                detail = format!("{detail}: {s}");
                src = s.source();
            }
            if detail.contains("certificate") || detail.contains("Certificate") {
                BmcError::Protocol {
                    bmc: self.name.clone(),
                    detail: format!(
                        "TLS: {detail}; give the BMC's CA (--ca-cert / caCert) or opt into insecureTLS"
                    ),
                }
            } else {
                BmcError::Unreachable {
                    bmc: self.name.clone(),
                    detail,
                }
            }
        } else {
            BmcError::Protocol {
                bmc: self.name.clone(),
                detail: format!("{what}: {e}"),
            }
        }
    }

    /// One HTTP request with retries (backoff 250 ms, doubling) on transport failures. Requests that change
    /// state are retried only when the connection could not be made (so the BMC never saw them).
    async fn send(
        &self,
        auth: Option<&Auth>,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Reply> {
        let what = format!("{method} {path}");
        let idempotent = method == Method::GET || method == Method::DELETE;
        let mut backoff = Duration::from_millis(250);
        let mut attempt = 0;
        loop {
            let mut rq = self
                .http
                .request(method.clone(), self.url(path))
                .header("Accept", "application/json");
            match auth {
                Some(Auth::Basic) => {
                    rq = rq.basic_auth(
                        &self.credentials.username,
                        Some(self.credentials.password()),
                    )
                }
                Some(Auth::Token { token, .. }) => rq = rq.header("X-Auth-Token", token),
                None => {}
            }
            if let Some(b) = body {
                rq = rq.json(b);
            }
            if let Some(tag) = if_match {
                rq = rq.header("If-Match", tag);
            }
            match rq.send().await {
                Ok(r) => {
                    let status = r.status();
                    let header = |n: &str| {
                        r.headers()
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    };
                    let (etag, token, location, retry_after) = (
                        header("etag"),
                        header("x-auth-token"),
                        header("location"),
                        header("retry-after"),
                    );
                    let bytes = r
                        .bytes()
                        .await
                        .map_err(|e| self.transport_error(&what, e))?;
                    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    return Ok(Reply {
                        status,
                        etag,
                        token,
                        location,
                        retry_after: retry_after.and_then(|v| v.trim().parse().ok()),
                        body,
                    });
                }
                Err(e) => {
                    let retry = attempt < self.options.retries
                        && (e.is_connect() || (idempotent && e.is_timeout()));
                    let err = self.transport_error(&what, e);
                    if !retry || matches!(err, BmcError::Protocol { .. }) {
                        return Err(err);
                    }
                    tracing::debug!(bmc = %self.name, error = %err, attempt, "retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
            }
        }
    }

    /// Logs in (session or Basic) and finds the system, if not done yet.
    async fn ensure(&self, st: &mut State) -> Result<(Auth, String)> {
        if let (Some(a), Some(s)) = (&st.auth, &st.system) {
            return Ok((a.clone(), s.clone()));
        }
        let root = self
            .send(None, Method::GET, "/redfish/v1/", None, None)
            .await?;
        if !root.status.is_success() {
            return Err(BmcError::Protocol {
                bmc: self.name.clone(),
                detail: format!(
                    "GET /redfish/v1/ answered {}; is this a Redfish service?",
                    root.status
                ),
            });
        }
        let systems = root
            .body
            .get("Systems")
            .and_then(odata_id)
            .unwrap_or("/redfish/v1/Systems")
            .to_string();
        let auth = match &st.auth {
            Some(a) => a.clone(),
            None => {
                let a = self.login(&root.body).await?;
                st.auth = Some(a.clone());
                a
            }
        };
        let system = match &self.endpoint.system {
            Some(id) => format!("{}/{}", systems.trim_end_matches('/'), id),
            None => {
                let c = self
                    .checked(&auth, Method::GET, &systems, None, None)
                    .await?;
                let members: Vec<String> = c.body["Members"]
                    .as_array()
                    .map(|m| m.iter().filter_map(odata_id).map(str::to_string).collect())
                    .unwrap_or_default();
                match members.as_slice() {
                    [one] => one.clone(),
                    [] => {
                        return Err(BmcError::Unsupported {
                            bmc: self.name.clone(),
                            what: "any computer system (the Systems collection is empty)".into(),
                        });
                    }
                    many => {
                        let ids: Vec<&str> =
                            many.iter().filter_map(|m| m.rsplit('/').next()).collect();
                        return Err(BmcError::Unsupported {
                            bmc: self.name.clone(),
                            what: format!(
                                "choosing a system on its own: it has {} ({}); put the system id in the address, e.g. redfish://HOST/{}",
                                ids.len(),
                                ids.join(", "),
                                ids.first().copied().unwrap_or("ID")
                            ),
                        });
                    }
                }
            }
        };
        st.system = Some(system.clone());
        Ok((auth, system))
    }

    /// Creates a session when the service offers one; HTTP Basic otherwise.
    async fn login(&self, root: &Value) -> Result<Auth> {
        let sessions = root
            .pointer("/Links/Sessions")
            .and_then(odata_id)
            .map(str::to_string)
            .or_else(|| {
                root.get("SessionService")
                    .and_then(odata_id)
                    .map(|s| format!("{}/Sessions", s.trim_end_matches('/')))
            });
        let Some(sessions) = sessions else {
            tracing::debug!(bmc = %self.name, "no SessionService, using HTTP Basic");
            return Ok(Auth::Basic);
        };
        let body =
            json!({"UserName": self.credentials.username, "Password": self.credentials.password()});
        let r = self
            .send(None, Method::POST, &sessions, Some(&body), None)
            .await?;
        match r.status {
            s if s.is_success() => match r.token {
                Some(token) => Ok(Auth::Token {
                    token,
                    // 201 carries the session (and usually a Location), 204 only the headers.
                    session: r
                        .location
                        .as_deref()
                        .or_else(|| odata_id(&r.body))
                        .map(path_of),
                }),
                None => Ok(Auth::Basic),
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(BmcError::Auth {
                bmc: self.name.clone(),
                detail: format!(
                    "session login answered {}{}",
                    r.status,
                    error_message(&r.body)
                ),
            }),
            // 404/405/501 and friends: no usable session service.
            _ => Ok(Auth::Basic),
        }
    }

    /// A request whose non-2xx answers become errors of the right kind.
    async fn checked(
        &self,
        auth: &Auth,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Reply> {
        let r = self
            .send(Some(auth), method.clone(), path, body, if_match)
            .await?;
        if r.status.is_success() {
            return Ok(r);
        }
        let msg = error_message(&r.body);
        Err(match r.status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => BmcError::Auth {
                bmc: self.name.clone(),
                detail: format!("{method} {path} answered {}{msg}", r.status),
            },
            StatusCode::NOT_FOUND => BmcError::Unsupported {
                bmc: self.name.clone(),
                what: format!("{path} (404 Not Found{msg})"),
            },
            StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => BmcError::Unsupported {
                bmc: self.name.clone(),
                what: format!("{method} {path} ({}{msg})", r.status),
            },
            s => BmcError::Protocol {
                bmc: self.name.clone(),
                detail: format!("{method} {path} answered {s}{msg}"),
            },
        })
    }

    /// Follows an operation the BMC accepted as a task (202) to its end: polls the task monitor from
    /// `Location` (or the Task resource in the body) until it stops answering 202 and the task, if the
    /// answer is one, reached a final state. A task that ends in Exception, Killed or Cancelled is an
    /// error with the task's message.
    async fn follow_task(&self, auth: &Auth, accepted: &Reply, what: &str) -> Result<()> {
        let Some(monitor) = accepted
            .location
            .as_deref()
            .or_else(|| odata_id(&accepted.body))
            .map(path_of)
        else {
            tracing::debug!(bmc = %self.name, what, "202 without a task monitor; taking it as started");
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + TASK_TIMEOUT;
        let mut wait = Duration::from_millis(250);
        let mut hint = accepted.retry_after;
        loop {
            let pause = hint.map_or(wait, |s| Duration::from_secs(s.min(5)));
            if tokio::time::Instant::now() + pause > deadline {
                return Err(BmcError::Timeout {
                    bmc: self.name.clone(),
                    what: format!("waiting for the task of {what} ({monitor})"),
                    after: TASK_TIMEOUT,
                });
            }
            tokio::time::sleep(pause).await;
            wait = (wait * 2).min(Duration::from_secs(2));
            let r = self
                .send(Some(auth), Method::GET, &monitor, None, None)
                .await?;
            hint = r.retry_after;
            match r.status {
                StatusCode::ACCEPTED => continue,
                // A monitor may be deleted once its task completed (DMTF DSP0266, task monitors).
                StatusCode::NOT_FOUND | StatusCode::GONE => {
                    tracing::debug!(bmc = %self.name, what, "task monitor gone; the task completed");
                    return Ok(());
                }
                s if s.is_success() => {}
                _ => {
                    return Err(BmcError::Protocol {
                        bmc: self.name.clone(),
                        detail: format!(
                            "the task of {what} ({monitor}) answered {}{}",
                            r.status,
                            error_message(&r.body)
                        ),
                    });
                }
            }
            match r.body["TaskState"].as_str() {
                None | Some("Completed") => return Ok(()),
                Some(state @ ("Exception" | "Killed" | "Cancelled")) => {
                    let msg = r.body["Messages"]
                        .as_array()
                        .and_then(|m| m.first())
                        .and_then(|m| m["Message"].as_str())
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default();
                    return Err(BmcError::Protocol {
                        bmc: self.name.clone(),
                        detail: format!("the task of {what} ended {state}{msg}"),
                    });
                }
                Some(_) => continue, // New, Starting, Running, Pending, …
            }
        }
    }

    /// Runs `f` with the BMC's lock held (one request in flight), a global permit, and a live login; a
    /// session that expired (401) is renewed once.
    async fn with_system<T>(&self, f: impl AsyncFn(&Self, &Auth, &str) -> Result<T>) -> Result<T> {
        let _permit = self.limits.acquire().await;
        let mut st = self.state.lock().await;
        let (auth, system) = self.ensure(&mut st).await?;
        match f(self, &auth, &system).await {
            Err(BmcError::Auth { .. }) if matches!(auth, Auth::Token { .. }) => {
                st.auth = None;
                let (auth, system) = self.ensure(&mut st).await?;
                f(self, &auth, &system).await
            }
            r => r,
        }
    }
}

/// At most this many sub-resources (collections, NICs, storage, drives) are read for one inventory.
const MAX_FOLLOWED: usize = 128;

impl RedfishClient {
    /// GETs a sub-resource of the inventory. `None` (with a debug log) when it fails in a way that concerns
    /// only it — missing (404), refused, malformed, slow (a timeout also ends the following of further links,
    /// so one slow BMC does not cost a timeout per link) — or when `budget` is spent; refused credentials and
    /// an unreachable BMC are errors.
    async fn follow(&self, auth: &Auth, budget: &mut usize, path: &str) -> Result<Option<Value>> {
        if *budget == 0 {
            return Ok(None);
        }
        *budget -= 1;
        match self.checked(auth, Method::GET, path, None, None).await {
            Ok(r) if r.body.is_object() => Ok(Some(r.body)),
            Ok(_) => {
                tracing::debug!(bmc = %self.name, path, "inventory: not a JSON object, skipped");
                Ok(None)
            }
            Err(e @ (BmcError::Auth { .. } | BmcError::Unreachable { .. })) => Err(e),
            Err(e) => {
                if matches!(e, BmcError::Timeout { .. }) {
                    *budget = 0;
                }
                tracing::debug!(bmc = %self.name, path, error = %e, "inventory: sub-resource skipped");
                Ok(None)
            }
        }
    }

    /// A collection member: used as it is when the service expanded it, otherwise read by its `@odata.id`.
    async fn member(&self, auth: &Auth, budget: &mut usize, m: &Value) -> Result<Option<Value>> {
        let expanded = m
            .as_object()
            .is_some_and(|o| o.keys().any(|k| !k.starts_with('@')));
        match odata_id(m) {
            _ if expanded => Ok(Some(m.clone())),
            Some(path) => self.follow(auth, budget, path).await,
            None => Ok(None),
        }
    }
}

#[doc(hidden)]
pub fn members(collection: &Value) -> impl Iterator<Item = &Value> {
    collection["Members"].as_array().into_iter().flatten()
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

/// A non-negative integer, also when the service writes it as a float (`1000.0`).
fn uint(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0 && *f < u64::MAX as f64)
            .map(|f| f as u64)
    })
}

/// The inventory facts of a ComputerSystem resource itself (its links are followed by the caller).
#[doc(hidden)]
pub fn system_facts(sys: &Value) -> OutOfBand {
    let mut inv = OutOfBand::new(SOURCE_REDFISH);
    inv.manufacturer = text(&sys["Manufacturer"]);
    inv.model = text(&sys["Model"]);
    inv.serial = text(&sys["SerialNumber"]);
    inv.sku = text(&sys["SKU"]);
    inv.bios_version = text(&sys["BiosVersion"]);
    let p = &sys["ProcessorSummary"];
    let processors = Processors {
        count: uint(&p["Count"]).and_then(|n| u32::try_from(n).ok()),
        model: text(&p["Model"]),
    };
    if processors != Processors::default() {
        inv.processors = Some(processors);
    }
    // GiB may be fractional (0.5); anything not a plausible size is left out.
    inv.memory_bytes = sys["MemorySummary"]["TotalSystemMemoryGiB"]
        .as_f64()
        .filter(|g| g.is_finite() && *g > 0.0 && *g < (1u64 << 33) as f64)
        .map(|g| (g * (1u64 << 30) as f64).round() as u64);
    inv
}

#[doc(hidden)]
pub fn nic(n: &Value) -> OutOfBandNic {
    OutOfBandNic {
        id: text(&n["Id"])
            .or_else(|| {
                odata_id(n)
                    .and_then(|p| p.rsplit('/').next())
                    .map(str::to_string)
            })
            .unwrap_or_default(),
        // Some services leave MACAddress empty and fill only the permanent one.
        mac: text(&n["MACAddress"])
            .filter(|m| !m.trim().is_empty())
            .or_else(|| text(&n["PermanentMACAddress"])),
        speed_mbps: uint(&n["SpeedMbps"]).and_then(|s| u32::try_from(s).ok()),
    }
}

#[doc(hidden)]
pub fn drive(d: &Value) -> OutOfBandDrive {
    OutOfBandDrive {
        name: text(&d["Name"])
            .or_else(|| text(&d["Id"]))
            .unwrap_or_default(),
        size_bytes: uint(&d["CapacityBytes"]),
        serial: text(&d["SerialNumber"]),
        model: text(&d["Model"]),
        media_type: text(&d["MediaType"]),
        protocol: text(&d["Protocol"]),
    }
}

/// The devices of a SimpleStorage resource (name and capacity are all it has; absent devices are left out).
#[doc(hidden)]
pub fn simple_storage_devices(ss: &Value) -> Vec<OutOfBandDrive> {
    ss["Devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["Status"]["State"].as_str() != Some("Absent"))
        .map(|d| OutOfBandDrive {
            name: text(&d["Name"]).unwrap_or_default(),
            size_bytes: uint(&d["CapacityBytes"]),
            model: text(&d["Model"]),
            ..OutOfBandDrive::default()
        })
        .collect()
}

/// A ComputerSystem's `PowerState` (a transition counts as the state it leaves); anything else is a protocol
/// error naming the BMC and the system. Public for the fuzz targets.
#[doc(hidden)]
pub fn parse_power_state(bmc: &str, sys: &str, system: &Value) -> Result<PowerState> {
    match system["PowerState"].as_str() {
        Some("On") | Some("PoweringOff") => Ok(PowerState::On),
        Some("Off") | Some("PoweringOn") => Ok(PowerState::Off),
        other => Err(BmcError::Protocol {
            bmc: bmc.to_string(),
            detail: format!("system {sys} has PowerState {other:?}"),
        }),
    }
}

/// A ComputerSystem's boot override (`Boot.BootSourceOverride*`); targets we do not use read as no override.
/// Public for the fuzz targets.
#[doc(hidden)]
pub fn parse_boot(system: &Value) -> BootOverrideStatus {
    let b = &system["Boot"];
    let enabled = b["BootSourceOverrideEnabled"].as_str();
    let device = match b["BootSourceOverrideTarget"].as_str() {
        _ if enabled == Some("Disabled") => None,
        Some("Pxe") => Some(BootDevice::Pxe),
        Some("Hdd") => Some(BootDevice::Disk),
        Some("Cd") => Some(BootDevice::Cdrom),
        Some("BiosSetup") => Some(BootDevice::BiosSetup),
        Some("UefiHttp") => Some(BootDevice::UefiHttp),
        _ => None,
    };
    BootOverrideStatus {
        device,
        persistent: match enabled {
            Some("Once") => Some(false),
            Some("Continuous") => Some(true),
            _ => None,
        },
        mode: match b["BootSourceOverrideMode"].as_str() {
            Some("UEFI") => Some(BootMode::Uefi),
            Some("Legacy") => Some(BootMode::Legacy),
            _ => None,
        },
    }
}

fn reset_preferences(action: PowerAction) -> &'static [&'static str] {
    match action {
        PowerAction::On => &["On", "ForceOn"],
        PowerAction::ForceOff => &["ForceOff"],
        PowerAction::SoftOff => &["GracefulShutdown"],
        PowerAction::Cycle => &["PowerCycle", "ForceRestart"],
        PowerAction::Reset => &["ForceRestart", "GracefulRestart"],
    }
}

fn target_name(d: BootDevice) -> &'static str {
    match d {
        BootDevice::Pxe => "Pxe",
        BootDevice::Disk => "Hdd",
        BootDevice::Cdrom => "Cd",
        BootDevice::BiosSetup => "BiosSetup",
        BootDevice::UefiHttp => "UefiHttp",
    }
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    })
}

impl BmcDriver for RedfishClient {
    async fn power_state(&self) -> Result<PowerState> {
        self.with_system(async move |c: &Self, auth: &Auth, sys: &str| {
            let r = c.checked(auth, Method::GET, sys, None, None).await?;
            parse_power_state(&c.name, sys, &r.body)
        })
        .await
    }

    async fn power(&self, action: PowerAction) -> Result<()> {
        self.with_system(async move |c: &Self, auth: &Auth, sys: &str| {
            let r = c.checked(auth, Method::GET, sys, None, None).await?;
            let act = &r.body["Actions"]["#ComputerSystem.Reset"];
            let target = act["target"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{sys}/Actions/ComputerSystem.Reset"));
            let mut allowed = strings(&act["ResetType@Redfish.AllowableValues"]);
            if allowed.is_none()
                && let Some(info) = act["@Redfish.ActionInfo"].as_str()
                && let Ok(i) = c.checked(auth, Method::GET, info, None, None).await
            {
                allowed = i.body["Parameters"]
                    .as_array()
                    .and_then(|ps| ps.iter().find(|p| p["Name"] == "ResetType"))
                    .and_then(|p| strings(&p["AllowableValues"]));
            }
            let prefs = reset_preferences(action);
            let choice = match &allowed {
                Some(list) => prefs
                    .iter()
                    .find(|p| list.iter().any(|a| a == *p))
                    .copied()
                    .ok_or_else(|| BmcError::Unsupported {
                        bmc: c.name.clone(),
                        what: format!(
                            "{action:?}: it allows ResetType {}, none of {}",
                            list.join(", "),
                            prefs.join(", ")
                        ),
                    })?,
                None => prefs[0],
            };
            tracing::debug!(bmc = %c.name, reset_type = choice, "ComputerSystem.Reset");
            let r = c
                .checked(
                    auth,
                    Method::POST,
                    &target,
                    Some(&json!({"ResetType": choice})),
                    None,
                )
                .await?;
            if r.status == StatusCode::ACCEPTED {
                c.follow_task(auth, &r, &format!("ComputerSystem.Reset ({choice})"))
                    .await?;
            }
            Ok(())
        })
        .await
    }

    async fn set_boot(&self, boot: BootOverride) -> Result<()> {
        self.with_system(async move |c: &Self, auth: &Auth, sys: &str| {
            for attempt in 0..2 {
                let r = c.checked(auth, Method::GET, sys, None, None).await?;
                let b = &r.body["Boot"];
                let target = target_name(boot.device);
                let allowed = strings(&b["BootSourceOverrideTarget@Redfish.AllowableValues"])
                    .unwrap_or_else(|| {
                        tracing::info!(bmc = %c.name, system = sys, "the system lists no BootSourceOverrideTarget@Redfish.AllowableValues; assuming the Redfish schema's targets");
                        SCHEMA_BOOT_TARGETS.iter().map(|t| t.to_string()).collect()
                    });
                if !allowed.iter().any(|a| a == target) {
                    return Err(BmcError::Unsupported {
                        bmc: c.name.clone(),
                        what: format!("boot target {target} (it allows {})", allowed.join(", ")),
                    });
                }
                let mut patch = json!({
                    "BootSourceOverrideTarget": target,
                    "BootSourceOverrideEnabled": if boot.persistent { "Continuous" } else { "Once" },
                });
                // Only send the mode to systems that have the property: older ones reject unknown properties.
                if b.get("BootSourceOverrideMode").is_some() {
                    patch["BootSourceOverrideMode"] = json!(match boot.mode {
                        BootMode::Uefi => "UEFI",
                        BootMode::Legacy => "Legacy",
                    });
                }
                let etag = r.etag.clone().or_else(|| r.body["@odata.etag"].as_str().map(str::to_string));
                match c.checked(auth, Method::PATCH, sys, Some(&json!({"Boot": patch})), etag.as_deref()).await {
                    // The resource changed between GET and PATCH: read it again once.
                    Err(BmcError::Protocol { detail, .. }) if attempt == 0 && detail.contains("412") => continue,
                    r => return r.map(|_| ()),
                }
            }
            Err(BmcError::Protocol { bmc: c.name.clone(), detail: "the system kept changing (412 Precondition Failed twice)".into() })
        })
        .await
    }

    async fn boot(&self) -> Result<BootOverrideStatus> {
        self.with_system(async move |c: &Self, auth: &Auth, sys: &str| {
            let r = c.checked(auth, Method::GET, sys, None, None).await?;
            Ok(parse_boot(&r.body))
        })
        .await
    }

    async fn inventory(&self) -> Result<OutOfBand> {
        self.with_system(async move |c: &Self, auth: &Auth, sys: &str| {
            let r = c.checked(auth, Method::GET, sys, None, None).await?;
            let mut inv = system_facts(&r.body);
            let mut budget = MAX_FOLLOWED;
            if let Some(link) = r.body.get("EthernetInterfaces").and_then(odata_id)
                && let Some(coll) = c.follow(auth, &mut budget, link).await?
            {
                for m in members(&coll) {
                    if let Some(n) = c.member(auth, &mut budget, m).await? {
                        inv.nics.push(nic(&n));
                    }
                }
            }
            if let Some(link) = r.body.get("Storage").and_then(odata_id)
                && let Some(coll) = c.follow(auth, &mut budget, link).await?
            {
                for m in members(&coll) {
                    let Some(storage) = c.member(auth, &mut budget, m).await? else {
                        continue;
                    };
                    for d in storage["Drives"].as_array().into_iter().flatten() {
                        if let Some(d) = c.member(auth, &mut budget, d).await? {
                            inv.drives.push(drive(&d));
                        }
                    }
                }
            }
            // Older services (and some current ones) describe disks only in SimpleStorage.
            if inv.drives.is_empty()
                && let Some(link) = r.body.get("SimpleStorage").and_then(odata_id)
                && let Some(coll) = c.follow(auth, &mut budget, link).await?
            {
                for m in members(&coll) {
                    if let Some(ss) = c.member(auth, &mut budget, m).await? {
                        inv.drives.extend(simple_storage_devices(&ss));
                    }
                }
            }
            if budget == 0 {
                tracing::debug!(bmc = %c.name, limit = MAX_FOLLOWED, "the inventory followed as many links as it may; the rest is left out");
            }
            inv.normalize();
            Ok(inv)
        })
        .await
    }

    async fn close(&self) {
        let mut st = self.state.lock().await;
        if let Some(Auth::Token {
            session: Some(s),
            token,
        }) = st.auth.take()
        {
            let auth = Auth::Token {
                token,
                session: None,
            };
            if let Err(e) = self.send(Some(&auth), Method::DELETE, &s, None, None).await {
                tracing::debug!(bmc = %self.name, error = %e, "deleting the Redfish session failed");
            }
        }
        st.system = None;
    }

    async fn wait_power(&self, want: PowerState, timeout: Duration) -> Result<()> {
        super::poll_power(self, want, timeout)
            .await
            .map_err(|e| e.with_bmc(&self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ComputerSystem as iDRAC/iLO-like services write it (DMTF mockup shape).
    #[test]
    fn system_facts_are_read_with_memory_in_bytes() {
        let sys = json!({
            "Manufacturer": "Contoso", "Model": "3500RX", "SerialNumber": "437XR1138R2", "SKU": "8675309",
            "BiosVersion": "P79 v1.33 (02/28/2015)",
            "ProcessorSummary": {"Count": 2, "Model": "Multi-Core Intel(R) Xeon(R) processor 7xxx Series"},
            "MemorySummary": {"TotalSystemMemoryGiB": 96.5},
        });
        let inv = system_facts(&sys);
        assert_eq!(inv.source, "redfish");
        assert_eq!(inv.manufacturer.as_deref(), Some("Contoso"));
        assert_eq!(inv.model.as_deref(), Some("3500RX"));
        assert_eq!(inv.serial.as_deref(), Some("437XR1138R2"));
        assert_eq!(inv.sku.as_deref(), Some("8675309"));
        assert_eq!(inv.bios_version.as_deref(), Some("P79 v1.33 (02/28/2015)"));
        assert_eq!(
            inv.processors,
            Some(Processors {
                count: Some(2),
                model: Some("Multi-Core Intel(R) Xeon(R) processor 7xxx Series".into())
            })
        );
        assert_eq!(inv.memory_bytes, Some(96 * (1 << 30) + (1 << 29)));
    }

    #[test]
    fn absent_null_and_implausible_values_are_left_out() {
        let inv = system_facts(&json!({
            "Manufacturer": null, "Model": 7, "ProcessorSummary": {"Count": -1, "Status": {}},
            "MemorySummary": {"TotalSystemMemoryGiB": -4},
        }));
        assert_eq!(inv, OutOfBand::new(SOURCE_REDFISH));
        assert!(inv.is_empty());
        let inv = system_facts(&json!({"MemorySummary": {"TotalSystemMemoryGiB": 1e300}}));
        assert_eq!(inv.memory_bytes, None);
    }

    #[test]
    fn nics_and_drives() {
        let n = nic(
            &json!({"@odata.id": "/redfish/v1/Systems/1/EthernetInterfaces/12446A3B0411",
            "MACAddress": "", "PermanentMACAddress": "12:44:6A:3B:04:11", "SpeedMbps": 1000.0}),
        );
        assert_eq!(
            n,
            OutOfBandNic {
                id: "12446A3B0411".into(),
                mac: Some("12:44:6A:3B:04:11".into()),
                speed_mbps: Some(1000)
            }
        );
        let d = drive(
            &json!({"Id": "3D58ECBC375FD9F2", "Name": "Drive Sample", "CapacityBytes": 899527000000u64,
            "SerialNumber": "72D0A037FRD26", "Model": "3000GT8", "MediaType": "SSD", "Protocol": "SAS"}),
        );
        assert_eq!(d.name, "Drive Sample");
        assert_eq!(d.size_bytes, Some(899_527_000_000));
        assert_eq!(
            (
                d.serial.as_deref(),
                d.model.as_deref(),
                d.media_type.as_deref(),
                d.protocol.as_deref()
            ),
            (
                Some("72D0A037FRD26"),
                Some("3000GT8"),
                Some("SSD"),
                Some("SAS")
            )
        );
        let ss = simple_storage_devices(&json!({"Devices": [
            {"Name": "SATA Bay 1", "Manufacturer": "Contoso", "Model": "3000GT8", "CapacityBytes": 8000000000000u64,
             "Status": {"State": "Enabled"}},
            {"Name": "SATA Bay 2", "Status": {"State": "Absent"}},
            {"Name": "SATA Bay 3", "CapacityBytes": null}
        ]}));
        assert_eq!(ss.len(), 2);
        assert_eq!(ss[0].size_bytes, Some(8_000_000_000_000));
        assert_eq!(ss[0].model.as_deref(), Some("3000GT8"));
        assert_eq!(
            (ss[1].name.as_str(), ss[1].size_bytes),
            ("SATA Bay 3", None)
        );
    }
}
