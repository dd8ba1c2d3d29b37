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

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::{
    BmcDriver, BmcError, BootDevice, BootMode, BootOverride, BootOverrideStatus, Credentials,
    Endpoint, Limits, Options, PowerAction, PowerState, Protocol, Result,
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
fn path_of(location: &str) -> String {
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
fn error_message(body: &Value) -> String {
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
            match r.body["PowerState"].as_str() {
                Some("On") | Some("PoweringOff") => Ok(PowerState::On),
                Some("Off") | Some("PoweringOn") => Ok(PowerState::Off),
                other => Err(BmcError::Protocol {
                    bmc: c.name.clone(),
                    detail: format!("system {sys} has PowerState {other:?}"),
                }),
            }
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
            let b = &r.body["Boot"];
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
            Ok(BootOverrideStatus {
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
            })
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
