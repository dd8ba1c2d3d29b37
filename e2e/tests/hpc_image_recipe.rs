//! The HPC node image recipe (`images/hpc-node/build.sh`; the SLURM image's too) refuses to start when a
//! package source is unreachable, naming the URL and the variable that redirects it, before downloading
//! anything. The sources are on loopback: an unused port, and a python `http.server` standing in for a Debian
//! mirror (only the `Release` files the preflight asks for).
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};

use e2e::{Proc, wait_for};

fn build(envs: &[(&str, String)]) -> Output {
    build_image("hpc-node", envs)
}

fn build_image(recipe: &str, envs: &[(&str, String)]) -> Output {
    let out = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(
        e2e::repo_root()
            .join("images")
            .join(recipe)
            .join("build.sh"),
    )
    .arg(out.path().join("img"))
    .env("FORCE", "1");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    assert!(
        !out.path().join("img").exists(),
        "a failed build left an output"
    );
    o
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn unknown_variant_is_refused() {
    let o = build(&[("VARIANT", "tiny".into())]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("VARIANT must be ci or full, not 'tiny'"),
        "{}",
        stderr(&o)
    );
}

/// The SLURM image's recipe reads the same sources and refuses the same way.
#[test]
fn the_slurm_image_recipe_refuses_an_unknown_variant_and_an_unreachable_mirror() {
    let o = build_image("slurm", &[("VARIANT", "tiny".into())]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("VARIANT must be ci or full, not 'tiny'"),
        "{}",
        stderr(&o)
    );
    e2e::require_root_and_peers();
    let dead = format!("http://127.0.0.1:{}/debian", closed_port());
    let o = build_image("slurm", &[("DEBIAN_MIRROR", dead.clone())]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "package source unreachable: {dead}/dists/bookworm/Release (set DEBIAN_MIRROR"
        )),
        "{}",
        stderr(&o)
    );
}

#[test]
fn unreachable_sources_stop_the_build_with_the_variable_to_set() {
    e2e::require_root_and_peers();
    // The Debian mirror itself.
    let dead = format!("http://127.0.0.1:{}/debian", closed_port());
    let o = build(&[("VARIANT", "ci".into()), ("DEBIAN_MIRROR", dead.clone())]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!(
            "package source unreachable: {dead}/dists/bookworm/Release (set DEBIAN_MIRROR"
        )),
        "{}",
        stderr(&o)
    );

    // A reachable Debian mirror (its Release files) but no Kubernetes packages: the full variant names
    // K8S_APT_URL; with Kubernetes reachable too, the CVMFS source is next.
    let www = tempfile::tempdir().unwrap();
    for suite in ["bookworm", "bookworm-security", "bookworm-backports"] {
        let d = www.path().join("debian/dists").join(suite);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("Release"), format!("Suite: {suite}\n")).unwrap();
    }
    std::fs::create_dir_all(www.path().join("k8s")).unwrap();
    std::fs::write(www.path().join("k8s/Release"), "Origin: test\n").unwrap();
    let port = closed_port();
    let mut server = Proc::spawn(
        "mirror",
        Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
            .arg(www.path())
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let mirror = format!("http://127.0.0.1:{port}");
    wait_for("the mirror", std::time::Duration::from_secs(10), || {
        assert!(server.exited().is_none(), "python3 http.server exited");
        Command::new("curl")
            .args(["-fsS", "-o", "/dev/null"])
            .stderr(Stdio::null())
            .arg(format!("{mirror}/debian/dists/bookworm/Release"))
            .status()
            .unwrap()
            .success()
            .then_some(())
    });
    let common = [
        ("VARIANT", "full".to_string()),
        ("DEBIAN_MIRROR", format!("{mirror}/debian")),
        ("DEBIAN_SECURITY_MIRROR", format!("{mirror}/debian")),
    ];
    let dead_k8s = format!("http://127.0.0.1:{}/k8s", closed_port());
    let mut envs = common.to_vec();
    envs.push(("K8S_APT_URL", dead_k8s.clone()));
    let o = build(&envs);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!(
            "package source unreachable: {dead_k8s}/Release (set K8S_APT_URL"
        )),
        "{}",
        stderr(&o)
    );

    let mut envs = common.to_vec();
    envs.push(("K8S_APT_URL", format!("{mirror}/k8s")));
    envs.push(("CVMFS_APT_URL", format!("{mirror}/cvmfs")));
    let o = build(&envs);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!(
            "package source unreachable: {mirror}/cvmfs/dists/bookworm-prod/Release (set CVMFS_APT_URL"
        )),
        "{}",
        stderr(&o)
    );
}
