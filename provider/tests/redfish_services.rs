//! The Redfish driver against services that read the standard differently from sushy-emulator (which the
//! e2e tests use, and which cannot express these): a session answered 201 or 204, a `Location` that is
//! absolute and names the BMC by an address we cannot reach, a system without `AllowableValues`, and a
//! reset the BMC runs as a task (202 and a task monitor). The responses are recorded shapes of real
//! services (a mock, because no such service runs here), served on loopback by a small axum app.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use beowulf::bmc::redfish::RedfishClient;
use beowulf::bmc::{
    BmcDriver, BmcError, BootDevice, BootMode, BootOverride, Credentials, Endpoint, Limits,
    Options, PowerAction,
};
use serde_json::{Value, json};

const TOKEN: &str = "c2Vzc2lvbi10b2tlbi0xMjM0";
/// Where the service says its resources are: an address the client cannot reach.
const FOREIGN: &str = "https://10.255.255.1:8443";

#[derive(Clone, Copy)]
struct Shape {
    session_status: u16,
    absolute_locations: bool,
    /// How the reset task ends: `None` for a plain 204 reset.
    task_end: Option<&'static str>,
}

#[derive(Default)]
struct Seen {
    /// `METHOD path token?` per request.
    requests: Vec<String>,
    monitor_polls: usize,
    patches: Vec<Value>,
}

struct Service {
    shape: Shape,
    seen: Mutex<Seen>,
}

fn location(shape: Shape, path: &str) -> String {
    if shape.absolute_locations {
        format!("{FOREIGN}{path}")
    } else {
        path.to_string()
    }
}

fn json_reply(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn handle(
    State(svc): State<Arc<Service>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shape = svc.shape;
    let path = uri.path().to_string();
    let authed = headers.get("x-auth-token").and_then(|v| v.to_str().ok()) == Some(TOKEN);
    let mut seen = svc.seen.lock().unwrap();
    seen.requests.push(format!(
        "{method} {path}{}",
        if authed { " token" } else { "" }
    ));
    let sys = "/redfish/v1/Systems/1";
    match (method.as_str(), path.as_str()) {
        ("GET", "/redfish/v1/") => json_reply(
            StatusCode::OK,
            json!({
                "@odata.id": "/redfish/v1/",
                "Systems": {"@odata.id": "/redfish/v1/Systems"},
                "SessionService": {"@odata.id": "/redfish/v1/SessionService"},
                "Links": {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}}
            }),
        ),
        ("POST", "/redfish/v1/SessionService/Sessions") => {
            let creds: Value = serde_json::from_slice(&body).unwrap_or_default();
            if creds["UserName"] != "root" || creds["Password"] != "calvin" {
                return json_reply(
                    StatusCode::UNAUTHORIZED,
                    json!({"error": {"message": "bad"}}),
                );
            }
            let loc = location(shape, "/redfish/v1/SessionService/Sessions/7");
            let status = StatusCode::from_u16(shape.session_status).unwrap();
            let mut r = if status == StatusCode::NO_CONTENT {
                status.into_response()
            } else {
                json_reply(
                    status,
                    json!({"@odata.id": "/redfish/v1/SessionService/Sessions/7", "Id": "7", "UserName": "root"}),
                )
            };
            r.headers_mut()
                .insert("X-Auth-Token", TOKEN.parse().unwrap());
            r.headers_mut().insert("Location", loc.parse().unwrap());
            r
        }
        _ if !authed => StatusCode::UNAUTHORIZED.into_response(),
        ("GET", "/redfish/v1/Systems") => json_reply(
            StatusCode::OK,
            json!({"Members": [{"@odata.id": sys}], "Members@odata.count": 1}),
        ),
        ("GET", p) if p == sys => json_reply(
            StatusCode::OK,
            // No AllowableValues anywhere: neither for ResetType nor for the boot target.
            json!({
                "@odata.id": sys,
                "PowerState": "Off",
                "Boot": {
                    "BootSourceOverrideEnabled": "Disabled",
                    "BootSourceOverrideTarget": "None",
                    "BootSourceOverrideMode": "UEFI"
                },
                "Actions": {"#ComputerSystem.Reset": {"target": format!("{sys}/Actions/ComputerSystem.Reset")}}
            }),
        ),
        ("PATCH", p) if p == sys => {
            seen.patches
                .push(serde_json::from_slice(&body).unwrap_or_default());
            StatusCode::NO_CONTENT.into_response()
        }
        ("POST", "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset") => match shape.task_end {
            None => StatusCode::NO_CONTENT.into_response(),
            Some(_) => {
                let mut r = json_reply(
                    StatusCode::ACCEPTED,
                    json!({"@odata.id": "/redfish/v1/TaskService/Tasks/JID_1", "TaskState": "New"}),
                );
                r.headers_mut().insert(
                    "Location",
                    location(shape, "/redfish/v1/TaskService/TaskMonitors/JID_1")
                        .parse()
                        .unwrap(),
                );
                r.headers_mut().insert("Retry-After", "0".parse().unwrap());
                r
            }
        },
        ("GET", "/redfish/v1/TaskService/TaskMonitors/JID_1") => {
            seen.monitor_polls += 1;
            if seen.monitor_polls < 3 {
                return json_reply(
                    StatusCode::ACCEPTED,
                    json!({"@odata.id": "/redfish/v1/TaskService/Tasks/JID_1", "TaskState": "Running", "PercentComplete": 40}),
                );
            }
            let end = shape.task_end.unwrap_or("Completed");
            json_reply(
                StatusCode::OK,
                json!({
                    "@odata.id": "/redfish/v1/TaskService/Tasks/JID_1",
                    "TaskState": end,
                    "TaskStatus": if end == "Completed" { "OK" } else { "Critical" },
                    "Messages": [{"MessageId": "IDRAC.2.8.SYS446", "Message": "Unable to perform the power operation because the server is in maintenance mode."}]
                }),
            )
        }
        ("DELETE", "/redfish/v1/SessionService/Sessions/7") => {
            StatusCode::NO_CONTENT.into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn serve(shape: Shape) -> (String, Arc<Service>) {
    let svc = Arc::new(Service {
        shape,
        seen: Mutex::new(Seen::default()),
    });
    let app = axum::Router::new().fallback(handle).with_state(svc.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("redfish+http://{addr}"), svc)
}

fn client(endpoint: &str) -> RedfishClient {
    RedfishClient::new(
        Endpoint::parse(endpoint).unwrap(),
        Credentials::new("root", "calvin"),
        Options::default(),
        Limits::default(),
    )
    .unwrap()
}

fn pxe() -> BootOverride {
    BootOverride {
        device: BootDevice::Pxe,
        persistent: false,
        mode: BootMode::Uefi,
    }
}

#[tokio::test]
async fn sessions_answered_201_or_204_with_relative_or_absolute_locations_are_used_and_deleted() {
    for (status, absolute) in [(201, false), (201, true), (204, false), (204, true)] {
        let (endpoint, svc) = serve(Shape {
            session_status: status,
            absolute_locations: absolute,
            task_end: None,
        })
        .await;
        let bmc = client(&endpoint);
        bmc.power(PowerAction::On).await.unwrap();
        bmc.close().await;
        let seen = svc.seen.lock().unwrap();
        let case = format!("{status} absolute={absolute}: {:?}", seen.requests);
        assert!(
            seen.requests
                .contains(&"POST /redfish/v1/Systems/1/Actions/ComputerSystem.Reset token".into()),
            "{case}"
        );
        // The session is deleted at the path the Location named, on the address we reach the BMC at.
        assert_eq!(
            seen.requests.last().unwrap(),
            "DELETE /redfish/v1/SessionService/Sessions/7 token",
            "{case}"
        );
    }
}

#[tokio::test]
async fn a_system_without_allowable_boot_targets_gets_the_override_from_the_schemas_values() {
    let (endpoint, svc) = serve(Shape {
        session_status: 201,
        absolute_locations: false,
        task_end: None,
    })
    .await;
    let bmc = client(&endpoint);
    bmc.set_boot(pxe()).await.unwrap();
    bmc.set_boot(BootOverride {
        device: BootDevice::UefiHttp,
        persistent: true,
        mode: BootMode::Uefi,
    })
    .await
    .unwrap();
    let seen = svc.seen.lock().unwrap();
    assert_eq!(
        seen.patches,
        vec![
            json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once", "BootSourceOverrideMode": "UEFI"}}),
            json!({"Boot": {"BootSourceOverrideTarget": "UefiHttp", "BootSourceOverrideEnabled": "Continuous", "BootSourceOverrideMode": "UEFI"}}),
        ]
    );
}

#[tokio::test]
async fn a_reset_run_as_a_task_is_followed_to_its_end() {
    let (endpoint, svc) = serve(Shape {
        session_status: 201,
        absolute_locations: true,
        task_end: Some("Completed"),
    })
    .await;
    let bmc = client(&endpoint);
    bmc.power(PowerAction::On).await.unwrap();
    // power() returned only after the monitor said the task was done (two 202s, then the Task).
    assert_eq!(svc.seen.lock().unwrap().monitor_polls, 3);
}

#[tokio::test]
async fn a_reset_task_that_fails_is_an_error_with_the_bmcs_message() {
    let (endpoint, svc) = serve(Shape {
        session_status: 201,
        absolute_locations: false,
        task_end: Some("Exception"),
    })
    .await;
    let bmc = client(&endpoint);
    let err = bmc.power(PowerAction::On).await.unwrap_err();
    assert!(matches!(err, BmcError::Protocol { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("ended Exception") && msg.contains("maintenance mode"),
        "{msg}"
    );
    assert_eq!(svc.seen.lock().unwrap().monitor_polls, 3);
}
