//! The manager image as a user gets it: `images/build-binaries.sh` builds static `beowulf` and `csctl` for
//! linux/amd64 and linux/arm64 (Debian's cross toolchain), `beowulf release --binaries … --push` assembles the
//! image and pushes it to a distribution registry on loopback; then
//! - the registry holds an image index with both platforms (read back by `skopeo inspect --raw`), and the
//!   components file runs exactly that digest;
//! - a second release from the same binaries gives the same index digest;
//! - the amd64 image runs under podman (from the OCI layout, no pull from anywhere): `beowulf --version` and
//!   `csctl --version` print the release version;
//! - the arm64 image's `beowulf`, taken out of its layer, runs under `qemu-aarch64-static` and says its
//!   version;
//! - README's install path: `release --push`, `clusterctl init` with that repository; the installed
//!   Deployment names the pushed digest, and that image, pulled by digest, runs `beowulf manager` with
//!   in-cluster configuration only against the real API server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use std::net::Ipv4Addr;
use std::time::Duration;

use beowulf::api::BeowulfHost;
use beowulf::api::host::HostStateName;
use e2e::kube::control_plane::{Logged, free_port};
use e2e::kube::mgmt::{MANAGER_SERVICE_ACCOUNT, MANAGER_USER};
use e2e::kube::peers::tail;
use e2e::kube::{BeowulfBin, MgmtCluster, eventually};
use e2e::registry::Registry;
use e2e::{Scratch, ipmi_sim, require_root_and_peers, run};
use kube::Api;
use serde_json::{Value, json};

const VERSION: &str = "v0.1.0";

/// The static binaries of both platforms, built by the script users run, in a target directory of their
/// own (the suite's is locked by the running `cargo test`), without optimization
/// (`CARGO_PROFILE_RELEASE_OPT_LEVEL=0`): what this test proves (the cross toolchain, static glibc, the
/// image, its digest, that it runs and installs) does not depend on the optimizer, and the two builds take
/// about 7 minutes instead of 22 on CI's two cores.
/// Built once per test process: the tests that need them wait for the first.
fn binaries() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image-binaries");
            run(Command::new("bash")
                .arg(e2e::repo_root().join("images/build-binaries.sh"))
                .arg(&out)
                .env(
                    "CARGO_TARGET_DIR",
                    Path::new(env!("CARGO_TARGET_TMPDIR")).join("image-build"),
                )
                .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0"));
            out
        })
        .clone()
}

fn release(out: &Path, binaries: &Path, repository: &str, push: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_e2e-beowulf"));
    cmd.args(["release", "--version", VERSION, "--out"])
        .arg(out)
        .arg("--binaries")
        .arg(binaries)
        .args([
            "--revision",
            "0123456789abcdef",
            "--image-repository",
            repository,
        ]);
    if push {
        cmd.arg("--push");
    }
    let output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    stderr
}

/// The `image:` of the manager Deployment in a release's components file.
fn components_image(out: &Path) -> String {
    let text = std::fs::read_to_string(
        out.join("infrastructure-beowulf")
            .join(VERSION)
            .join("infrastructure-components.yaml"),
    )
    .unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("image: "))
        .expect("the Deployment names an image");
    line.trim()
        .trim_start_matches("image: ")
        .trim_matches('\'')
        .to_string()
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// `podman run --rm` with its storage under `scratch`. runc, not podman's default crun: crun refuses hybrid
/// cgroups (v1 controllers beside a v2 hierarchy), as these machines have. Limits below the machine's hard
/// limits: podman's defaults are above them, and raising a hard limit is refused.
fn podman_run(scratch: &Path) -> Command {
    let mut cmd = Command::new("podman");
    cmd.arg("--root")
        .arg(scratch.join("podman/root"))
        .arg("--runroot")
        .arg(scratch.join("podman/run"))
        .args(["--runtime", "runc", "run", "--rm"])
        .args(["--ulimit=nofile=1024:1024", "--ulimit=nproc=1024:1024"]);
    cmd
}

/// The release's OCI layout as podman takes it: podman names the image after the layout's path, which must
/// be lowercase (a scratch directory's is not), so through a link; removed on drop.
struct Layout {
    link: PathBuf,
    reference: String,
}

impl Layout {
    fn link(out: &Path) -> Layout {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let link = std::env::temp_dir().join(format!(
            "beowulf-image-layout-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(out.join("image"), &link).unwrap();
        let reference = format!("oci:{}:{VERSION}", link.display());
        Layout { link, reference }
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.link);
    }
}

#[test]
fn release_pushes_a_reproducible_two_platform_image_that_runs() {
    require_root_and_peers();
    let dir = Scratch::new("image");
    let binaries = binaries();
    let registry = Registry::start(&dir.path().join("registry")).unwrap();

    let out = dir.path().join("out");
    let repository = format!("{}/beowulf-hpc/beowulf", registry.addr);
    let said = release(&out, &binaries, &repository, true);
    assert!(said.contains("linux/arm64: "), "{said}");

    // The registry holds the index, with both platforms.
    let pushed = format!("docker://{repository}:{VERSION}");
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &pushed])
        .output()
        .unwrap();
    assert!(raw.status.success(), "{raw:?}");
    let index: Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    assert_eq!(
        index["annotations"]["org.opencontainers.image.revision"],
        "0123456789abcdef"
    );
    let digest = sha256(&raw.stdout);

    // The components file runs exactly what was pushed.
    assert_eq!(
        components_image(&out),
        format!(
            "${{BEOWULF_IMAGE:={}/beowulf-hpc/beowulf:{VERSION}@{digest}}}",
            registry.addr
        )
    );

    // Same binaries, same image.
    let again = dir.path().join("again");
    release(&again, &binaries, &repository, false);
    assert_eq!(components_image(&again), components_image(&out));

    // The amd64 image runs, from the OCI layout the release wrote.
    let image = Layout::link(&out);
    let version = |entrypoint: &str| {
        run(podman_run(dir.path())
            .args([
                "--network=none",
                "--platform=linux/amd64",
                "--entrypoint",
                entrypoint,
            ])
            .arg(&image.reference)
            .arg("--version"))
    };
    assert_eq!(version("/beowulf").trim(), "beowulf 0.1.0");
    assert_eq!(version("/csctl").trim(), "csctl 0.1.0");

    // The arm64 image's beowulf, out of its layer, under qemu-user.
    let arm64 = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "arm64")
        .unwrap();
    let blob = |d: &Value| {
        let hex = d.as_str().unwrap().trim_start_matches("sha256:");
        std::fs::read(out.join("image/blobs/sha256").join(hex)).unwrap()
    };
    let manifest: Value = serde_json::from_slice(&blob(&arm64["digest"])).unwrap();
    let config: Value = serde_json::from_slice(&blob(&manifest["config"]["digest"])).unwrap();
    assert_eq!(config["architecture"], "arm64");
    assert_eq!(config["config"]["User"], "65532:65532");
    let layer = blob(&manifest["layers"][0]["digest"]);
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(layer.as_slice()));
    let mut program = Vec::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some("beowulf") {
            entry.read_to_end(&mut program).unwrap();
        }
    }
    let path = dir.path().join("beowulf-arm64");
    std::fs::write(&path, program).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let said = run(Command::new("qemu-aarch64-static")
        .arg(&path)
        .arg("--version"));
    assert_eq!(said.trim(), "beowulf 0.1.0");
}

/// The manager from the image the installed Deployment names, as its Pod runs it: in-cluster configuration only (the ServiceAccount's token,
/// CA and namespace at `/var/run/secrets/kubernetes.io/serviceaccount`, `KUBERNETES_SERVICE_HOST`/`PORT`), the
/// image's nonroot user, against the management-cluster harness's real API server: it takes its Lease and
/// registers a BeowulfHost through its BMC, and the API server forbids it nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_runs_from_the_image_with_in_cluster_configuration() {
    require_root_and_peers();
    let dir = Scratch::new("image-incluster");
    // README's install steps: `beowulf release --binaries … --push`, then `clusterctl init` with that
    // repository (the harness runs it), and what the installed Deployment names is what runs below.
    let binaries = tokio::task::spawn_blocking(binaries).await.unwrap();
    let registry = Registry::start(&dir.path().join("registry")).unwrap();
    let repository = format!("{}/beowulf-hpc/beowulf", registry.addr);
    let release_args: Vec<std::ffi::OsString> = vec![
        "--binaries".into(),
        binaries.into(),
        "--image-repository".into(),
        repository.clone().into(),
        "--push".into(),
    ];
    let mc = MgmtCluster::start_with_release(
        "incluster",
        &BeowulfBin(env!("CARGO_BIN_EXE_e2e-beowulf").into()),
        dir.path(),
        &release_args,
    )
    .await
    .unwrap();
    let deployed = run(mc.kubectl().args([
        "get",
        "deployment",
        "beowulf-controller-manager",
        "-n",
        "beowulf-system",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]));
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{repository}:{VERSION}"))
        .output()
        .unwrap();
    assert!(raw.status.success(), "{raw:?}");
    let digest = sha256(&raw.stdout);
    assert_eq!(deployed, format!("{repository}:{VERSION}@{digest}"));
    // Pulled from the registry by that digest (containers/image takes a tag or a digest, not both).
    let image = format!("docker://{repository}@{digest}");

    let ns = "rack";
    run(mc.kubectl().args(["create", "namespace", ns]));
    let bmc = ipmi_sim::IpmiSim::start_at(std::net::SocketAddr::from((
        mc.api_ip,
        ipmi_sim::free_udp_port(mc.api_ip),
    )));
    let client = mc.client().await.unwrap();
    e2e::kube::fixtures::create_all(
        &client,
        &[
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bmc-creds", "namespace": ns},
                   "stringData": {"username": ipmi_sim::USER, "password": ipmi_sim::PASSWORD}}),
            json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "BeowulfHost",
                   "metadata": {"name": "node-1", "namespace": ns},
                   "spec": {"bootMACAddress": "52:54:00:00:00:02",
                            "bmc": {"address": bmc.endpoint(), "cipherSuite": 3,
                                    "credentialsSecretRef": {"name": "bmc-creds"}}}}),
        ],
    )
    .await
    .unwrap();

    let (sa_ns, sa) = MANAGER_SERVICE_ACCOUNT;
    let mount = dir.path().join("serviceaccount");
    mc.control_plane
        .service_account_mount(sa_ns, sa, &mount)
        .await
        .unwrap();
    let api_port = mc.control_plane.url.rsplit(':').next().unwrap().to_string();
    let health = free_port(Ipv4Addr::LOCALHOST).unwrap();
    let name = format!("beowulf-incluster-{}", std::process::id());
    let mut cmd = podman_run(dir.path());
    cmd.args(["--name", &name, "--network=host"])
        .arg(format!(
            "--volume={}:/var/run/secrets/kubernetes.io/serviceaccount:ro",
            mount.display()
        ))
        .arg(format!("--env=KUBERNETES_SERVICE_HOST={}", mc.api_ip))
        .arg(format!("--env=KUBERNETES_SERVICE_PORT={api_port}"))
        .args([
            "--env=POD_NAME=mgr-image",
            &format!("--env=POD_NAMESPACE={sa_ns}"),
        ])
        .arg("--tls-verify=false")
        .arg(&image)
        .args(["manager", "--leader-elect", "--no-boot-plane"])
        .arg(format!("--health-bind-address=127.0.0.1:{health}"))
        .arg(format!(
            "--diagnostics-address=127.0.0.1:{}",
            free_port(Ipv4Addr::LOCALHOST).unwrap()
        ));
    let manager = Logged::spawn(
        "beowulf manager (image)",
        &mut cmd,
        &dir.path().join("manager.log"),
    )
    .unwrap();
    let stop = Stop(dir.path().to_path_buf(), name);

    let hosts: Api<BeowulfHost> = Api::namespaced(client.clone(), ns);
    eventually("node-1 to be registered", Duration::from_secs(120), || {
        let hosts = hosts.clone();
        async move {
            let h = hosts.get("node-1").await.map_err(|e| e.to_string())?;
            let st = h.status.clone().unwrap_or_default();
            (st.state == HostStateName::Available && st.power_state.as_deref() == Some("off"))
                .then_some(())
                .ok_or(format!("{:?}", h.status))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nmanager log:\n{}", tail(&manager.log, 40)));
    let holder = run(mc.kubectl().args([
        "get",
        "lease",
        "beowulf-manager",
        "-n",
        sa_ns,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]));
    assert_eq!(holder, "mgr-image");
    let forbidden = mc.control_plane.forbidden(MANAGER_USER);
    assert!(forbidden.is_empty(), "{}", forbidden.join("\n"));
    assert!(mc.control_plane.requests_by(MANAGER_USER) > 5);
    // It ran as the image's user (65532), not as root.
    let user = run(Command::new("podman")
        .arg("--root")
        .arg(dir.path().join("podman/root"))
        .arg("--runroot")
        .arg(dir.path().join("podman/run"))
        .args(["inspect", "--format", "{{.Config.User}}", &stop.1]));
    assert_eq!(user.trim(), "65532:65532");
    drop(stop);
    drop(manager);
}

/// Removes the container (and so stops the manager) on drop.
struct Stop(PathBuf, String);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .arg("--root")
            .arg(self.0.join("podman/root"))
            .arg("--runroot")
            .arg(self.0.join("podman/run"))
            .args(["rm", "--force", "--time", "2", &self.1])
            .output();
    }
}
