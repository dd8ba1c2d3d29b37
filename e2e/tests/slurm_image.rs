//! The HPC stack's SLURM image (`images/slurm/build.sh`) published as README says: skopeo (a real OCI
//! client) copies the build's OCI image layout to a registry (Debian's `docker-registry`) without changing a
//! digest, and what the registry then serves is what the build recorded in `image.yaml` — the manifest digest
//! users pin in the stack's values, the SLURM version label, the login command. The versions the image and
//! the node image record obey SLURM's rule.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use e2e::hpc::{SlurmImage, slurm_compatible};
use e2e::registry::Registry;
use e2e::{Scratch, require_root_and_peers};
use serde_json::Value;

fn skopeo(args: &[&str]) -> Value {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(out.status.success(), "skopeo {args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

#[test]
fn the_slurm_image_layout_publishes_with_skopeo_under_the_digest_it_records() {
    require_root_and_peers();
    let slurm = SlurmImage::build_ci();
    let dir = Scratch::new("slurm-image");
    let registry = Registry::start(&dir.path().join("registry")).unwrap();
    let tag = slurm.record["version"].as_str().unwrap();
    assert_eq!(tag, "1.0.0-ci", "the CI variant's tag");
    let layout = e2e::target_dir().join("images/slurm-ci");
    let pushed = format!("docker://{}/beowulf-hpc/slurm:{tag}", registry.addr);
    skopeo(&[
        "copy",
        "--quiet",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:{tag}", layout.display()),
        &pushed,
    ]);

    let inspect = skopeo(&["inspect", "--tls-verify=false", &pushed]);
    assert_eq!(
        inspect["Digest"].as_str(),
        slurm.record["digest"].as_str(),
        "the registry's digest is not the one image.yaml records: {inspect}"
    );
    assert_eq!(slurm.image.digest, inspect["Digest"].as_str().unwrap());
    let slurmctld = slurm.package("slurmctld");
    assert_eq!(
        inspect["Labels"]["io.beowulf.slurm.version"].as_str(),
        Some(slurmctld.as_str()),
        "{inspect}"
    );
    assert_eq!(inspect["Labels"]["org.opencontainers.image.version"], tag);
    let config = skopeo(&["inspect", "--config", "--tls-verify=false", &pushed]);
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["/usr/local/sbin/login"]),
        "{config}"
    );
    // The secrets an image must not carry: munge's build-time key, SSH host keys.
    for secret in ["etc/munge/munge.key", "etc/ssh/ssh_host_ed25519_key"] {
        assert!(
            !slurm.image.rootfs.join(secret).exists(),
            "{secret} is in the image"
        );
    }
    assert!(slurm.image.rootfs.join("usr/sbin/slurmctld").is_file());

    // Controller and nodes: built from one package source, their SLURM releases talk to each other.
    e2e::pxe::LabImage::hpc_node_ci();
    let slurmd = e2e::hpc::image_package("slurmd");
    for daemon in ["slurmctld", "slurmdbd"] {
        slurm_compatible(&slurm.package(daemon), &slurmd)
            .unwrap_or_else(|e| panic!("{daemon} vs the nodes' slurmd: {e}"));
    }
}
