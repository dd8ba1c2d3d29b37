//! `beowulf manager`'s diagnostics endpoint (`/metrics`), served as Cluster API's managers serve theirs since
//! v1.8: over HTTPS, and only to a caller the API server vouches for — its bearer token authenticated with a
//! TokenReview, the user it names authorized with a SubjectAccessReview for `get` on the non-resource URL
//! `/metrics`. A Prometheus scrapes with its ServiceAccount's token and a binding to the ClusterRole
//! `beowulf-metrics-reader` of the components file. The certificate is `tls.crt`/`tls.key` from
//! `--diagnostics-cert-dir`, else a self-signed one made at start (as controller-runtime does; scrapers then
//! skip verification or pin it). `--insecure-diagnostics`: plain HTTP and no checks.
//!
//! The same endpoint serves hosts' captured serial consoles, `/consoles/<namespace>/<host>`, to callers whose
//! user may `get` the subresource `beowulfhosts/console` of that host (a SubjectAccessReview with resource
//! attributes; the components file's ClusterRole `beowulf-console-reader` grants it).
//!
//! Decisions are cached per token and resource for [`DECISION_TTL`], so a scrape every few seconds costs the
//! API server two requests a minute, not two per scrape.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use prometheus_client::registry::Registry;
use sha2::Digest as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// How long an authentication/authorization decision is reused for the same token.
pub const DECISION_TTL: Duration = Duration::from_secs(60);
const METRICS_PATH: &str = "/metrics";
/// `/consoles/<namespace>/<host>`.
const CONSOLES_PREFIX: &str = "/consoles/";
/// Console lines a request gets.
const CONSOLE_LINES: usize = 500;

/// What a request asks for, as the API server authorizes it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resource {
    /// `get` on the non-resource URL `/metrics`.
    Metrics,
    /// `get` on `beowulfhosts/console` of one host.
    Console { namespace: String, name: String },
}

impl Resource {
    fn from_path(path: &str) -> Option<Resource> {
        if path == METRICS_PATH {
            return Some(Resource::Metrics);
        }
        let (namespace, name) = path.strip_prefix(CONSOLES_PREFIX)?.split_once('/')?;
        // Kubernetes names: DNS labels and subdomains (alphanumeric at both ends); nothing else names a host.
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let ok = |s: &str| {
            let b = s.as_bytes();
            !b.is_empty()
                && b.len() <= 253
                && alnum(b[0])
                && alnum(b[b.len() - 1])
                && b.iter().all(|&c| alnum(c) || c == b'-' || c == b'.')
        };
        (ok(namespace) && ok(name)).then(|| Resource::Console {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    /// What the cache keys the decision by, besides the token.
    fn key(&self) -> String {
        match self {
            Resource::Metrics => METRICS_PATH.to_string(),
            Resource::Console { namespace, name } => format!("console {namespace}/{name}"),
        }
    }

    fn describe(&self) -> String {
        match self {
            Resource::Metrics => {
                format!("get {METRICS_PATH} (bind it to the ClusterRole beowulf-metrics-reader)")
            }
            Resource::Console { namespace, name } => format!(
                "get beowulfhosts/console of {namespace}/{name} (bind it to the ClusterRole beowulf-console-reader)"
            ),
        }
    }
}
/// A request head larger than this is refused (a bearer token is a few KiB at most).
const MAX_HEAD: usize = 16 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the API server said about a request's token.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Allowed,
    /// 401: no token, or one the API server does not accept.
    Unauthenticated,
    /// 403: a valid token whose user may not get what it asked for.
    Forbidden(String),
}

/// TokenReview + SubjectAccessReview with a small cache.
struct Access {
    client: kube::Client,
    cache: Mutex<HashMap<[u8; 32], (Instant, Decision)>>,
}

impl Access {
    async fn decide(&self, token: Option<&str>, what: &Resource) -> Decision {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Decision::Unauthenticated;
        };
        // Keyed by the token's hash (the cache never holds a token) and what it asked for.
        let mut h = sha2::Sha256::new();
        h.update(token.as_bytes());
        h.update([0]);
        h.update(what.key().as_bytes());
        let key: [u8; 32] = h.finalize().into();
        if let Some((at, d)) = self.lock().get(&key)
            && at.elapsed() < DECISION_TTL
        {
            return d.clone();
        }
        let decision = match self.review(token, what).await {
            Ok(d) => d,
            Err(e) => {
                // Not cached: the next scrape asks again.
                tracing::warn!(error = %format!("{e:#}"), "diagnostics: the API server could not review a token");
                return Decision::Unauthenticated;
            }
        };
        let mut cache = self.lock();
        if cache.len() > 1000 {
            cache.clear();
        }
        cache.insert(key, (Instant::now(), decision.clone()));
        decision
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Instant, Decision)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn review(&self, token: &str, what: &Resource) -> anyhow::Result<Decision> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..Default::default()
        };
        let status = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .context("TokenReview")?
            .status
            .unwrap_or_default();
        let user = match (status.authenticated, status.user) {
            (Some(true), Some(user)) => user,
            _ => return Ok(Decision::Unauthenticated),
        };
        let name = user.username.clone().unwrap_or_default();
        let sar = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: match what {
                    Resource::Metrics => Some(NonResourceAttributes {
                        path: Some(METRICS_PATH.to_string()),
                        verb: Some("get".to_string()),
                    }),
                    Resource::Console { .. } => None,
                },
                resource_attributes: match what {
                    Resource::Metrics => None,
                    Resource::Console { namespace, name } => Some(ResourceAttributes {
                        group: Some("infrastructure.cluster.x-k8s.io".to_string()),
                        resource: Some("beowulfhosts".to_string()),
                        subresource: Some("console".to_string()),
                        verb: Some("get".to_string()),
                        namespace: Some(namespace.clone()),
                        name: Some(name.clone()),
                        ..Default::default()
                    }),
                },
            },
            ..Default::default()
        };
        let allowed = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &sar)
            .await
            .context("SubjectAccessReview")?
            .status
            .is_some_and(|s| s.allowed);
        Ok(if allowed {
            Decision::Allowed
        } else {
            Decision::Forbidden(name)
        })
    }
}

/// How the endpoint is served, resolved from the flags.
pub struct Diagnostics {
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    access: Option<Arc<Access>>,
    consoles: Option<Arc<crate::runtime::consoles::Consoles>>,
}

impl Diagnostics {
    /// Plain HTTP, no checks (`--insecure-diagnostics`).
    pub fn insecure(addr: SocketAddr) -> Self {
        Diagnostics {
            addr,
            tls: None,
            access: None,
            consoles: None,
        }
    }

    /// Also serves the hosts' captured consoles, `/consoles/<namespace>/<host>`.
    pub fn with_consoles(mut self, consoles: Arc<crate::runtime::consoles::Consoles>) -> Self {
        self.consoles = Some(consoles);
        self
    }

    /// HTTPS with the certificate in `cert_dir` (else self-signed), callers checked through `client`.
    pub fn secure(
        addr: SocketAddr,
        cert_dir: Option<&Path>,
        client: kube::Client,
    ) -> anyhow::Result<Self> {
        let (chain, key) = match cert_dir {
            Some(dir) => load_pair(dir)?,
            None => self_signed()?,
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .context("the diagnostics certificate and key do not match")?;
        Ok(Diagnostics {
            addr,
            tls: Some(TlsAcceptor::from(Arc::new(config))),
            access: Some(Arc::new(Access {
                client,
                cache: Mutex::new(HashMap::new()),
            })),
            consoles: None,
        })
    }

    /// Serves `/metrics` from `registry` until the task is dropped.
    pub async fn serve(self, registry: Arc<Registry>) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .with_context(|| format!("binding the diagnostics address {}", self.addr))?;
        tracing::info!(address = %self.addr, https = self.tls.is_some(), "serving diagnostics");
        loop {
            let (sock, peer) = listener.accept().await?;
            let (tls, access, registry) = (self.tls.clone(), self.access.clone(), registry.clone());
            let consoles = self.consoles.clone();
            tokio::spawn(async move {
                let serving = Serving {
                    access: access.as_deref(),
                    registry: &registry,
                    consoles: consoles.as_deref(),
                };
                let r = match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(READ_TIMEOUT, acceptor.accept(sock)).await {
                            Ok(Ok(stream)) => answer(stream, &serving).await,
                            Ok(Err(e)) => Err(e),
                            Err(_) => Ok(()),
                        }
                    }
                    None => answer(sock, &serving).await,
                };
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "diagnostics connection");
                }
            });
        }
    }
}

/// What a connection is served from.
struct Serving<'a> {
    access: Option<&'a Access>,
    registry: &'a Registry,
    consoles: Option<&'a crate::runtime::consoles::Consoles>,
}

/// One request, one response, then the connection closes.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    serving: &Serving<'_>,
) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "request head too large\n",
            )
            .await;
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => return Ok(()),
    };
    let request = Request::parse(&head);
    let Some(what) = Resource::from_path(&request.path) else {
        return respond(&mut stream, "404 Not Found", "not found\n").await;
    };
    if let Some(access) = serving.access {
        match access.decide(request.bearer.as_deref(), &what).await {
            Decision::Allowed => {}
            Decision::Unauthenticated => {
                return respond(
                    &mut stream,
                    "401 Unauthorized",
                    "a bearer token the API server accepts is required\n",
                )
                .await;
            }
            Decision::Forbidden(user) => {
                tracing::debug!(user, "diagnostics: forbidden");
                return respond(
                    &mut stream,
                    "403 Forbidden",
                    &format!("{user} may not {}\n", what.describe()),
                )
                .await;
            }
        }
    }
    match what {
        Resource::Metrics => {
            let mut body = String::new();
            if let Err(e) = prometheus_client::encoding::text::encode(&mut body, serving.registry) {
                body = format!("# encoding failed: {e}\n");
            }
            respond(&mut stream, "200 OK", &body).await
        }
        Resource::Console { namespace, name } => {
            let Some(consoles) = serving.consoles else {
                return respond(
                    &mut stream,
                    "404 Not Found",
                    "console capture is off (beowulf manager --consoles off)\n",
                )
                .await;
            };
            let mut body = String::new();
            for line in consoles.log_tail(&format!("{namespace}/{name}"), CONSOLE_LINES) {
                body.push_str(&line);
                body.push('\n');
            }
            respond(&mut stream, "200 OK", &body).await
        }
    }
}

async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: &str,
    body: &str,
) -> std::io::Result<()> {
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await
}

/// Reads up to the end of the request head; `None` when it exceeds [`MAX_HEAD`].
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await?;
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        if n == 0 || buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
        }
    }
}

/// The parts of a request head the endpoint looks at.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    path: String,
    bearer: Option<String>,
}

impl Request {
    fn parse(head: &str) -> Request {
        let mut lines = head.split("\r\n");
        let path = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .map(|p| p.split('?').next().unwrap_or(p).to_string())
            .unwrap_or_default();
        let bearer = lines
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
            .and_then(|(_, value)| {
                let value = value.trim();
                let (scheme, token) = value.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim().to_string())
            });
        Request { path, bearer }
    }
}

type Pair = (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
);

fn load_pair(dir: &Path) -> anyhow::Result<Pair> {
    use rustls::pki_types::pem::PemObject as _;
    let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(&crt)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the certificate chain {}", crt.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", crt.display());
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&key)
        .with_context(|| format!("reading the private key {}", key.display()))?;
    Ok((chain, key))
}

/// A certificate for `localhost` and the host's name, made now, valid for rcgen's default period.
fn self_signed() -> anyhow::Result<Pair> {
    let mut names = vec!["localhost".to_string()];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname")
        && !host.trim().is_empty()
    {
        names.push(host.trim().to_string());
    }
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(names).context("making a self-signed certificate")?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(signing_key.serialize_der().into());
    Ok((vec![cert.der().clone()], key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_what_is_authorized() {
        assert_eq!(Resource::from_path("/metrics"), Some(Resource::Metrics));
        assert_eq!(
            Resource::from_path("/consoles/rack-1/node-0"),
            Some(Resource::Console {
                namespace: "rack-1".into(),
                name: "node-0".into()
            })
        );
        for bad in [
            "/",
            "/consoles/",
            "/consoles/ns",
            "/consoles/ns/",
            "/consoles/ns/a/b",
            "/consoles/../x",
            "/consoles/NS/x",
            "/consoles/ns/x%2f",
            "/metricsx",
        ] {
            assert_eq!(Resource::from_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_bearer_token_and_the_path_come_from_the_head() {
        let r = Request::parse(
            "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nauthorization:  Bearer abc.def \r\n\r\n",
        );
        assert_eq!(
            r,
            Request {
                path: "/metrics".into(),
                bearer: Some("abc.def".into())
            }
        );
        let r = Request::parse("GET / HTTP/1.1\r\nAuthorization: Basic eDp5\r\n\r\n");
        assert_eq!(r.bearer, None);
        assert_eq!(Request::parse("").path, "");
    }

    #[tokio::test]
    async fn an_oversized_head_is_refused_and_a_short_one_read_whole() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD + 10));
        let mut r = big.as_bytes();
        assert_eq!(read_head(&mut r).await.unwrap(), None);
        let mut r = &b"GET /metrics HTTP/1.1\r\n\r\n"[..];
        assert!(
            read_head(&mut r)
                .await
                .unwrap()
                .unwrap()
                .starts_with("GET /metrics")
        );
    }

    #[test]
    fn a_self_signed_pair_serves_tls() {
        let (chain, key) = self_signed().unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
    }
}
