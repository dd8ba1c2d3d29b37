//! Registry credentials, looked up in this order: command-line flags, `OCI_USERNAME`/`OCI_PASSWORD`,
//! `OCI_ACCESS_TOKEN`, docker `config.json` (`credHelpers`, `credsStore`, `auths`), anonymous.
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

/// A credential. `Debug` never prints secrets.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Anonymous,
    /// Username and password: sent as Basic auth, or traded for a Bearer token.
    Basic {
        username: String,
        password: String,
    },
    /// A ready-made Bearer token, sent as is (upstream's `OCI_ACCESS_TOKEN`, after base64).
    Bearer(String),
    /// A docker identity (refresh) token, traded for a Bearer token with the OAuth2 refresh-token grant.
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Anonymous => f.write_str("Anonymous"),
            Credential::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credential::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// A credential and where it came from (for error messages; never the secret itself).
#[derive(Clone, Debug)]
pub struct ResolvedCredential {
    pub credential: Credential,
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read docker config {path}: {source}")]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("docker config {path} is not valid JSON: {source}")]
    ConfigParse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("docker config {path}: the `auth` entry for {host} is not base64 of `user:password`")]
    BadAuthField { path: PathBuf, host: String },
    #[error("credential helper docker-credential-{helper} failed for {host}: {detail}")]
    Helper {
        helper: String,
        host: String,
        detail: String,
    },
    #[error("{0}")]
    Incomplete(String),
}

/// Inputs to the lookup; a struct so tests can supply their own environment and config path.
#[derive(Clone, Debug, Default)]
pub struct CredentialInputs {
    pub flag_username: Option<String>,
    pub flag_password: Option<String>,
    pub oci_registry: Option<String>,
    pub oci_username: Option<String>,
    pub oci_password: Option<String>,
    pub oci_access_token: Option<String>,
    /// The docker config file; `None` means "no config".
    pub docker_config: Option<PathBuf>,
}

impl CredentialInputs {
    /// Reads `OCI_*` and `DOCKER_CONFIG`/`~/.docker/config.json` from the process environment.
    pub fn from_env(flag_username: Option<String>, flag_password: Option<String>) -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let docker_config = var("DOCKER_CONFIG")
            .map(|d| PathBuf::from(d).join("config.json"))
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")));
        CredentialInputs {
            flag_username,
            flag_password,
            oci_registry: var("OCI_REGISTRY"),
            oci_username: var("OCI_USERNAME"),
            oci_password: var("OCI_PASSWORD"),
            oci_access_token: var("OCI_ACCESS_TOKEN"),
            docker_config,
        }
    }

    /// The credential for `registry` (`host[:port]`).
    pub fn resolve(&self, registry: &str) -> Result<ResolvedCredential, CredentialError> {
        match (&self.flag_username, &self.flag_password) {
            (Some(u), Some(p)) => {
                return Ok(ResolvedCredential {
                    credential: Credential::Basic {
                        username: u.clone(),
                        password: p.clone(),
                    },
                    source: "--username/--password-stdin".into(),
                });
            }
            (Some(_), None) => {
                return Err(CredentialError::Incomplete(
                    "--username needs a password: pipe it into --password-stdin".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(CredentialError::Incomplete(
                    "--password-stdin needs --username".into(),
                ));
            }
            (None, None) => {}
        }
        // Upstream uses OCI_REGISTRY only as the host the OCI_* credentials belong to.
        let env_applies = self
            .oci_registry
            .as_deref()
            .is_none_or(|r| same_host(r, registry));
        if env_applies {
            if let (Some(u), Some(p)) = (&self.oci_username, &self.oci_password) {
                return Ok(ResolvedCredential {
                    credential: Credential::Basic {
                        username: u.clone(),
                        password: p.clone(),
                    },
                    source: "OCI_USERNAME/OCI_PASSWORD".into(),
                });
            }
            if let Some(token) = &self.oci_access_token {
                // Upstream quirk kept on purpose: csctl and CSO base64-encode the token and send it as a
                // Bearer token (what GHCR expects for a personal access token).
                return Ok(ResolvedCredential {
                    credential: Credential::Bearer(B64.encode(token.as_bytes())),
                    source: "OCI_ACCESS_TOKEN".into(),
                });
            }
        }
        if let Some(path) = &self.docker_config
            && let Some(found) = docker_config_lookup(path, registry)?
        {
            return Ok(found);
        }
        Ok(ResolvedCredential {
            credential: Credential::Anonymous,
            source: "anonymous".into(),
        })
    }
}

fn same_host(configured: &str, registry: &str) -> bool {
    let c = configured
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    c == registry
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// Docker's precedence: a per-registry `credHelpers` entry, then `credsStore`, then inline `auths`.
fn docker_config_lookup(
    path: &PathBuf,
    registry: &str,
) -> Result<Option<ResolvedCredential>, CredentialError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CredentialError::ConfigRead {
                path: path.clone(),
                source,
            });
        }
    };
    let found = read_docker_config(&text, path, registry)?;
    let source = |what: &str| format!("{what} in {}", path.display());
    if let Some(helper) = &found.cred_helper {
        return Ok(
            run_helper(helper, registry)?.map(|credential| ResolvedCredential {
                credential,
                source: source(&format!("credHelpers[{registry}]")),
            }),
        );
    }
    if let Some(helper) = &found.creds_store
        && let Some(credential) = run_helper(helper, registry)?
    {
        return Ok(Some(ResolvedCredential {
            credential,
            source: source("credsStore"),
        }));
    }
    found.inline
}

/// What a docker `config.json` says about one registry, before any credential helper runs.
#[doc(hidden)]
#[derive(Debug)]
pub struct DockerConfigAnswer {
    /// `credHelpers[registry]`: the helper to run; its answer is final.
    pub cred_helper: Option<String>,
    /// `credsStore`: the helper to run when there is no per-registry one; `inline` when it knows nothing.
    pub creds_store: Option<String>,
    /// The registry's inline `auths` entry (an error only matters when no helper answers).
    pub inline: Result<Option<ResolvedCredential>, CredentialError>,
}

/// Reads a docker config's `text` (from `path`, named in errors and sources) for `registry`: no I/O, no
/// helper is run. Public for the fuzz targets.
#[doc(hidden)]
pub fn read_docker_config(
    text: &[u8],
    path: &Path,
    registry: &str,
) -> Result<DockerConfigAnswer, CredentialError> {
    let config: DockerConfig =
        serde_json::from_slice(text).map_err(|source| CredentialError::ConfigParse {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(DockerConfigAnswer {
        cred_helper: config.cred_helpers.get(registry).cloned(),
        creds_store: config.creds_store.clone(),
        inline: inline_auth(&config, path, registry),
    })
}

/// The registry's entry in `auths`: an identity token, `auth` (base64 of `user:password`), or
/// `username` and `password`.
fn inline_auth(
    config: &DockerConfig,
    path: &Path,
    registry: &str,
) -> Result<Option<ResolvedCredential>, CredentialError> {
    let source = |what: &str| format!("{what} in {}", path.display());
    let entry = config
        .auths
        .iter()
        .find(|(key, _)| auth_key_matches(key, registry))
        .map(|(_, e)| e);
    let Some(entry) = entry else { return Ok(None) };
    if let Some(token) = &entry.identitytoken
        && !token.is_empty()
    {
        return Ok(Some(ResolvedCredential {
            credential: Credential::IdentityToken(token.clone()),
            source: source(&format!("auths[{registry}].identitytoken")),
        }));
    }
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let bad = || CredentialError::BadAuthField {
            path: path.to_path_buf(),
            host: registry.to_string(),
        };
        let decoded = B64.decode(auth.trim()).map_err(|_| bad())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        let (u, p) = decoded.split_once(':').ok_or_else(bad)?;
        return Ok(Some(ResolvedCredential {
            credential: Credential::Basic {
                username: u.to_string(),
                password: p.to_string(),
            },
            source: source(&format!("auths[{registry}]")),
        }));
    }
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Ok(Some(ResolvedCredential {
            credential: Credential::Basic {
                username: u.clone(),
                password: p.clone(),
            },
            source: source(&format!("auths[{registry}]")),
        }));
    }
    Ok(None)
}

/// `auths` keys may be `host`, `https://host`, `http://host/v1/`, ...
fn auth_key_matches(key: &str, registry: &str) -> bool {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k.split('/').next().unwrap_or(k);
    k == registry || (registry == "docker.io" && k == "index.docker.io")
}

/// The docker credential-helper protocol: `docker-credential-<name> get`, host on stdin, JSON
/// `{"Username","Secret"}` on stdout; a username of `<token>` means the secret is an identity token.
fn run_helper(helper: &str, registry: &str) -> Result<Option<Credential>, CredentialError> {
    run_helper_program(&format!("docker-credential-{helper}"), registry)
}

fn run_helper_program(
    program: &str,
    registry: &str,
) -> Result<Option<Credential>, CredentialError> {
    let helper = program
        .rsplit('/')
        .next()
        .unwrap_or(program)
        .trim_start_matches("docker-credential-");
    let err = |detail: String| CredentialError::Helper {
        helper: helper.into(),
        host: registry.into(),
        detail,
    };
    let mut child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            err(format!(
                "cannot run it ({e}); install it or remove it from the docker config"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(registry.as_bytes())
            .map_err(|e| err(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // The protocol's "not found" answer is not an error: fall through to the next source.
        if msg.contains("credentials not found") {
            return Ok(None);
        }
        return Err(err(format!(
            "{} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    #[derive(Deserialize)]
    struct HelperOut {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let parsed: HelperOut =
        serde_json::from_slice(&out.stdout).map_err(|e| err(format!("bad JSON answer: {e}")))?;
    Ok(Some(if parsed.username == "<token>" {
        Credential::IdentityToken(parsed.secret)
    } else {
        Credential::Basic {
            username: parsed.username,
            password: parsed.secret,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(dir: &tempfile::TempDir, config: &str) -> CredentialInputs {
        let path = dir.path().join("config.json");
        std::fs::write(&path, config).unwrap();
        CredentialInputs {
            docker_config: Some(path),
            ..Default::default()
        }
    }

    #[test]
    fn order_is_flags_env_token_config_anonymous() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = format!(
            r#"{{"auths":{{"https://reg.example:5000":{{"auth":"{}"}}}}}}"#,
            B64.encode("cfg:pw")
        );
        let mut i = inputs(&dir, &cfg);
        let basic = |u: &str, p: &str| Credential::Basic {
            username: u.into(),
            password: p.into(),
        };
        assert_eq!(
            i.resolve("reg.example:5000").unwrap().credential,
            basic("cfg", "pw")
        );
        assert_eq!(
            i.resolve("other.example").unwrap().credential,
            Credential::Anonymous
        );
        i.oci_access_token = Some("tok".into());
        assert_eq!(
            i.resolve("reg.example:5000").unwrap().credential,
            Credential::Bearer(B64.encode("tok"))
        );
        i.oci_username = Some("env".into());
        i.oci_password = Some("envpw".into());
        assert_eq!(
            i.resolve("reg.example:5000").unwrap().credential,
            basic("env", "envpw")
        );
        // OCI_REGISTRY scopes the OCI_* credentials to one host.
        i.oci_registry = Some("elsewhere.example".into());
        assert_eq!(
            i.resolve("reg.example:5000").unwrap().credential,
            basic("cfg", "pw")
        );
        i.flag_username = Some("flag".into());
        i.flag_password = Some("flagpw".into());
        let r = i.resolve("reg.example:5000").unwrap();
        assert_eq!(r.credential, basic("flag", "flagpw"));
        assert!(
            !format!("{r:?}").contains("flagpw"),
            "Debug must not print secrets"
        );
    }

    #[test]
    fn helper_protocol_and_identity_tokens() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-fake");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread host\nif [ \"$host\" = reg.example ]; then echo '{\"Username\":\"<token>\",\"Secret\":\"refresh\"}'; \
             elif [ \"$host\" = basic.example ]; then echo '{\"Username\":\"u\",\"Secret\":\"s\"}'; \
             else echo 'credentials not found in native keychain'; exit 1; fi\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let prog = helper.to_str().unwrap();
        assert_eq!(
            run_helper_program(prog, "reg.example").unwrap(),
            Some(Credential::IdentityToken("refresh".into()))
        );
        assert_eq!(
            run_helper_program(prog, "basic.example").unwrap(),
            Some(Credential::Basic {
                username: "u".into(),
                password: "s".into()
            })
        );
        assert_eq!(run_helper_program(prog, "nope.example").unwrap(), None);
        // A configured helper that is not installed is an error that names it.
        let i = inputs(
            &dir,
            r#"{"credsStore":"csctl-test-missing","auths":{"reg.example":{"username":"u","password":"p"}}}"#,
        );
        let err = i.resolve("reg.example").unwrap_err().to_string();
        assert!(
            err.contains("docker-credential-csctl-test-missing"),
            "{err}"
        );
    }
}
