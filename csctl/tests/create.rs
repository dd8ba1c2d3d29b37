//! `csctl create` end to end: upstream layout and hashes on the upstream fixture, reproducibility, a golden
//! release, the stable-mode rules, and bad input that must write nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use predicates::str::contains;

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn fixture_hash_mode_gives_upstream_layout_and_known_hashes() {
    let fixtures = fixtures_dir();
    let tmp = tempfile::tempdir().unwrap();
    let stack = tmp.path().join("docker-ferrol-1-27");
    copy_tree(&fixtures.join("stacks/docker-ferrol-1-27"), &stack);
    let out = tmp.path().join("out");
    csctl()
        .args(["create", "--mode", "hash", "-o"])
        .arg(&out)
        .arg(&stack)
        .assert()
        .success();

    let releases = subdirs(&out);
    assert_eq!(releases.len(), 1, "{releases:?}");
    let rel = &releases[0];
    let hashes = read_json(&out.join(rel).join("hashes.json"));
    // Known answer from the fixture README (upstream's algorithm).
    assert_eq!(
        hashes["clusterAddonDir"],
        "kb72t64tjse3esqmrgdjnl1tfmnqv5kzhq0iierghs"
    );
    let short = &hashes["clusterStack"].as_str().unwrap()[..7];
    assert_eq!(rel, &format!("docker-ferrol-1-27-v0-sha-{short}"));

    let files = read_flat(&out.join(rel));
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "clusteraddon.yaml".to_string(),
            format!("docker-ferrol-1-27-cluster-addon-v0-sha.{short}.tgz"),
            format!("docker-ferrol-1-27-cluster-class-v0-sha.{short}.tgz"),
            "hashes.json".to_string(),
            "metadata.yaml".to_string(),
        ]
    );
    assert_eq!(
        String::from_utf8(files["metadata.yaml"].clone()).unwrap(),
        format!(
            "apiVersion: metadata.clusterstack.x-k8s.io/v1alpha1\nversions:\n  clusterStack: v0-sha.{short}\n  kubernetes: v1.27.7\n  components:\n    clusterAddon: v0-sha.{short}\n    nodeImage: v0-sha.{short}\n"
        )
    );
    // Cluster-class: a Helm archive whose top-level directory is the chart name, version = stack version.
    let cc = tgz_entries(&files[&format!("docker-ferrol-1-27-cluster-class-v0-sha.{short}.tgz")]);
    assert!(
        cc.iter()
            .all(|(p, _, _)| p.starts_with("docker-ferrol-1-27-cluster-class/"))
    );
    let chart = cc
        .iter()
        .find(|(p, _, _)| p == "docker-ferrol-1-27-cluster-class/Chart.yaml")
        .unwrap();
    assert!(String::from_utf8_lossy(&chart.2).contains(&format!("\nversion: v0-sha.{short}\n")));
    // Addon: no top-level directory; first-level directories are the stages.
    let addon =
        tgz_entries(&files[&format!("docker-ferrol-1-27-cluster-addon-v0-sha.{short}.tgz")]);
    let mut top: Vec<&str> = addon
        .iter()
        .map(|(p, _, _)| p.split('/').next().unwrap())
        .collect();
    top.dedup();
    assert_eq!(top, ["cni", "metrics-server", "ngnix"]);
    // Binary vendored charts are copied byte for byte.
    let vendored =
        std::fs::read(stack.join("cluster-addon/ngnix/charts/nginx-15.10.1.tgz")).unwrap();
    assert!(
        addon
            .iter()
            .any(|(p, _, d)| p == "ngnix/charts/nginx-15.10.1.tgz" && *d == vendored)
    );
    // The addon marker in the metrics-server chart was substituted.
    let ms = addon
        .iter()
        .find(|(p, _, _)| p == "metrics-server/Chart.yaml")
        .unwrap();
    assert!(String::from_utf8_lossy(&ms.2).contains(&format!("version: v0-sha.{short}")));
}

#[test]
fn directory_hash_matches_the_fixture_known_answers() {
    let fixtures = fixtures_dir();
    for (dir, want) in [
        (
            "stacks/docker-ferrol-1-27/cluster-addon",
            "kb72t64tjse3esqmrgdjnl1tfmnqv5kzhq0iierghs",
        ),
        (
            "releases/docker-ferrol-1-27-v1",
            "xtjek3abczmm3yq3uvezurzdojy5g26dexn9pji",
        ),
        (
            "releases/docker-ferrol-1-27-v0-sha-hipstsw",
            "jdec0kybt5lhxu5edgqyu7q1qkfsjccw5tgkhsgbo",
        ),
    ] {
        let root = fixtures.join(dir);
        let mut files = Vec::new();
        for e in walkdir::WalkDir::new(&root) {
            let e = e.unwrap();
            if e.file_type().is_file() {
                let rel = e
                    .path()
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                files.push((rel, std::fs::read(e.path()).unwrap()));
            }
        }
        let got = csctl::hash::dir_hash(files.iter().map(|(p, d)| (p.as_str(), d.as_slice())));
        assert_eq!(got, want, "{dir}");
    }
}

#[test]
fn two_builds_in_different_places_and_times_are_identical() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let sa = golden_stack(&a.path().join("stack"));
    let sb = golden_stack(&b.path().join("elsewhere/stack"));
    // Different mtimes and permissions on the second copy: must not matter.
    for e in walkdir::WalkDir::new(&sb) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let f = std::fs::File::options().write(true).open(e.path()).unwrap();
            f.set_modified(
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_234_567_890),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    for (stack, out) in [(&sa, a.path().join("out")), (&sb, b.path().join("o"))] {
        csctl()
            .args(["create", "--mode", "hash", "-o"])
            .arg(&out)
            .arg(stack)
            .assert()
            .success();
    }
    let ra = subdirs(&a.path().join("out"));
    let rb = subdirs(&b.path().join("o"));
    assert_eq!(ra, rb);
    let fa = read_flat(&a.path().join("out").join(&ra[0]));
    let fb = read_flat(&b.path().join("o").join(&rb[0]));
    let sums = |f: &std::collections::BTreeMap<String, Vec<u8>>| {
        f.iter()
            .map(|(k, v)| (k.clone(), sha256(v)))
            .collect::<Vec<_>>()
    };
    assert_eq!(sums(&fa), sums(&fb));
    assert_eq!(fa.len(), 5);
}

/// A readable description of a whole release: every file's name, size and sha256, the text files in full,
/// and every archive entry with its mode and sha256.
fn describe_release(dir: &Path) -> String {
    let mut out = String::new();
    for (name, data) in read_flat(dir) {
        out.push_str(&format!(
            "== {name} ({} bytes, sha256 {})\n",
            data.len(),
            sha256(&data)
        ));
        if name.ends_with(".tgz") {
            for (p, mode, d) in tgz_entries(&data) {
                out.push_str(&format!("   {mode:o} {p} {} {}\n", d.len(), sha256(&d)));
                if !d.is_empty() && !d.contains(&0) && std::str::from_utf8(&d).is_ok() {
                    for line in String::from_utf8_lossy(&d).lines() {
                        out.push_str(&format!("   | {line}\n"));
                    }
                }
            }
        } else {
            out.push_str(&String::from_utf8_lossy(&data));
            out.push('\n');
        }
    }
    out
}

#[test]
fn golden_release_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let stack = golden_stack(&tmp.path().join("stack"));
    let out = tmp.path().join("out");
    csctl()
        .args(["create", "-o"])
        .arg(&out)
        .arg(&stack)
        .assert()
        .success()
        .stdout(
            contains("beowulf")
                .not()
                .and(contains("test-golden-1-33-v1")),
        );
    assert_eq!(subdirs(&out), ["test-golden-1-33-v1"]);
    let got = describe_release(&out.join("test-golden-1-33-v1"));
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/test-golden-1-33-v1.txt");
    if std::env::var_os("CSCTL_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden)
        .expect("golden file missing: run with CSCTL_UPDATE_GOLDEN=1 once and review it");
    assert_eq!(got, want, "release differs from {}", golden.display());
}

use predicates::prelude::PredicateBooleanExt;

/// Builds `stack` in stable mode into `out`; returns the metadata versions of the newest release created.
fn stable(stack: &Path, out: &Path) -> assert_cmd::assert::Assert {
    csctl().args(["create", "-o"]).arg(out).arg(stack).assert()
}

fn versions(out: &Path, release: &str) -> (String, String, String) {
    let md = std::fs::read_to_string(out.join(release).join("metadata.yaml")).unwrap();
    let get = |k: &str| {
        md.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{k}: ")).map(str::to_string))
            .unwrap()
    };
    (get("clusterStack"), get("clusterAddon"), get("nodeImage"))
}

fn v(a: &str, b: &str, c: &str) -> (String, String, String) {
    (a.into(), b.into(), c.into())
}

fn first_release(tmp: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let stack = golden_stack(&tmp.join("stack"));
    let out = tmp.join("out");
    stable(&stack, &out).success();
    (stack, out)
}

#[test]
fn stable_first_release_is_v1_v1_v1() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, out) = first_release(tmp.path());
    assert_eq!(subdirs(&out), ["test-golden-1-33-v1"]);
    assert_eq!(versions(&out, "test-golden-1-33-v1"), v("v1", "v1", "v1"));
}

#[test]
fn stable_addon_change_bumps_stack_and_addon() {
    let tmp = tempfile::tempdir().unwrap();
    let (stack, out) = first_release(tmp.path());
    std::fs::write(stack.join("cluster-addon/cni/values.yaml"), "mtu: 9000\n").unwrap();
    stable(&stack, &out)
        .success()
        .stdout(contains("cluster-addon"));
    assert_eq!(versions(&out, "test-golden-1-33-v2"), v("v2", "v2", "v1"));
    assert!(
        out.join("test-golden-1-33-v2/test-golden-1-33-cluster-addon-v2.tgz")
            .is_file()
    );
}

#[test]
fn stable_node_image_change_bumps_stack_and_node_image() {
    let tmp = tempfile::tempdir().unwrap();
    let (stack, out) = first_release(tmp.path());
    std::fs::write(stack.join("node-images/image.yaml"), "image: test-node-2\n").unwrap();
    stable(&stack, &out).success();
    assert_eq!(versions(&out, "test-golden-1-33-v2"), v("v2", "v1", "v2"));
    // The unchanged addon keeps its version and its archive name.
    assert!(
        out.join("test-golden-1-33-v2/test-golden-1-33-cluster-addon-v1.tgz")
            .is_file()
    );
}

#[test]
fn stable_cluster_class_only_change_bumps_only_the_stack() {
    let tmp = tempfile::tempdir().unwrap();
    let (stack, out) = first_release(tmp.path());
    let kcp = stack.join("cluster-class/templates/kcp.yaml");
    let text = std::fs::read_to_string(&kcp)
        .unwrap()
        .replace("cloud-config", "ignition");
    std::fs::write(&kcp, text).unwrap();
    stable(&stack, &out)
        .success()
        .stdout(contains("changed: cluster-class"));
    assert_eq!(
        subdirs(&out),
        ["test-golden-1-33-v1", "test-golden-1-33-v2"]
    );
    assert_eq!(versions(&out, "test-golden-1-33-v2"), v("v2", "v1", "v1"));
}

#[test]
fn stable_no_change_exits_0_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (stack, out) = first_release(tmp.path());
    stable(&stack, &out)
        .success()
        .stdout(contains("no change").and(contains("since test-golden-1-33-v1")));
    assert_eq!(subdirs(&out), ["test-golden-1-33-v1"]);
    // JSON for scripts says the same.
    let o = csctl()
        .args(["--format", "json", "create", "-o"])
        .arg(&out)
        .arg(&stack)
        .output()
        .unwrap();
    assert!(o.status.success());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["releases"][0]["status"], "no-change");
}

#[test]
fn stable_reads_previous_releases_from_remote_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let (stack, out) = first_release(tmp.path());
    std::fs::write(stack.join("cluster-addon/cni/values.yaml"), "mtu: 9000\n").unwrap();
    let out2 = tmp.path().join("out2");
    csctl()
        .args(["create", "--remote"])
        .arg(&out)
        .arg("-o")
        .arg(&out2)
        .arg(&stack)
        .assert()
        .success();
    assert_eq!(subdirs(&out2), ["test-golden-1-33-v2"]);
}

#[test]
fn several_stacks_and_minors_in_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let a = golden_stack(&tmp.path().join("golden/1-33"));
    let b = golden_stack(&tmp.path().join("golden/1-34"));
    let cfg = b.join("csctl.yaml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("v1.33.4", "v1.34.1");
    std::fs::write(&cfg, text).unwrap();
    let cc = b.join("cluster-class/Chart.yaml");
    let text = std::fs::read_to_string(&cc)
        .unwrap()
        .replace("1-33", "1-34");
    std::fs::write(&cc, text).unwrap();
    let out = tmp.path().join("out");
    // The parent directory stands for both minors.
    csctl()
        .args(["create", "-o"])
        .arg(&out)
        .arg(tmp.path().join("golden"))
        .assert()
        .success();
    assert_eq!(
        subdirs(&out),
        ["test-golden-1-33-v1", "test-golden-1-34-v1"]
    );
    let _ = a;
}

#[test]
fn custom_mode_uses_the_given_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let stack = golden_stack(&tmp.path().join("stack"));
    let out = tmp.path().join("out");
    csctl()
        .args([
            "create",
            "--mode",
            "custom",
            "--cluster-stack-version",
            "v0-custom.pr12",
        ])
        .args([
            "--cluster-addon-version",
            "v3",
            "--node-image-version",
            "v0-git.abc1234",
            "-o",
        ])
        .arg(&out)
        .arg(&stack)
        .assert()
        .success();
    assert_eq!(subdirs(&out), ["test-golden-1-33-v0-custom-pr12"]);
    assert_eq!(
        versions(&out, "test-golden-1-33-v0-custom-pr12"),
        v("v0-custom.pr12", "v3", "v0-git.abc1234")
    );
}

/// Runs create on a broken stack: must fail with exit 3 and `message`, and the output must not exist.
fn assert_rejected(stack: &Path, extra: &[&str], code: i32, message: &str) {
    let out = stack.parent().unwrap().join("out");
    csctl()
        .arg("create")
        .args(extra)
        .arg("-o")
        .arg(&out)
        .arg(stack)
        .assert()
        .code(code)
        .stderr(contains(message));
    assert!(!out.exists(), "output written for a rejected stack");
}

#[test]
fn bad_input_missing_csctl_yaml() {
    let tmp = tempfile::tempdir().unwrap();
    let stack = golden_stack(&tmp.path().join("stack"));
    std::fs::remove_file(stack.join("csctl.yaml")).unwrap();
    assert_rejected(&stack, &[], 3, "no csctl.yaml (or csmctl.yaml)");
}

#[test]
fn bad_input_malformed_yaml() {
    let tmp = tempfile::tempdir().unwrap();
    let stack = golden_stack(&tmp.path().join("stack"));
    std::fs::write(
        stack.join("clusteraddon.yaml"),
        "apiVersion: x\naddonStages: [\n  - a: b\n",
    )
    .unwrap();
    assert_rejected(&stack, &[], 3, "clusteraddon.yaml:");
    assert_rejected(&stack, &[], 3, "malformed YAML");
}

#[test]
fn bad_input_dash_in_stack_name() {
    let tmp = tempfile::tempdir().unwrap();
    let stack = golden_stack(&tmp.path().join("stack"));
    let cfg = stack.join("csctl.yaml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("golden", "gold-en");
    std::fs::write(&cfg, text).unwrap();
    assert_rejected(
        &stack,
        &[],
        3,
        "csctl.yaml:4:21: error: config.clusterStackName",
    );
    assert_rejected(&stack, &[], 3, "no '-'");
}

#[test]
fn bad_input_bad_custom_version() {
    let tmp = tempfile::tempdir().unwrap();
    let stack = golden_stack(&tmp.path().join("stack"));
    let args = [
        "--mode",
        "custom",
        "--cluster-stack-version",
        "1.2.3",
        "--cluster-addon-version",
        "v1",
        "--node-image-version",
        "v1",
    ];
    assert_rejected(
        &stack,
        &args,
        3,
        "--cluster-stack-version: error: invalid version \"1.2.3\"",
    );
    assert_rejected(&stack, &["--mode", "custom"], 2, "--mode custom needs");
}

#[test]
fn bad_input_symlink_outside_the_stack() {
    // Not in a providers/<provider>/<name>/<maj>-<min> layout: links must stay inside the stack.
    let tmp = tempfile::tempdir().unwrap();
    let stack = golden_stack(&tmp.path().join("stack"));
    std::fs::write(tmp.path().join("secret.txt"), "do not ship\n").unwrap();
    std::os::unix::fs::symlink(
        "../../../secret.txt",
        stack.join("cluster-class/templates/x.yaml"),
    )
    .unwrap();
    assert_rejected(&stack, &[], 3, "symlink points outside the stack (to ");
}

/// `<tmp>/test/golden/1-33` (the golden stack) and `<tmp>/test/golden/1-34`: its own csctl.yaml and
/// cluster-class Chart.yaml, everything else symlinked to 1-33 (directories and files, relative links).
fn golden_family(tmp: &Path) -> (PathBuf, PathBuf) {
    let family = tmp.join("test/golden");
    let s33 = golden_stack(&family.join("1-33"));
    let s34 = family.join("1-34");
    std::fs::create_dir_all(s34.join("cluster-class")).unwrap();
    let config = std::fs::read_to_string(s33.join("csctl.yaml"))
        .unwrap()
        .replace("v1.33.4", "v1.34.1");
    assert!(config.contains("v1.34.1"));
    std::fs::write(s34.join("csctl.yaml"), config).unwrap();
    let chart = std::fs::read_to_string(s33.join("cluster-class/Chart.yaml"))
        .unwrap()
        .replace("1-33", "1-34");
    std::fs::write(s34.join("cluster-class/Chart.yaml"), chart).unwrap();
    let link = |target: &str, at: &str| std::os::unix::fs::symlink(target, s34.join(at)).unwrap();
    link("../1-33/cluster-addon", "cluster-addon");
    link("../1-33/clusteraddon.yaml", "clusteraddon.yaml");
    link("../1-33/node-images", "node-images");
    link(
        "../../1-33/cluster-class/templates",
        "cluster-class/templates",
    );
    link(
        "../../1-33/cluster-class/.helmignore",
        "cluster-class/.helmignore",
    );
    (s33, s34)
}

/// The release of one stack, file name → bytes.
fn release_of(stack: &Path, out: &Path) -> BTreeMap<String, Vec<u8>> {
    csctl()
        .args(["create", "-o"])
        .arg(out)
        .arg(stack)
        .assert()
        .success();
    let dirs = subdirs(out);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    read_flat(&out.join(&dirs[0]))
}

#[test]
fn symlinks_between_minors_of_a_stack_family_build_the_same_release_as_copies() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, s34) = golden_family(tmp.path());
    csctl()
        .arg("validate")
        .arg(&s34)
        .assert()
        .success()
        .stdout(contains("0 error(s)"));
    let linked = release_of(&s34, &tmp.path().join("out-linked"));
    // The same stack with every link replaced by a copy of its target (copy_tree follows links).
    let copy = tmp.path().join("copy/test/golden/1-34");
    copy_tree(&s34, &copy);
    assert!(
        !std::fs::symlink_metadata(copy.join("cluster-addon"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let copied = release_of(&copy, &tmp.path().join("out-copied"));
    let digests = |r: &BTreeMap<String, Vec<u8>>| -> BTreeMap<String, String> {
        r.iter().map(|(k, v)| (k.clone(), sha256(v))).collect()
    };
    assert_eq!(digests(&linked), digests(&copied));
    assert!(linked.contains_key("test-golden-1-34-cluster-class-v1.tgz"));
    // Links are stored as the regular files they lead to, under the link's name.
    let class = tgz_entries(&linked["test-golden-1-34-cluster-class-v1.tgz"]);
    let kcp = class
        .iter()
        .find(|(p, _, _)| p == "test-golden-1-34-cluster-class/templates/kcp.yaml")
        .unwrap_or_else(|| panic!("{:?}", class.iter().map(|e| &e.0).collect::<Vec<_>>()));
    assert_eq!(
        kcp.2,
        std::fs::read(
            tmp.path()
                .join("test/golden/1-33/cluster-class/templates/kcp.yaml")
        )
        .unwrap()
    );
    assert_eq!(kcp.1, 0o644);
}

#[test]
fn stable_change_to_a_shared_file_releases_every_minor_that_links_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (s33, s34) = golden_family(tmp.path());
    let out = tmp.path().join("out");
    csctl()
        .args(["create", "-o"])
        .arg(&out)
        .arg(&s33)
        .arg(&s34)
        .assert()
        .success();
    assert_eq!(versions(&out, "test-golden-1-34-v1"), v("v1", "v1", "v1"));
    // 1-34/cluster-addon is a link to 1-33/cluster-addon: an addon change there is a change for both.
    std::fs::write(s33.join("cluster-addon/cni/values.yaml"), "mtu: 9000\n").unwrap();
    csctl()
        .args(["create", "-o"])
        .arg(&out)
        .arg(&s33)
        .arg(&s34)
        .assert()
        .success();
    assert_eq!(versions(&out, "test-golden-1-33-v2"), v("v2", "v2", "v1"));
    assert_eq!(versions(&out, "test-golden-1-34-v2"), v("v2", "v2", "v1"));
    let addon = |minor: &str| {
        std::fs::read(out.join(format!(
            "test-golden-{minor}-v2/test-golden-{minor}-cluster-addon-v2.tgz"
        )))
        .unwrap()
    };
    assert_eq!(addon("1-33"), addon("1-34"), "the same addon sources");
}

#[test]
fn bad_input_symlink_outside_the_stack_family() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, s34) = golden_family(tmp.path());
    std::fs::write(tmp.path().join("test/secret.txt"), "do not ship\n").unwrap();
    // From 1-34/cluster-class/x.yaml: ../../ is the family, ../../../ is outside it.
    std::os::unix::fs::symlink("../../../secret.txt", s34.join("cluster-class/x.yaml")).unwrap();
    assert_rejected(&s34, &[], 3, "symlink points outside the stack family");
    assert_rejected(&s34, &[], 3, "secret.txt");
}

#[test]
fn bad_input_absolute_symlink_even_inside_the_family() {
    let tmp = tempfile::tempdir().unwrap();
    let (s33, s34) = golden_family(tmp.path());
    std::os::unix::fs::symlink(
        s33.join("cluster-class/templates/kcp.yaml"),
        s34.join("cluster-class/kcp-copy.yaml"),
    )
    .unwrap();
    assert_rejected(&s34, &[], 3, "is absolute: use a relative path");
}

#[test]
fn bad_input_symlink_loops() {
    let tmp = tempfile::tempdir().unwrap();
    let (s33, s34) = golden_family(tmp.path());
    // A link to a directory that contains it: 1-34/cluster-class/up -> .. (1-34 itself).
    std::os::unix::fs::symlink("..", s34.join("cluster-class/up")).unwrap();
    assert_rejected(&s34, &[], 3, "cluster-class/up: error: symlink loop");
    std::fs::remove_file(s34.join("cluster-class/up")).unwrap();
    // A link to the family: it contains the stack being read.
    std::os::unix::fs::symlink("../..", s34.join("cluster-class/family")).unwrap();
    assert_rejected(&s34, &[], 3, "symlink loop");
    std::fs::remove_file(s34.join("cluster-class/family")).unwrap();
    // Two links leading to each other.
    std::os::unix::fs::symlink("b.yaml", s34.join("cluster-class/a.yaml")).unwrap();
    std::os::unix::fs::symlink("a.yaml", s34.join("cluster-class/b.yaml")).unwrap();
    assert_rejected(&s34, &[], 3, "symlink loop: the link leads back to itself");
    std::fs::remove_file(s34.join("cluster-class/a.yaml")).unwrap();
    std::fs::remove_file(s34.join("cluster-class/b.yaml")).unwrap();
    // Two directories linking into each other across the minors (1-34/x -> 1-33/y, 1-33/y/z -> 1-34/x).
    std::fs::create_dir_all(s33.join("node-images/y")).unwrap();
    std::os::unix::fs::symlink("../1-33/node-images/y", s34.join("x")).unwrap();
    std::os::unix::fs::symlink("../../../1-34/x", s33.join("node-images/y/z")).unwrap();
    assert_rejected(&s34, &[], 3, "symlink loop");
    // Still a working stack once the links are gone.
    std::fs::remove_file(s34.join("x")).unwrap();
    std::fs::remove_file(s33.join("node-images/y/z")).unwrap();
    std::fs::remove_dir(s33.join("node-images/y")).unwrap();
    release_of(&s34, &tmp.path().join("ok"));
}

#[test]
fn symlink_inside_the_stack_is_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let stack = golden_stack(&tmp.path().join("stack"));
    std::os::unix::fs::symlink(
        "../../cluster-addon/cni/values.yaml",
        stack.join("cluster-class/templates/values-link.txt"),
    )
    .unwrap();
    let out = tmp.path().join("out");
    csctl()
        .args(["create", "-o"])
        .arg(&out)
        .arg(&stack)
        .assert()
        .success();
}

#[test]
fn bad_input_unreadable_file() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let stack = golden_stack(&tmp.path().join("stack"));
    for e in walkdir::WalkDir::new(&stack) {
        let e = e.unwrap();
        let mode = if e.file_type().is_dir() { 0o777 } else { 0o644 };
        std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let secret = stack.join("cluster-class/templates/kcp.yaml");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = tmp.path().join("out");
    let bin = assert_cmd::cargo::cargo_bin("csctl");
    // root reads everything: run as nobody then (setpriv, util-linux).
    let is_root = std::fs::metadata("/proc/self").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    let mut cmd = if is_root.unwrap_or(false) {
        // A copy in the world-readable temp dir: nobody may not be able to reach target/ (e.g. under /root).
        let copy = tmp.path().join("csctl");
        std::fs::copy(&bin, &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = assert_cmd::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&copy);
        c
    } else {
        assert_cmd::Command::new(&bin)
    };
    cmd.args(["create", "-o"])
        .arg(&out)
        .arg(&stack)
        .assert()
        .code(3)
        .stderr(
            contains("kcp.yaml: error: cannot read the file").and(contains("ermission denied")),
        );
    assert!(!out.exists());
}

#[test]
fn bad_input_fifo_is_not_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let stack = golden_stack(&tmp.path().join("stack"));
    let fifo = stack.join("cluster-class/templates/pipe.yaml");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(ok.success());
    assert_rejected(&stack, &[], 3, "not a regular file");
}

#[test]
fn existing_different_release_is_not_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let stack = golden_stack(&tmp.path().join("stack"));
    let out = tmp.path().join("out");
    csctl()
        .args(["create", "--mode", "hash", "-o"])
        .arg(&out)
        .arg(&stack)
        .assert()
        .success();
    // Same input again: identical release, exit 0.
    csctl()
        .args(["create", "--mode", "hash", "-o"])
        .arg(&out)
        .arg(&stack)
        .assert()
        .success()
        .stdout(contains("already up to date"));
    let rel = subdirs(&out).remove(0);
    std::fs::write(out.join(&rel).join("metadata.yaml"), "tampered\n").unwrap();
    csctl()
        .args(["create", "--mode", "hash", "-o"])
        .arg(&out)
        .arg(&stack)
        .assert()
        .code(1)
        .stderr(contains("already exists with different content"));
    assert_eq!(
        std::fs::read_to_string(out.join(&rel).join("metadata.yaml")).unwrap(),
        "tampered\n"
    );
    // No temporary directories left behind.
    assert_eq!(subdirs(&out), [rel]);
}

/// `--publish` without an OCI `--remote` and without `$OCI_REPOSITORY` goes to the local OCI layout
/// (registry publishing is covered in `oci_registry.rs`).
#[test]
fn publish_without_registry_goes_to_the_local_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let stack = golden_stack(&tmp.path().join("stack"));
    let layout = tmp.path().join("layout");
    let out = tmp.path().join("out");
    csctl()
        .env_remove("OCI_REPOSITORY")
        .env("CSCTL_OCI_LAYOUT", &layout)
        .env("XDG_STATE_HOME", tmp.path().join("state"))
        .args(["create", "--mode", "hash", "--publish", "-o"])
        .arg(&out)
        .arg(&stack)
        .assert()
        .success()
        .stdout(contains("published oci:"));
    let index = std::fs::read_to_string(layout.join("index.json")).unwrap();
    let release = subdirs(&out).remove(0);
    assert!(
        index.contains(&format!(
            "\"org.opencontainers.image.ref.name\":\"{release}\""
        )),
        "{index}"
    );
}

#[test]
fn stable_after_upstream_releases_without_hashes_bumps_everything() {
    // The upstream fixture releases v1..v3 (old convention, no hashes.json) as the remote: the latest is v3
    // (stack v3, addon v2, node image v2); without hashes every component counts as changed.
    let fixtures = fixtures_dir();
    let tmp = tempfile::tempdir().unwrap();
    let stack = tmp.path().join("docker-ferrol-1-27");
    copy_tree(&fixtures.join("stacks/docker-ferrol-1-27"), &stack);
    let out = tmp.path().join("out");
    csctl()
        .args(["create", "--remote"])
        .arg(fixtures.join("releases"))
        .arg("-o")
        .arg(&out)
        .arg(&stack)
        .assert()
        .success()
        .stdout(contains("after docker-ferrol-1-27-v3"));
    assert_eq!(subdirs(&out), ["docker-ferrol-1-27-v4"]);
    assert_eq!(versions(&out, "docker-ferrol-1-27-v4"), v("v4", "v3", "v3"));
}
