//! csctl publish/pull/list/inspect against real peers: distribution's registry (Debian `docker-registry`),
//! skopeo and oras-py as independent clients. Each test starts its own registry on a free loopback port.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod support;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use support::proxy::{Proxy, Stall};
use support::registry::Registry;
use support::{csctl, make_release, read_dir_files, run, wait_for};

const PREFIX: &str = "beowulf-hpc-1-33";

fn json(out: &support::Output) -> serde_json::Value {
    assert_eq!(
        out.code, 0,
        "csctl failed:\nstdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", out.stdout))
}

fn publish(
    home: &std::path::Path,
    dir: &std::path::Path,
    to: &str,
    extra: &[&str],
) -> support::Output {
    let mut c = csctl(home);
    c.args(["--format", "json", "publish"])
        .arg(dir)
        .args(["--to", to])
        .args(extra);
    run(c, None)
}

fn skopeo_raw(reference: &str) -> Vec<u8> {
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", reference])
        .output()
        .expect("skopeo (run .ci/install)");
    assert!(
        out.status.success(),
        "skopeo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", support::sha256_hex(bytes))
}

#[test]
fn publish_is_read_by_skopeo_and_oras_and_round_trips() {
    let reg = Registry::start();
    let home = tempfile::tempdir().unwrap();
    let release = make_release(home.path(), PREFIX, "v1", "replicas: 1\n", 3 << 20);
    let repo = format!("oci://{}/kaas/cluster-stacks", reg.addr);
    let out = json(&publish(
        home.path(),
        &release,
        &repo,
        &["--chunk-size", "1MiB"],
    ));
    let digest = out["published"][0]["digest"].as_str().unwrap().to_string();

    // skopeo sees an OCI 1.1 artifact with our media types and titles, and the same digest.
    let raw = skopeo_raw(&format!(
        "docker://{}/kaas/cluster-stacks:{PREFIX}-v1",
        reg.addr
    ));
    assert_eq!(
        digest_of(&raw),
        digest,
        "the registry serves exactly the bytes we pushed"
    );
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(m["artifactType"], "application/vnd.scs.cluster-stacks.v1");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(
        m["annotations"],
        serde_json::json!({"hash": "abcdefg", "kubernetesVersion": "v1.33.4"})
    );
    let layers: BTreeMap<String, String> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["annotations"]["org.opencontainers.image.title"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                l["mediaType"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: BTreeMap<String, String> = [
        (
            "beowulf-hpc-1-33-cluster-addon-v1.tgz",
            "application/vnd.scs.cluster-addon.layer.v1.tar+gzip",
        ),
        (
            "beowulf-hpc-1-33-cluster-class-v1.tgz",
            "application/vnd.scs.cluster-class.v1.tar+gzip",
        ),
        (
            "clusteraddon.yaml",
            "application/vnd.scs.cluster-addon.config.layer.v1+yaml",
        ),
        ("hashes.json", "application/vnd.scs.hashes.layer.v1+yaml"),
        (
            "metadata.yaml",
            "application/vnd.scs.metadata.layer.v1+yaml",
        ),
        ("node-image.raw", "application/vnd.oci.image.layer.v1.tar"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(layers, expected);
    let titles: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l["annotations"]["org.opencontainers.image.title"]
                .as_str()
                .unwrap()
        })
        .collect();
    let mut sorted = titles.clone();
    sorted.sort();
    assert_eq!(titles, sorted, "layers are sorted by file name");

    let original = read_dir_files(&release);

    // oras-py, an independent client, pulls the files byte-identical.
    let oras_out = home.path().join("oras-out");
    let script = format!(
        "import oras.client\nc = oras.client.OrasClient(hostname='{a}', insecure=True, tls_verify=False)\n\
         c.pull(target='{a}/kaas/cluster-stacks:{PREFIX}-v1', outdir='{o}')\n",
        a = reg.addr,
        o = oras_out.display()
    );
    let py = support::peers_dir().join("venv/bin/python");
    let st = std::process::Command::new(&py)
        .arg("-c")
        .arg(&script)
        .status()
        .expect("oras-py venv (run .ci/install)");
    assert!(st.success(), "oras-py pull failed");
    assert_eq!(read_dir_files(&oras_out), original);

    // csctl pull round-trips byte-identical.
    let pulled = home.path().join("pulled");
    let mut c = csctl(home.path());
    c.args(["pull", &format!("{repo}:{PREFIX}-v1"), "-o"])
        .arg(&pulled);
    let out = run(c, None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(read_dir_files(&pulled), original);

    // inspect shows versions, layers, sizes and digests.
    let mut c = csctl(home.path());
    c.args([
        "--format",
        "json",
        "inspect",
        &format!("{repo}:{PREFIX}-v1"),
    ]);
    let info = json(&run(c, None));
    assert_eq!(info["digest"], digest);
    assert_eq!(info["versions"]["clusterStack"], "v1");
    assert_eq!(info["versions"]["kubernetes"], "v1.33.4");
    let big = info["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["title"] == "node-image.raw")
        .unwrap();
    assert_eq!(big["size"], 3 << 20);
    assert_eq!(big["digest"], digest_of(&original["node-image.raw"]));

    // The same release in the local OCI layout has the same manifest digest, and skopeo reads it there too.
    let layout = home.path().join("layout-explicit");
    let out = json(&publish(
        home.path(),
        &release,
        &format!("oci:{}", layout.display()),
        &[],
    ));
    assert_eq!(out["published"][0]["digest"], digest);
    let raw_layout = skopeo_raw(&format!("oci:{}:{PREFIX}-v1", layout.display()));
    assert_eq!(raw_layout, raw);
}

#[test]
fn default_target_is_the_local_layout() {
    let home = tempfile::tempdir().unwrap();
    let release = make_release(home.path(), PREFIX, "v1", "a: 1\n", 0);
    let mut c = csctl(home.path());
    c.args(["--format", "json", "publish"]).arg(&release);
    let out = json(&run(c, None));
    let layout = home.path().join("layout"); // CSCTL_OCI_LAYOUT in the test environment
    let raw = skopeo_raw(&format!("oci:{}:{PREFIX}-v1", layout.display()));
    assert_eq!(
        digest_of(&raw),
        out["published"][0]["digest"].as_str().unwrap()
    );
    // list and pull work on the layout as well.
    let mut c = csctl(home.path());
    c.args(["list"]);
    let listed = run(c, None);
    assert_eq!(listed.stdout.trim(), format!("{PREFIX}-v1"));
    let mut c = csctl(home.path());
    c.args([
        "pull",
        &format!("oci:{}:{PREFIX}-v1", layout.display()),
        "-o",
        "back",
    ]);
    assert_eq!(run(c, None).code, 0);
    assert_eq!(
        read_dir_files(&home.path().join("back")),
        read_dir_files(&release)
    );
}

#[test]
fn republish_uploads_nothing_and_keeps_the_digest() {
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let home = tempfile::tempdir().unwrap();
    let release = make_release(home.path(), PREFIX, "v1", "replicas: 1\n", 2 << 20);
    let repo = format!("oci://{}/kaas/cs", proxy.addr);
    let first = json(&publish(home.path(), &release, &repo, &[]));
    let mark = proxy.mark();
    let second_out = publish(home.path(), &release, &repo, &[]);
    let second = json(&second_out);
    assert_eq!(
        first["published"][0]["digest"],
        second["published"][0]["digest"]
    );
    assert_eq!(second["published"][0]["status"], "unchanged");
    let requests = proxy.records_since(mark);
    let writes: Vec<_> = requests
        .iter()
        .filter(|r| r.method != "GET" && r.method != "HEAD")
        .collect();
    assert!(
        writes.is_empty(),
        "a republish must not write anything: {writes:?}"
    );
    assert!(
        requests.iter().all(|r| r.body_len == 0),
        "no request body may be sent: {requests:?}"
    );
    // The 2 MiB blob was not even read again: its digest came from the cache (inode, size, mtime, ctime).
    assert!(
        second["published"][0]["hashedBytes"].as_u64().unwrap() < 1 << 20,
        "{second}"
    );
    // Same size, new bytes: the cache must notice (ctime changed) and the changed digest is a tag conflict.
    let big = release.join("node-image.raw");
    let mut data = std::fs::read(&big).unwrap();
    data[12345] ^= 1;
    std::fs::write(&big, &data).unwrap();
    let changed = publish(home.path(), &release, &repo, &[]);
    assert_ne!(
        changed.code, 0,
        "a changed file must not be mistaken for the cached one"
    );
    assert!(
        changed.stderr.contains("already points to"),
        "{}",
        changed.stderr
    );
    data[12345] ^= 1;
    std::fs::write(&big, &data).unwrap();
    // Human output says so, exit 0.
    let mut c = csctl(home.path());
    c.arg("publish").arg(&release).args(["--to", &repo]);
    let out = run(c, None);
    assert_eq!(out.code, 0);
    assert!(
        out.stdout.contains("already published") && out.stdout.contains("nothing to do"),
        "{}",
        out.stdout
    );

    // A second repository on the same registry gets the blobs by cross-repository mount, not upload.
    let mark = proxy.mark();
    let other = json(&publish(
        home.path(),
        &release,
        &format!("oci://{}/kaas/other", proxy.addr),
        &[],
    ));
    assert_eq!(
        other["published"][0]["digest"],
        first["published"][0]["digest"]
    );
    let requests = proxy.records_since(mark);
    let mounts = requests
        .iter()
        .filter(|r| r.method == "POST" && r.path.contains("mount=") && r.status == 201)
        .count();
    assert!(
        mounts >= 5,
        "expected the layers to be mounted: {requests:?}"
    );
    let uploaded: u64 = requests
        .iter()
        .filter(|r| r.method == "PATCH" || r.method == "PUT" && r.path.contains("/blobs/"))
        .map(|r| r.body_len)
        .sum();
    assert!(
        uploaded < 100,
        "mounted blobs must not be uploaded again ({uploaded} bytes sent): {requests:?}"
    );
}

/// The requests of an interrupted run and of its rerun.
struct Runs {
    first: Vec<support::proxy::Record>,
    rerun: Vec<support::proxy::Record>,
}

/// Runs `csctl publish` through the proxy with `stall`, kills it once the proxy holds the request, then
/// runs it again without a stall. Returns the JSON of the second run and the requests of both runs.
fn interrupt_and_rerun(
    reg: &Registry,
    home: &std::path::Path,
    release: &std::path::Path,
    stall: Stall,
    repository: &str,
) -> (serde_json::Value, Runs) {
    let proxy = Proxy::start(&reg.addr);
    proxy.set_stall(stall);
    let repo = format!("oci://{}/{repository}", proxy.addr);
    let mut c = csctl(home);
    c.args(["--format", "json", "publish"]).arg(release).args([
        "--to",
        &repo,
        "--chunk-size",
        "1MiB",
    ]);
    let log = home.join("interrupted.log");
    c.stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = c.spawn().unwrap();
    wait_for(
        "the push to reach the interruption point",
        Duration::from_secs(60),
        || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "csctl ended ({status}) before the interruption: {}\nrequests: {:#?}",
                    std::fs::read_to_string(&log).unwrap_or_default(),
                    proxy.records_since(0)
                );
            }
            proxy.stalled().then_some(())
        },
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // Nothing is tagged yet.
    let tags = skopeo_tags(&reg.addr, repository, None);
    assert!(
        tags.is_empty(),
        "an interrupted push must not tag anything: {tags:?}"
    );
    proxy.set_stall(Stall::None);
    let mark = proxy.mark();
    let out = json(&publish(home, release, &repo, &["--chunk-size", "1MiB"]));
    let all = proxy.records_since(0);
    let (rerun, first) = all.into_iter().partition(|r| r.epoch >= mark);
    (out, Runs { first, rerun })
}

/// The repository's tags as a real client (skopeo) lists them; empty if it cannot list them.
fn skopeo_tags(addr: &str, repo: &str, creds: Option<&str>) -> Vec<String> {
    let mut cmd = std::process::Command::new("skopeo");
    cmd.args(["list-tags", "--tls-verify=false"]);
    if let Some(creds) = creds {
        cmd.args(["--creds", creds]);
    }
    let out = cmd.arg(format!("docker://{addr}/{repo}")).output().unwrap();
    if !out.status.success() {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["Tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn interrupted_push_resumes_and_equals_an_uninterrupted_push() {
    let reg = Registry::start();
    let home = tempfile::tempdir().unwrap();
    let release = make_release(home.path(), PREFIX, "v1", "replicas: 1\n", 6 << 20);
    let big = std::fs::read(release.join("node-image.raw")).unwrap();

    // Reference: an uninterrupted push of the same release.
    let clean = json(&publish(
        home.path(),
        &release,
        &format!("oci://{}/kaas/clean", reg.addr),
        &["--chunk-size", "1MiB"],
    ));
    let clean_digest = clean["published"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();

    // Killed between chunks (the 4th 1 MiB PATCH is held): the rerun resumes the registry's session at 3 MiB.
    let state_home = tempfile::tempdir().unwrap();
    let (out, runs) = interrupt_and_rerun(
        &reg,
        state_home.path(),
        &release,
        Stall::BeforePatch(4),
        "kaas/resume",
    );
    assert_eq!(out["published"][0]["digest"], clean_digest.as_str());
    assert_eq!(out["published"][0]["resumedBlobs"], 1, "{out}");
    let requests = &runs.rerun;
    let first_patch = requests
        .iter()
        .find(|r| r.method == "PATCH")
        .expect("the rerun sends the rest");
    assert_eq!(
        first_patch.content_range.as_deref(),
        Some("3145728-4194303"),
        "resumed at 3 MiB: {requests:?}"
    );
    let sent: u64 = requests.iter().map(|r| r.body_len).sum();
    assert!(
        sent < big.len() as u64,
        "the rerun must not resend the whole blob ({sent} bytes)"
    );
    // Small layers finished in the first run are not sent again (which ones finished before the kill depends
    // on scheduling: the uploads run concurrently).
    let digest_of = |r: &support::proxy::Record| {
        r.path
            .split_once("digest=")
            .map(|(_, d)| d.split('&').next().unwrap_or(d).to_string())
    };
    let finished: Vec<String> = runs
        .first
        .iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/blobs/uploads/") && r.status == 201)
        .filter_map(digest_of)
        .collect();
    let resent: Vec<String> = runs
        .rerun
        .iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/blobs/uploads/") && r.body_len > 0)
        .filter_map(digest_of)
        .filter(|d| finished.contains(d))
        .collect();
    assert!(
        resent.is_empty(),
        "sent again: {resent:?}\n{:?}",
        runs.rerun
    );

    // Killed in the middle of a chunk: distribution drops such a session; the rerun starts that blob over
    // and still produces the same artifact.
    let state_home = tempfile::tempdir().unwrap();
    let (out, _) = interrupt_and_rerun(
        &reg,
        state_home.path(),
        &release,
        Stall::MidBody((2 << 20) + 12345),
        "kaas/restart",
    );
    assert_eq!(out["published"][0]["digest"], clean_digest.as_str());

    // Byte-identical content after the interrupted pushes.
    let pulled = home.path().join("pulled");
    let mut c = csctl(home.path());
    c.args([
        "pull",
        &format!("oci://{}/kaas/resume:{PREFIX}-v1", reg.addr),
        "-o",
    ])
    .arg(&pulled);
    assert_eq!(run(c, None).code, 0);
    assert_eq!(read_dir_files(&pulled), read_dir_files(&release));
    let mut c = csctl(home.path());
    c.args([
        "pull",
        &format!("oci://{}/kaas/restart:{PREFIX}-v1", reg.addr),
        "-o",
        "pulled2",
    ]);
    assert_eq!(run(c, None).code, 0);
    assert_eq!(
        read_dir_files(&home.path().join("pulled2")),
        read_dir_files(&release)
    );
}

/// On a terminal, a big blob gets a progress bar (its title, a bar, bytes of total) for push and pull; piped
/// output gets none. The terminal is a real pseudo-terminal from util-linux `script`.
#[test]
fn big_blobs_show_a_progress_bar_on_a_terminal_only() {
    let reg = Registry::start();
    let home = tempfile::tempdir().unwrap();
    let release = make_release(home.path(), PREFIX, "v1", "a: 1\n", 12 << 20);
    let repo = format!("oci://{}/kaas/progress", reg.addr);
    let on_tty = |args: &str| {
        let mut c = std::process::Command::new("script");
        c.args(["-qefc", args, "/dev/null"])
            .env("HOME", home.path())
            .env("XDG_STATE_HOME", home.path().join("state"))
            .env("COLUMNS", "160")
            .env_remove("OCI_REPOSITORY")
            .env_remove("DOCKER_CONFIG");
        let out = c.output().expect("util-linux script");
        assert!(out.status.success(), "{args}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let bin = env!("CARGO_BIN_EXE_csctl");
    let shown = on_tty(&format!(
        "{bin} publish {} --to {repo} --chunk-size 4MiB",
        release.display()
    ));
    assert!(
        shown.contains("node-image.raw") && shown.contains("12.00 MiB") && shown.contains("[="),
        "no progress bar on a terminal: {shown:?}"
    );
    let pulled = on_tty(&format!(
        "{bin} pull {repo}:{PREFIX}-v1 -o {}",
        home.path().join("pulled").display()
    ));
    assert!(
        pulled.contains("node-image.raw") && pulled.contains("12.00 MiB"),
        "no progress bar for the pull: {pulled:?}"
    );
    assert_eq!(
        read_dir_files(&home.path().join("pulled")),
        read_dir_files(&release)
    );
    // Piped: no bar, no carriage returns.
    let mut c = csctl(home.path());
    c.args(["pull", &format!("{repo}:{PREFIX}-v1"), "-o", "piped"]);
    let out = run(c, None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        !out.stderr.contains("MiB") && !out.stderr.contains('\r'),
        "{:?}",
        out.stderr
    );
}

/// A file rewritten between hashing and upload (same size, other bytes) must not be committed under the old
/// digest, nor reported as a network problem: the registry refuses the commit (DIGEST_INVALID) and csctl says
/// which file changed. Both upload paths: one PUT, and PATCH chunks. A file that shrank is caught before any
/// byte is sent.
#[test]
fn a_file_that_changes_during_the_push_is_refused_clearly() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reference =
        csctl::oci::Reference::parse(&format!("oci://{}/kaas/changed", reg.addr)).unwrap();
    let client = csctl::oci::RegistryClient::new(
        &reference,
        csctl::oci::credentials::ResolvedCredential {
            credential: csctl::oci::credentials::Credential::Anonymous,
            source: "test".into(),
        },
        csctl::oci::ClientOptions {
            state_dir: Some(dir.path().join("state")),
            chunk_size: 1 << 20,
            retries: 1,
            ..Default::default()
        },
    )
    .unwrap();
    for (name, size) in [("small", 1000usize), ("big", (3 << 20) + 17)] {
        let path = dir.path().join(name);
        std::fs::write(&path, vec![b'b'; size]).unwrap();
        // The digest of what was there when it was hashed.
        let hashed = csctl::oci::Digest::of_bytes(&vec![b'a'; size]);
        let err = rt
            .block_on(client.push_blob("kaas/changed", &path, &hashed, size as u64, name))
            .unwrap_err();
        assert!(
            matches!(err, csctl::oci::OciError::FileChanged { .. }),
            "{name}: {err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&path.display().to_string())
                && msg.contains("changed while it was being published"),
            "{name}: {msg}"
        );
        assert_eq!(
            rt.block_on(client.blob_size("kaas/changed", &hashed))
                .unwrap(),
            None,
            "{name}: nothing may be committed under the old digest"
        );
    }
    assert!(
        std::fs::read_dir(dir.path().join("state/uploads"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "no stale upload session may be kept for a digest that will never be uploaded"
    );
    // Shrank since hashing: refused before any upload.
    let path = dir.path().join("small");
    let err = rt
        .block_on(client.push_blob(
            "kaas/changed",
            &path,
            &csctl::oci::Digest::of_bytes(&[b'a'; 2000]),
            2000,
            "small",
        ))
        .unwrap_err();
    assert!(
        matches!(err, csctl::oci::OciError::FileChanged { .. }),
        "{err}"
    );
}

#[test]
fn credentials_wrong_missing_and_right() {
    let reg = Registry::start_with(Some(("capi", "secret")));
    let home = tempfile::tempdir().unwrap();
    let release = make_release(home.path(), PREFIX, "v1", "a: 1\n", 0);
    let repo = format!("oci://{}/kaas/auth", reg.addr);

    // Wrong password from the flags.
    let mut c = csctl(home.path());
    c.arg("publish")
        .arg(&release)
        .args(["--to", &repo, "--username", "capi", "--password-stdin"]);
    let out = run(c, Some("wrong\n"));
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("rejected the credentials from --username/--password-stdin"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("wrong"),
        "the password must not be echoed: {}",
        out.stderr
    );

    // Wrong password from the environment names the variables.
    let mut c = csctl(home.path());
    c.arg("publish")
        .arg(&release)
        .args(["--to", &repo])
        .env("OCI_USERNAME", "capi")
        .env("OCI_PASSWORD", "nope");
    let out = run(c, None);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("OCI_USERNAME/OCI_PASSWORD"),
        "{}",
        out.stderr
    );

    // No credentials at all.
    let mut c = csctl(home.path());
    c.arg("publish").arg(&release).args(["--to", &repo]);
    let out = run(c, None);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("requires authentication"),
        "{}",
        out.stderr
    );
    assert!(
        !home.path().join("state/csctl/uploads").exists(),
        "nothing half-written locally"
    );
    assert!(skopeo_tags(&reg.addr, "kaas/auth", Some("capi:secret")).is_empty());

    // Right credentials from docker's config.json.
    let docker = home.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("capi:secret");
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr),
    )
    .unwrap();
    let mut c = csctl(home.path());
    c.args(["--format", "json", "publish"])
        .arg(&release)
        .args(["--to", &repo])
        .env("DOCKER_CONFIG", &docker);
    let out = json(&run(c, None));
    assert_eq!(out["published"][0]["status"], "published");
    // And from the flags, for a pull.
    let mut c = csctl(home.path());
    c.args([
        "pull",
        &format!("{repo}:{PREFIX}-v1"),
        "-o",
        "p",
        "--username",
        "capi",
        "--password-stdin",
    ]);
    let out = run(c, Some("secret\n"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        read_dir_files(&home.path().join("p")),
        read_dir_files(&release)
    );
}

#[test]
fn unknown_repository_and_registry_down() {
    let reg = Registry::start();
    let home = tempfile::tempdir().unwrap();
    for args in [
        vec![
            "pull".to_string(),
            format!("oci://{}/no/such:{PREFIX}-v1", reg.addr),
            "-o".into(),
            "out".into(),
        ],
        vec!["list".to_string(), format!("oci://{}/no/such", reg.addr)],
        vec![
            "inspect".to_string(),
            format!("oci://{}/no/such:{PREFIX}-v1", reg.addr),
        ],
    ] {
        let mut c = csctl(home.path());
        c.args(&args);
        let out = run(c, None);
        assert_ne!(out.code, 0, "{args:?}");
        assert!(
            out.stderr.contains("repository no/such does not exist"),
            "{args:?}: {}",
            out.stderr
        );
    }
    assert!(!home.path().join("out").exists());

    // A port where nothing listens.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let release = make_release(home.path(), PREFIX, "v1", "a: 1\n", 0);
    let mut c = csctl(home.path());
    c.arg("publish").arg(&release).args([
        "--to",
        &format!("oci://127.0.0.1:{port}/kaas/cs"),
        "--retries",
        "1",
    ]);
    let out = run(c, None);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("cannot reach registry"),
        "{}",
        out.stderr
    );
    let mut c = csctl(home.path());
    c.args([
        "pull",
        &format!("oci://127.0.0.1:{port}/kaas/cs:{PREFIX}-v1"),
        "-o",
        "down",
        "--retries",
        "0",
    ]);
    let out = run(c, None);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("cannot reach registry"),
        "{}",
        out.stderr
    );
    assert!(!home.path().join("down").exists());
}

#[test]
fn tag_conflict_is_refused_unless_forced() {
    let reg = Registry::start();
    let home = tempfile::tempdir().unwrap();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let v1 = make_release(a.path(), PREFIX, "v1", "replicas: 1\n", 0);
    let v1_changed = make_release(b.path(), PREFIX, "v1", "replicas: 2\n", 0);
    let repo = format!("oci://{}/kaas/cs", reg.addr);
    let first = json(&publish(home.path(), &v1, &repo, &[]));
    let digest = first["published"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let reference = format!("docker://{}/kaas/cs:{PREFIX}-v1", reg.addr);

    let out = publish(home.path(), &v1_changed, &repo, &[]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("already points to") && out.stderr.contains("--force"),
        "{}",
        out.stderr
    );
    assert_eq!(
        digest_of(&skopeo_raw(&reference)),
        digest,
        "the tag must not move"
    );

    let forced = json(&publish(home.path(), &v1_changed, &repo, &["--force"]));
    assert_eq!(forced["published"][0]["status"], "replaced");
    let new = forced["published"][0]["digest"].as_str().unwrap();
    assert_ne!(new, digest);
    assert_eq!(digest_of(&skopeo_raw(&reference)), new);
}

#[test]
fn malicious_titles_and_corrupt_blobs_are_refused_without_writing() {
    let reg = Registry::start();
    let home = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reference = csctl::oci::Reference::parse(&format!("oci://{}/evil/cs", reg.addr)).unwrap();
    let client = csctl::oci::RegistryClient::new(
        &reference,
        csctl::oci::credentials::ResolvedCredential {
            credential: csctl::oci::credentials::Credential::Anonymous,
            source: "test".into(),
        },
        csctl::oci::ClientOptions {
            state_dir: None,
            ..Default::default()
        },
    )
    .unwrap();
    // Hostile manifests pushed straight to the registry: the registry accepts them, csctl pull must not.
    for (tag, title) in [
        ("dotdot", "../x"),
        ("absolute", "/tmp/csctl-evil-abs"),
        ("nested", "a/../../x"),
    ] {
        let manifest = rt.block_on(async {
            client.push_blob_bytes("evil/cs", b"{}").await.unwrap();
            client.push_blob_bytes("evil/cs", b"payload").await.unwrap();
            let layer = format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":7,"annotations":{{"org.opencontainers.image.title":"{title}"}}}}"#,
                digest_of(b"payload")
            );
            let m = format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{}","size":2}},"layers":[{layer}]}}"#,
                digest_of(b"{}")
            );
            client.push_manifest("evil/cs", tag, m.as_bytes(), "application/vnd.oci.image.manifest.v1+json").await.unwrap();
            m
        });
        let _ = manifest;
        let work = home.path().join(format!("work-{tag}"));
        std::fs::create_dir_all(work.join("sub")).unwrap();
        let mut c = csctl(home.path());
        c.current_dir(work.join("sub")).args([
            "pull",
            &format!("oci://{}/evil/cs:{tag}", reg.addr),
            "-o",
            "out",
        ]);
        let out = run(c, None);
        assert_ne!(out.code, 0, "{tag}");
        assert!(out.stderr.contains("unsafe title"), "{tag}: {}", out.stderr);
        assert!(
            !work.join("sub/out").exists() && !work.join("x").exists(),
            "{tag}: something was written"
        );
        assert_eq!(
            std::fs::read_dir(work.join("sub")).unwrap().count(),
            0,
            "{tag}: no temporary leftovers"
        );
    }
    assert!(!std::path::Path::new("/tmp/csctl-evil-abs").exists());

    // A blob corrupted in the registry's storage: digest check fails, nothing is left behind.
    let release = make_release(home.path(), PREFIX, "v1", "a: 1\n", 0);
    let repo = format!("oci://{}/kaas/cs", reg.addr);
    json(&publish(home.path(), &release, &repo, &[]));
    let meta = std::fs::read(release.join("metadata.yaml")).unwrap();
    let blob = reg.blob_file(&support::sha256_hex(&meta));
    let mut bad = meta.clone();
    bad[0] ^= 0x20;
    std::fs::write(&blob, &bad).unwrap();
    let mut c = csctl(home.path());
    c.args(["pull", &format!("{repo}:{PREFIX}-v1"), "-o", "corrupt"]);
    let out = run(c, None);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("digest mismatch"), "{}", out.stderr);
    assert!(!home.path().join("corrupt").exists());
    assert!(
        std::fs::read_dir(home.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".csctl-pull")),
        "temporary pull directory left behind"
    );
}

#[test]
fn list_follows_pagination_sorts_by_version_and_filters() {
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let home = tempfile::tempdir().unwrap();
    let repo = format!("oci://{}/kaas/many", proxy.addr);
    let src = tempfile::tempdir().unwrap();
    let mut dirs = Vec::new();
    for (prefix, version) in [
        ("beowulf-hpc-1-33", "v10"),
        ("beowulf-hpc-1-33", "v2"),
        ("beowulf-hpc-1-33", "v1"),
        ("beowulf-hpc-1-32", "v3"),
        ("docker-ferrol-1-33", "v1"),
    ] {
        dirs.push(make_release(src.path(), prefix, version, "a: 1\n", 0));
    }
    let mut c = csctl(home.path());
    c.arg("publish").args(&dirs).args(["--to", &repo]);
    let out = run(c, None);
    assert_eq!(out.code, 0, "{}", out.stderr);

    let mark = proxy.mark();
    let mut c = csctl(home.path());
    c.args(["list", &repo, "--page-size", "2"]);
    let out = run(c, None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "beowulf-hpc-1-32-v3",
            "beowulf-hpc-1-33-v1",
            "beowulf-hpc-1-33-v2",
            "beowulf-hpc-1-33-v10",
            "docker-ferrol-1-33-v1"
        ]
    );
    // distribution 2.8 ignores `n` for tag lists (pagination came with distribution 3), so this peer
    // answers in one page; following `Link` headers is covered by `list_follows_link_pagination`.
    let pages: Vec<_> = proxy
        .records_since(mark)
        .into_iter()
        .filter(|r| r.path.contains("/tags/list"))
        .collect();
    assert!(pages[0].path.contains("n=2"), "{pages:?}");

    let mut c = csctl(home.path());
    c.args([
        "list",
        &repo,
        "--provider",
        "beowulf",
        "--name",
        "hpc",
        "--k8s",
        "1.33",
    ]);
    let out = run(c, None);
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        [
            "beowulf-hpc-1-33-v1",
            "beowulf-hpc-1-33-v2",
            "beowulf-hpc-1-33-v10"
        ]
    );
}

#[test]
fn diff_compares_a_published_release_with_a_directory() {
    let reg = Registry::start();
    let home = tempfile::tempdir().unwrap();
    let v1 = make_release(home.path(), PREFIX, "v1", "replicas: 1\n", 0);
    let v2 = make_release(home.path(), PREFIX, "v2", "replicas: 3\n", 0);
    let repo = format!("oci://{}/kaas/cs", reg.addr);
    json(&publish(home.path(), &v1, &repo, &[]));
    let mut c = csctl(home.path());
    c.args(["diff", &format!("{repo}:{PREFIX}-v1")]).arg(&v2);
    let out = run(c, None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("clusterStack  v1 -> v2"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("beowulf-hpc-1-33-cluster-class/values.yaml"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("-replicas: 1") && out.stdout.contains("+replicas: 3"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("clusteraddon.yaml (same)"),
        "{}",
        out.stdout
    );
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

#[test]
fn create_stable_mode_reads_and_publishes_to_an_oci_remote() {
    let reg = Registry::start();
    let home = tempfile::tempdir().unwrap();
    let seed =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../providers/beowulf/hpc/1-33");
    let stack = home.path().join("providers/beowulf/hpc/1-33");
    copy_tree(&seed, &stack);
    let repo = format!("oci://{}/kaas/stacks", reg.addr);
    let create = |out: &str| {
        let mut c = csctl(home.path());
        c.args(["--format", "json", "create"]).arg(&stack).args([
            "--mode",
            "stable",
            "--publish",
            "--remote",
            &repo,
            "-o",
            out,
        ]);
        run(c, None)
    };
    // First release: v1, published.
    let first = json(&create("rel1"));
    assert_eq!(
        first["releases"][0]["release"], "beowulf-hpc-1-33-v1",
        "{first}"
    );
    assert_eq!(first["published"][0]["status"], "published", "{first}");
    // Nothing changed: stable mode sees v1 in the registry (not in the fresh output dir) and releases nothing.
    let again = json(&create("rel2"));
    assert_eq!(again["releases"][0]["status"], "no-change", "{again}");
    assert!(again.get("published").is_none());
    // A cluster-class-only change: v2 with the addon version kept, published next to v1.
    let values = stack.join("cluster-class/templates/cluster-class.yaml");
    let mut text = std::fs::read_to_string(&values).unwrap();
    text.push_str("\n# changed by the test\n");
    std::fs::write(&values, text).unwrap();
    let third = json(&create("rel3"));
    assert_eq!(
        third["releases"][0]["release"], "beowulf-hpc-1-33-v2",
        "{third}"
    );
    assert_eq!(
        third["releases"][0]["versions"]["clusterAddon"], "v1",
        "{third}"
    );
    assert_eq!(third["published"][0]["status"], "published");
    let mut c = csctl(home.path());
    c.args(["list", &repo]);
    assert_eq!(
        run(c, None).stdout.lines().collect::<Vec<_>>(),
        ["beowulf-hpc-1-33-v1", "beowulf-hpc-1-33-v2"]
    );
    // `csctl publish <stack-dir>` is the same flow: the next change becomes v3 in the registry.
    let mut text = std::fs::read_to_string(&values).unwrap();
    text.push_str("# changed again\n");
    std::fs::write(&values, text).unwrap();
    let mut c = csctl(home.path());
    c.args(["--format", "json", "publish"])
        .arg(&stack)
        .args(["--to", &repo]);
    let fourth = json(&run(c, None));
    assert_eq!(
        fourth["published"][0]["tag"], "beowulf-hpc-1-33-v3",
        "{fourth}"
    );
}

/// MOCK, because no peer here paginates tag lists (distribution 2.8 ignores `n`; distribution 3 and zot are
/// not packaged for Debian 12): a tiny HTTP stub serving `/v2/` and a tag list in pages of two, linked with
/// `Link: <…>; rel="next"` headers the way the distribution spec describes.
#[test]
fn list_follows_link_pagination() {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let tags = [
        "beowulf-hpc-1-33-v3",
        "beowulf-hpc-1-33-v1",
        "latest",
        "beowulf-hpc-1-33-v2",
        "beowulf-hpc-1-33-v10",
    ];
    let served = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = served.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut w = conn;
            loop {
                let mut first = String::new();
                if reader.read_line(&mut first).unwrap_or(0) == 0 {
                    break;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let path = first.split(' ').nth(1).unwrap_or("").to_string();
                log.lock().unwrap().push(path.clone());
                let (body, link) = if path == "/v2/" {
                    ("{}".to_string(), None)
                } else {
                    let last = path
                        .split("last=")
                        .nth(1)
                        .map(|l| l.split('&').next().unwrap().to_string());
                    let start = last
                        .map(|l| tags.iter().position(|t| *t == l).unwrap() + 1)
                        .unwrap_or(0);
                    let page: Vec<&str> = tags.iter().skip(start).take(2).copied().collect();
                    let next = (start + 2 < tags.len()).then(|| {
                        format!(
                            "</v2/kaas/cs/tags/list?n=2&last={}>; rel=\"next\"",
                            page[page.len() - 1]
                        )
                    });
                    (
                        serde_json::json!({"name": "kaas/cs", "tags": page}).to_string(),
                        next,
                    )
                };
                let mut resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
                    body.len()
                );
                if let Some(l) = link {
                    resp.push_str(&format!("Link: {l}\r\n"));
                }
                resp.push_str("\r\n");
                resp.push_str(&body);
                if w.write_all(resp.as_bytes()).is_err() {
                    break;
                }
            }
        }
    });
    let home = tempfile::tempdir().unwrap();
    let mut c = csctl(home.path());
    c.args(["list", &format!("oci://{addr}/kaas/cs"), "--page-size", "2"]);
    let out = run(c, None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        [
            "beowulf-hpc-1-33-v1",
            "beowulf-hpc-1-33-v2",
            "beowulf-hpc-1-33-v3",
            "beowulf-hpc-1-33-v10"
        ]
    );
    assert!(
        out.stderr.contains("1 of 5 tag(s) are not release names"),
        "{}",
        out.stderr
    );
    let pages = served
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.contains("/tags/list"))
        .count();
    assert_eq!(pages, 3);
}

#[test]
fn tls_with_a_custom_ca() {
    let reg = Registry::start_tls();
    let home = tempfile::tempdir().unwrap();
    let release = make_release(home.path(), PREFIX, "v1", "a: 1\n", 0);
    let repo = format!("oci://{}/kaas/tls", reg.addr);
    // HTTPS forced on loopback, certificate unknown: a clear TLS failure, nothing published.
    let out = publish(
        home.path(),
        &release,
        &repo,
        &["--plain-http=false", "--retries", "0"],
    );
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("cannot reach registry")
            && out.stderr.to_lowercase().contains("certificate"),
        "{}",
        out.stderr
    );
    // With the CA: published over HTTPS (--ca-file implies HTTPS), and pulled back.
    let ca = reg.ca_file();
    let ca = ca.to_str().unwrap();
    let first = json(&publish(home.path(), &release, &repo, &["--ca-file", ca]));
    assert_eq!(first["published"][0]["status"], "published");
    let mut c = csctl(home.path());
    c.args([
        "pull",
        &format!("{repo}:{PREFIX}-v1"),
        "-o",
        "tls-out",
        "--ca-file",
        ca,
    ]);
    assert_eq!(run(c, None).code, 0);
    assert_eq!(
        read_dir_files(&home.path().join("tls-out")),
        read_dir_files(&release)
    );
}

/// The HPC stack end to end against a real registry: `csctl create`, then `csctl publish`; the published
/// manifest lists every file of the release by title with its digest, and `create --publish` of the same
/// stack is a no-op that reports the same digest.
#[test]
fn hpc_stack_is_created_and_published_with_every_file_titled() {
    let reg = Registry::start();
    // 1-34 shares most of its files with 1-33 through symlinks: published the same way, its own release.
    for minor in ["1-33", "1-34"] {
        hpc_minor_is_created_and_published(&reg, minor);
    }
}

fn hpc_minor_is_created_and_published(reg: &Registry, minor: &str) {
    let home = tempfile::tempdir().unwrap();
    let stack = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../providers/beowulf/hpc")
        .join(minor);
    let name = format!("beowulf-hpc-{minor}-v1");
    let mut c = csctl(home.path());
    c.args(["--format", "json", "create", "-o", "rel"])
        .arg(&stack);
    let created = json(&run(c, None));
    let release = std::path::PathBuf::from(created["releases"][0]["path"].as_str().unwrap());
    let release = home.path().join(release);
    assert_eq!(release.file_name().unwrap().to_str().unwrap(), name);
    let files = read_dir_files(&release);
    assert!(files.contains_key(&format!("beowulf-hpc-{minor}-cluster-class-v1.tgz")));
    assert!(files.contains_key(&format!("beowulf-hpc-{minor}-cluster-addon-v1.tgz")));

    let repo = format!("oci://{}/kaas/cluster-stacks", reg.addr);
    let out = json(&publish(home.path(), &release, &repo, &[]));
    let digest = out["published"][0]["digest"].as_str().unwrap().to_string();
    let raw = skopeo_raw(&format!("docker://{}/kaas/cluster-stacks:{name}", reg.addr));
    assert_eq!(digest_of(&raw), digest);
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let layers: BTreeMap<String, String> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["annotations"]["org.opencontainers.image.title"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                l["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: BTreeMap<String, String> = files
        .iter()
        .map(|(name, data)| (name.clone(), digest_of(data)))
        .collect();
    assert_eq!(
        layers, expected,
        "every file of the release, by title and digest"
    );

    // The README's main command with a registry: nothing new to build, the release is already there.
    let mut c = csctl(home.path());
    c.args([
        "--format",
        "json",
        "create",
        "-o",
        "rel",
        "--publish",
        "--remote",
    ])
    .arg(&repo)
    .arg(&stack);
    let again = json(&run(c, None));
    assert_eq!(again["releases"][0]["status"], "no-change");
    assert_eq!(again["published"][0]["status"], "unchanged");
    assert_eq!(again["published"][0]["digest"], digest.as_str());
}

/// README's main command, as written there: it builds the HPC stack into ./.release and publishes it to the
/// local OCI layout (no registry, no $OCI_REPOSITORY), then says what to run next; run again, it changes
/// nothing and publishes nothing new.
#[test]
fn readme_main_command_builds_and_publishes_to_the_local_layout() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let command = "cargo run --release -p csctl -- create --publish providers/beowulf/hpc/1-33";
    assert!(
        readme.contains(command),
        "README's main command changed: update this test"
    );
    let home = tempfile::tempdir().unwrap();
    let mut c = csctl(home.path());
    c.args(["create", "--publish"])
        .arg(root.join("providers/beowulf/hpc/1-33"));
    let out = run(c, None);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let layout = home.path().join("layout"); // CSCTL_OCI_LAYOUT, as ~/.local/share/csctl/oci by default
    assert!(
        out.stdout.contains(&format!(
            "published oci:{}:beowulf-hpc-1-33-v1@sha256:",
            layout.display()
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!(
            "next: csctl inspect oci:{}:beowulf-hpc-1-33-v1",
            layout.display()
        )),
        "{}",
        out.stdout
    );
    let release = home.path().join(".release/beowulf-hpc-1-33-v1");
    let raw = skopeo_raw(&format!("oci:{}:beowulf-hpc-1-33-v1", layout.display()));
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let titles: Vec<String> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l["annotations"]["org.opencontainers.image.title"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        titles,
        read_dir_files(&release).into_keys().collect::<Vec<_>>()
    );
    // Again: no change, already published.
    let mut c = csctl(home.path());
    c.args(["create", "--publish"])
        .arg(root.join("providers/beowulf/hpc/1-33"));
    let again = run(c, None);
    assert_eq!(again.code, 0);
    assert!(
        again.stdout.contains("nothing to release"),
        "{}",
        again.stdout
    );
    assert!(
        again.stdout.contains("is already published"),
        "{}",
        again.stdout
    );
}
