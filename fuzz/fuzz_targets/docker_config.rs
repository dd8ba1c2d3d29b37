//! A docker `config.json` as csctl reads it for registry credentials (`auths` with `auth`, `username` /
//! `password` or `identitytoken`; `credHelpers`; `credsStore`): any bytes, then, from the same bytes, a
//! user and password stored in a config the way `docker login` stores them. No credential helper is run:
//! `read_docker_config` is the lookup without its I/O.
//! Invariants beyond "no panic": errors are typed (a config that is not JSON is `ConfigParse`, a bad inline
//! entry `BadAuthField`); the helpers named are the config's; a credential that is found is one an `auths`
//! entry stores (its `auth` decodes to `user:password`, or it has that `username` and `password`, or that
//! identity token); and a stored user and password are found again exactly as stored.
#![no_main]

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use csctl::oci::credentials::{Credential, CredentialError, read_docker_config};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

const REGISTRIES: [&str; 3] = ["reg.example:5000", "docker.io", "ghcr.io"];

fn stored_in(config: &Value, found: &Credential) -> bool {
    let Some(auths) = config["auths"].as_object() else {
        return false;
    };
    auths.values().any(|e| match found {
        Credential::Basic { username, password } => {
            let auth = e["auth"]
                .as_str()
                .and_then(|a| B64.decode(a.trim()).ok())
                .is_some_and(|d| d == format!("{username}:{password}").as_bytes());
            auth || (e["username"] == username.as_str() && e["password"] == password.as_str())
        }
        Credential::IdentityToken(t) => !t.is_empty() && e["identitytoken"] == t.as_str(),
        _ => false,
    })
}

fn lookup(text: &[u8], registry: &str) -> Option<Credential> {
    let path = Path::new("/home/u/.docker/config.json");
    let parsed: Option<Value> = serde_json::from_slice(text).ok();
    let answer = match read_docker_config(text, path, registry) {
        Ok(a) => a,
        Err(CredentialError::ConfigParse { path: p, .. }) => {
            assert_eq!(p, path);
            return None;
        }
        Err(e) => panic!("a config error of the wrong kind: {e:?}"),
    };
    // serde skips unknown fields without reading them fully (bad UTF-8 or a huge number in one is
    // accepted); what cannot be read as a whole `Value` is not cross-checked.
    let config = parsed?;
    assert_eq!(
        answer.cred_helper.as_deref(),
        config["credHelpers"][registry].as_str()
    );
    assert_eq!(answer.creds_store.as_deref(), config["credsStore"].as_str());
    match answer.inline {
        Ok(Some(found)) => {
            assert!(
                found.source.ends_with(&format!(" in {}", path.display())),
                "{}",
                found.source
            );
            assert!(
                stored_in(&config, &found.credential),
                "{:?} is stored nowhere in {config}",
                found.credential
            );
            Some(found.credential)
        }
        Ok(None) => None,
        Err(CredentialError::BadAuthField { host, .. }) => {
            assert_eq!(host, registry);
            None
        }
        Err(e) => panic!("an auths error of the wrong kind: {e:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    for r in REGISTRIES {
        let _ = lookup(data, r);
    }
    // The same bytes as a user and a password, stored as `docker login` does and as plain fields.
    let text = String::from_utf8_lossy(data);
    let (user, password) = text.split_once('\n').unwrap_or((&text, ""));
    let basic = Credential::Basic {
        username: user.to_string(),
        password: password.to_string(),
    };
    let key = "https://reg.example:5000/v2/";
    if !user.contains(':') {
        let auth = B64.encode(format!("{user}:{password}"));
        let config = json!({"auths": {key: {"auth": auth}, "other.example": {"auth": "Og=="}}});
        let found = lookup(config.to_string().as_bytes(), "reg.example:5000");
        assert_eq!(found.as_ref(), Some(&basic), "auth {auth}");
    }
    let config = json!({"auths": {key: {"username": user, "password": password}}});
    let found = lookup(config.to_string().as_bytes(), "reg.example:5000");
    assert_eq!(found.as_ref(), Some(&basic));
    assert_eq!(lookup(config.to_string().as_bytes(), "reg.example"), None);
});
