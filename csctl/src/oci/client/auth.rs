//! Authentication: the `/v2/` ping, the registry's Basic or Bearer challenge, Bearer tokens per scope
//! (including the refresh-token grant for docker identity tokens), the `Authorization` header of each
//! request, and mapping 401/403 answers to credential errors.
use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::header::{CONTENT_TYPE, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::{RegistryClient, error_detail};
use crate::oci::credentials::Credential;
use crate::oci::error::OciError;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Default)]
pub(super) struct AuthState {
    challenge: Option<Challenge>,
    /// Bearer tokens by scope string.
    tokens: HashMap<String, String>,
}

/// `scope` strings for the token service: space-separated `repository:NAME:ACTIONS`.
pub(super) fn scope_pull(repo: &str) -> String {
    format!("repository:{repo}:pull")
}
pub(super) fn scope_push(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

impl RegistryClient {
    /// `GET /v2/`: checks that the registry answers and learns how it wants to be authenticated. With
    /// `scope`, also obtains a token (or checks Basic credentials) so bad credentials fail early.
    pub async fn ping(&self, scope: Option<&str>) -> Result<(), OciError> {
        let url = self.url("/v2/");
        let resp = self.send(Method::GET, &url, None, |rb| rb, true).await?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            StatusCode::UNAUTHORIZED => Err(self.auth_error(resp, None).await),
            s => Err(self.protocol_error("GET", &url, s, resp).await),
        }?;
        let challenge = self
            .auth
            .lock()
            .map(|a| a.challenge.clone())
            .unwrap_or(None);
        if let (Some(Challenge::Bearer { .. }), Some(scope)) = (challenge, scope) {
            self.token_for(scope).await?;
        }
        Ok(())
    }

    pub(super) fn authorization(&self, scope: Option<&str>) -> Option<String> {
        let auth = self.auth.lock().ok()?;
        match (&auth.challenge, &self.credential.credential) {
            (_, Credential::Bearer(token)) if auth.challenge.is_some() => {
                Some(format!("Bearer {token}"))
            }
            (Some(Challenge::Basic), Credential::Basic { username, password }) => Some(format!(
                "Basic {}",
                B64.encode(format!("{username}:{password}"))
            )),
            (Some(Challenge::Bearer { .. }), _) => {
                let scope = scope.unwrap_or("");
                auth.tokens.get(scope).map(|t| format!("Bearer {t}"))
            }
            _ => None,
        }
    }

    /// Takes in the challenge of a 401: remembers it and gets a token if one is needed. True: send the
    /// request again; false: the 401 is the answer.
    pub(super) async fn answer_challenge(
        &self,
        headers: &HeaderMap,
        scope: Option<&str>,
    ) -> Result<bool, OciError> {
        let Some(challenge) = parse_challenge(headers) else {
            return Ok(false);
        };
        let changed = {
            let mut auth = self
                .auth
                .lock()
                .map_err(|_| OciError::Tls("auth state poisoned".into()))?;
            let changed = auth.challenge.as_ref() != Some(&challenge);
            auth.challenge = Some(challenge.clone());
            changed
        };
        match (&challenge, &self.credential.credential) {
            (_, Credential::Anonymous) if matches!(challenge, Challenge::Basic) => Ok(false),
            (Challenge::Bearer { .. }, cred) if !matches!(cred, Credential::Bearer(_)) => {
                let wanted = scope
                    .map(str::to_string)
                    .or_else(|| challenge_scope(headers));
                if let Some(s) = wanted {
                    self.token_for(&s).await?;
                    Ok(true)
                } else {
                    Ok(changed)
                }
            }
            _ => Ok(changed),
        }
    }

    /// Gets (and caches) a Bearer token for `scope` from the realm of the last challenge.
    async fn token_for(&self, scope: &str) -> Result<(), OciError> {
        let (realm, service) = {
            let auth = self
                .auth
                .lock()
                .map_err(|_| OciError::Tls("auth state poisoned".into()))?;
            if auth.tokens.contains_key(scope) {
                return Ok(());
            }
            match &auth.challenge {
                Some(Challenge::Bearer { realm, service }) => (realm.clone(), service.clone()),
                _ => return Ok(()),
            }
        };
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(s) = &service {
            query.push(("service", s.clone()));
        }
        for s in scope.split(' ').filter(|s| !s.is_empty()) {
            query.push(("scope", s.to_string()));
        }
        // reqwest's query/form helpers are feature-gated; url's encoder does the same job.
        let encode = |pairs: &[(&str, String)]| {
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in pairs {
                ser.append_pair(k, v);
            }
            ser.finish()
        };
        let sep = if realm.contains('?') { '&' } else { '?' };
        let get_url = format!("{realm}{sep}{}", encode(&query));
        let resp = match &self.credential.credential {
            Credential::IdentityToken(refresh) => {
                let mut form = query.clone();
                form.push(("grant_type", "refresh_token".into()));
                form.push(("refresh_token", refresh.clone()));
                form.push(("client_id", "csctl".into()));
                self.http
                    .post(&realm)
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(encode(&form))
                    .send()
                    .await
            }
            Credential::Basic { username, password } => {
                self.http
                    .get(&get_url)
                    .basic_auth(username, Some(password))
                    .send()
                    .await
            }
            _ => self.http.get(&get_url).send().await,
        }
        .map_err(|e| self.unreachable(&realm, &e))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let detail = error_detail(resp).await;
            return Err(match self.credential.credential {
                Credential::Anonymous => OciError::NoCredentials {
                    registry: self.registry.clone(),
                },
                _ => OciError::Unauthorized {
                    registry: self.registry.clone(),
                    source_desc: self.credential.source.clone(),
                    detail: format!("token service {realm}: {detail}"),
                },
            });
        }
        if !status.is_success() {
            return Err(self.protocol_error("GET", &realm, status, resp).await);
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body: TokenResponse = resp.json().await.map_err(|e| OciError::Protocol {
            registry: self.registry.clone(),
            method: "GET".into(),
            url: realm.clone(),
            status: status.as_u16(),
            detail: format!("token response is not JSON: {e}"),
        })?;
        let token = body.token.or(body.access_token).unwrap_or_default();
        if let Ok(mut auth) = self.auth.lock() {
            auth.tokens.insert(scope.to_string(), token);
        }
        Ok(())
    }

    pub(super) async fn auth_error(
        &self,
        resp: reqwest::Response,
        repository: Option<&str>,
    ) -> OciError {
        let detail = error_detail(resp).await;
        match (&self.credential.credential, repository) {
            (Credential::Anonymous, _) => OciError::NoCredentials {
                registry: self.registry.clone(),
            },
            (_, Some(repo)) if detail.contains("DENIED") => OciError::Denied {
                registry: self.registry.clone(),
                repository: repo.to_string(),
                source_desc: self.credential.source.clone(),
                detail,
            },
            _ => OciError::Unauthorized {
                registry: self.registry.clone(),
                source_desc: self.credential.source.clone(),
                detail,
            },
        }
    }
}

fn parse_params(s: &str) -> HashMap<String, String> {
    // key="value" pairs; values may contain commas inside quotes.
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        rest = &rest[eq + 1..];
        let value;
        if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').unwrap_or(r.len());
            value = r[..end].to_string();
            rest = r.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        rest = rest.trim_start().trim_start_matches(',').trim_start();
        out.insert(key, value);
    }
    out
}

fn parse_challenge(headers: &HeaderMap) -> Option<Challenge> {
    let v = headers.get(WWW_AUTHENTICATE)?.to_str().ok()?;
    let (scheme, params) = v.split_once(' ').unwrap_or((v, ""));
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => {
            let p = parse_params(params);
            Some(Challenge::Bearer {
                realm: p.get("realm")?.clone(),
                service: p.get("service").cloned(),
            })
        }
        _ => None,
    }
}

fn challenge_scope(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(WWW_AUTHENTICATE)?.to_str().ok()?;
    parse_params(v.split_once(' ')?.1).get("scope").cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn parses_challenges() {
        let mut h = HeaderMap::new();
        h.insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
            ),
        );
        assert_eq!(
            parse_challenge(&h),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into())
            })
        );
        assert_eq!(
            challenge_scope(&h).as_deref(),
            Some("repository:a/b:pull,push")
        );
        h.insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Basic realm="basic-realm""#),
        );
        assert_eq!(parse_challenge(&h), Some(Challenge::Basic));
    }
}
