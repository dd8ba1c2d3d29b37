//! The Beowulf HPC stack (`providers/beowulf/hpc/`): it validates without warnings, every addon renders with
//! csctl's renderer and every object is checked (a broken manifest fails with its file and line), the images
//! are pinned by digest, the per-cluster values (`overwrite.yaml`) rendered from the example Cluster give
//! valid manifests with the example's addresses, and the examples match the CRDs and the ClusterClass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use csctl::crds::{CrdSet, Lookup};
use csctl::render::ReleaseInfo;
use csctl::substitute::{ReleaseVersions, set_chart_version, substitute};
use metadata_schema::Version;
use metadata_schema::yaml;
use predicates::prelude::PredicateBooleanExt;
use predicates::str::contains;
use serde_json::Value;

/// Images without a digest: the project's SLURM image, which users build (`images/slurm`) and push to their
/// registry, then pin by the digest their build records — the project publishes none to pin. The test fails
/// if it gets pinned (remove it here) or if any other image is not pinned.
const UNPINNED: [&str; 1] = ["ghcr.io/beowulf-hpc/slurm:1.0.0"];

fn hpc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../providers/beowulf/hpc")
}

fn stacks() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(hpc_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("csctl.yaml").is_file())
        .collect();
    v.sort();
    assert!(!v.is_empty());
    v
}

fn versions() -> ReleaseVersions {
    ReleaseVersions {
        cluster_stack: Version::stable(1),
        cluster_addon: Version::stable(1),
        node_image: Version::stable(1),
    }
}

fn yaml_file(path: &Path) -> Value {
    yaml::parse_one(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
        .to_json()
}

/// Renders the chart in `dir` as csctl packages it (markers substituted, version set), with `values`
/// instead of its values.yaml when given. Returns every rendered object.
fn render(dir: &Path, values: Option<&Value>, release: &str, namespace: &str) -> Vec<Value> {
    // Links followed: 1-34 shares the templates and addons of 1-33 through symlinks, as csctl packages them.
    let mut files: BTreeMap<String, Vec<u8>> = chart_files(dir)
        .into_iter()
        .map(|(rel, data)| (rel, substitute(&data, &versions())))
        .collect();
    let chart = set_chart_version(&files["Chart.yaml"], "v1");
    files.insert("Chart.yaml".into(), chart);
    if let Some(v) = values {
        files.insert("values.yaml".into(), serde_json::to_vec(v).unwrap());
    }
    let chart = chart_of(&files);
    let info = ReleaseInfo {
        name: release.into(),
        namespace: namespace.into(),
        kube_version: "v1.33.4".into(),
    };
    let rendered = csctl::render::render_chart(&chart, &info)
        .unwrap_or_else(|e| panic!("{} does not render: {e:?}", dir.display()));
    rendered
        .iter()
        .flat_map(|(tpl, text)| {
            yaml::parse_documents(text)
                .unwrap_or_else(|e| panic!("{tpl}: {e:?}\n{text}"))
                .into_iter()
                .map(|d| d.to_json())
                .filter(|j| !j.is_null())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Stage subcharts in clusteraddon.yaml order (both hooks), without repeats.
fn stages(stack: &Path) -> Vec<String> {
    let cfg = yaml_file(&stack.join("clusteraddon.yaml"));
    let mut out: Vec<String> = Vec::new();
    for hook in cfg["addonStages"].as_object().unwrap().values() {
        for s in hook.as_array().unwrap() {
            let n = s["name"].as_str().unwrap().to_string();
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

fn images(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                if k == "image"
                    && let Some(s) = c.as_str()
                {
                    out.push(s.to_string());
                }
                images(c, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|c| images(c, out)),
        _ => {}
    }
}

fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// What the cluster-stack-operator does with `overwrite.yaml`: render it with the Cluster, take `values:`.
fn overwrite_values(chart: &Path, cluster: &Value) -> Option<Value> {
    let text = std::fs::read_to_string(chart.join("overwrite.yaml")).ok()?;
    let out = csctl::render::render_str(&text, &serde_json::json!({ "Cluster": cluster }))
        .unwrap_or_else(|e| panic!("{}/overwrite.yaml: {e}", chart.display()));
    let doc = yaml::parse_one(&out)
        .unwrap_or_else(|e| panic!("{}/overwrite.yaml renders {out:?}: {e:?}", chart.display()))
        .to_json();
    let values = doc["values"].as_str().unwrap_or("");
    Some(
        yaml::parse_one(values)
            .map(|n| n.to_json())
            .unwrap_or_else(|e| panic!("values of {}: {values:?}: {e:?}", chart.display())),
    )
}

fn text_of(objects: &[Value], kind: &str, name: &str, key: &str) -> String {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))["data"][key]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn hpc_stacks_validate_without_warnings() {
    let mut c = csctl();
    c.arg("validate");
    for s in stacks() {
        c.arg(s);
    }
    c.assert()
        .success()
        .stdout(contains("0 error(s), 0 warning(s)"));
}

#[test]
fn every_stage_renders_and_every_image_is_pinned_by_digest() {
    for stack in stacks() {
        let names = stages(&stack);
        for want in ["cni", "metallb", "ldap", "slurm", "cvmfs"] {
            assert!(
                names.iter().any(|n| n == want),
                "no {want} stage: {names:?}"
            );
        }
        let mut all = Vec::new();
        for n in &names {
            let objects = render(
                &stack.join("cluster-addon").join(n),
                None,
                "cluster-addon",
                "kube-system",
            );
            assert!(!objects.is_empty(), "stage {n} renders nothing");
            for o in &objects {
                images(o, &mut all);
            }
        }
        all.sort();
        all.dedup();
        let digest = regex_like_digest;
        let unpinned: Vec<&String> = all.iter().filter(|i| !digest(i)).collect();
        assert_eq!(
            unpinned,
            UNPINNED.iter().collect::<Vec<_>>(),
            "images without a sha256 digest (all: {all:?})"
        );
        // The kinds the issue asks for are there.
        let kinds: Vec<String> = names
            .iter()
            .flat_map(|n| {
                render(
                    &stack.join("cluster-addon").join(n),
                    None,
                    "cluster-addon",
                    "kube-system",
                )
            })
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        for want in [
            "DaemonSet/kube-flannel-ds",
            "CustomResourceDefinition/ipaddresspools.metallb.io",
            "Deployment/controller",
            "DaemonSet/speaker",
            "IPAddressPool/hpc",
            "StatefulSet/ldap",
            "Job/ldap-seed-v1",
            "StatefulSet/slurmctld",
            "Deployment/slurmdbd",
            "StatefulSet/mariadb",
            "Deployment/login",
            "ConfigMap/slurm-config",
            "StatefulSet/cvmfs-proxy",
            "ConfigMap/cvmfs-client",
        ] {
            assert!(kinds.iter().any(|k| k == want), "{want} missing: {kinds:?}");
        }
    }
}

/// `name[:tag]@sha256:<64 hex>`
/// slurmctld, slurmdbd and the login pod run one image, the one `images/slurm` builds: its repository, and the
/// recipe's version as tag (a recipe change that bumps the version must reach the stack). That image and the
/// node image take SLURM from the same package source (`images/package-sources.sh`): both build scripts
/// read it, and neither names a SLURM source of its own.
#[test]
fn slurm_runs_the_image_built_from_the_node_images_package_source() {
    let images_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images");
    let build = std::fs::read_to_string(images_dir.join("slurm/build.sh")).unwrap();
    let version = build
        .lines()
        .find_map(|l| l.strip_prefix("IMAGE_VERSION=${IMAGE_VERSION:-"))
        .and_then(|v| v.strip_suffix('}'))
        .expect("images/slurm/build.sh sets no default IMAGE_VERSION");
    let values = yaml_file(&hpc_dir().join("1-33/cluster-addon/slurm/values.yaml"));
    for c in ["slurmctld", "slurmdbd", "login"] {
        let image = &values["images"][c];
        assert_eq!(
            image["repository"], "ghcr.io/beowulf-hpc/slurm",
            "{c}: {image}"
        );
        assert_eq!(
            image["tag"], version,
            "{c}: the tag is not images/slurm's version"
        );
    }
    for script in ["slurm/build.sh", "hpc-node/build.sh"] {
        let text = std::fs::read_to_string(images_dir.join(script)).unwrap();
        assert!(
            text.contains(". \"$here/../package-sources.sh\""),
            "{script} does not read images/package-sources.sh"
        );
        assert!(
            !text.contains("SLURM_APT_SUITE=") && !text.contains("SLURM_APT_URL="),
            "{script} names a SLURM source of its own"
        );
    }
}

fn regex_like_digest(image: &str) -> bool {
    image
        .split_once("@sha256:")
        .is_some_and(|(_, h)| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
}

#[test]
fn seed_ldif_and_slurm_conf_come_from_values() {
    let stack = &stacks()[0];
    let ldap = render(
        &stack.join("cluster-addon/ldap"),
        None,
        "cluster-addon",
        "kube-system",
    );
    let ldif = text_of(&ldap, "ConfigMap", "ldap-seed", "seed.ldif");
    assert!(
        ldif.contains("dn: uid=alice,ou=people,dc=hpc,dc=cluster\n"),
        "{ldif}"
    );
    assert!(
        ldif.contains("dn: cn=hpc-admins,ou=groups,dc=hpc,dc=cluster\n"),
        "{ldif}"
    );
    // The nodes' sssd binds anonymously: both organizational units let anyone read POSIX identities.
    for ou in ["people", "groups"] {
        let entry = ldif
            .split(&format!("dn: ou={ou},dc=hpc,dc=cluster\n"))
            .nth(1)
            .unwrap();
        let entry = entry.split("\n\n").next().unwrap();
        assert!(
            entry.contains("aci: (targetattr=") && entry.contains("userdn = \"ldap:///anyone\""),
            "{entry}"
        );
    }
    // alice is in both groups, bob only in hpc-users.
    let admins = ldif.split("dn: cn=hpc-admins").nth(1).unwrap();
    assert!(
        admins.contains("memberUid: alice") && !admins.contains("memberUid: bob"),
        "{admins}"
    );
    let slurm = render(
        &stack.join("cluster-addon/slurm"),
        None,
        "cluster-addon",
        "kube-system",
    );
    let conf = text_of(&slurm, "ConfigMap", "slurm-config", "slurm.conf");
    for line in [
        "AuthType=auth/munge",
        "AccountingStorageType=accounting_storage/slurmdbd",
        "AccountingStorageHost=slurmdbd",
        // The nodes' addresses (NodeAddr): slurmctld reaches them without DNS.
        "NodeName=compute-[0-1] NodeAddr=10.10.0.[30-31] CPUs=4 RealMemory=7000",
        "PartitionName=compute Nodes=compute-[0-1] Default=YES MaxTime=INFINITE State=UP",
    ] {
        assert!(
            conf.lines().any(|l| l == line),
            "{line:?} not in slurm.conf:\n{conf}"
        );
    }
    let dbd = text_of(&slurm, "ConfigMap", "slurm-config", "slurmdbd.conf.in");
    assert!(dbd.contains("StorageHost=mariadb\n") && dbd.contains("StoragePass=@DB_PASSWORD@\n"));
    // No secret is rendered from empty values (they must exist, or be given per cluster).
    assert!(
        !slurm.iter().any(|o| o["kind"] == "Secret"),
        "secrets rendered from empty values"
    );
    // With a munge key in the values, the Secret carries it.
    let mut values = yaml_file(&stack.join("cluster-addon/slurm/values.yaml"));
    values["munge"]["key"] = "a2V5".into();
    let slurm = render(
        &stack.join("cluster-addon/slurm"),
        Some(&values),
        "cluster-addon",
        "kube-system",
    );
    let secret = slurm
        .iter()
        .find(|o| o["kind"] == "Secret" && o["metadata"]["name"] == "munge-key")
        .expect("munge Secret");
    assert_eq!(secret["data"]["munge.key"], "a2V5");
}

#[test]
fn overwrite_values_from_the_example_cluster_render_valid_manifests() {
    for stack in stacks() {
        let cluster = yaml_file(&stack.join("examples/cluster.yaml"));
        let tmp = tempfile::tempdir().unwrap();
        let copy = tmp.path().join(stack.file_name().unwrap());
        copy_tree(&stack, &copy);
        let mut rendered: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for n in stages(&stack) {
            let chart = copy.join("cluster-addon").join(&n);
            let Some(over) = overwrite_values(&chart, &cluster) else {
                continue;
            };
            let mut values = yaml_file(&chart.join("values.yaml"));
            merge(&mut values, &over);
            std::fs::write(
                chart.join("values.yaml"),
                serde_json::to_vec_pretty(&values).unwrap(),
            )
            .unwrap();
            rendered.insert(
                n.clone(),
                render(&chart, None, "cluster-addon", "kube-system"),
            );
        }
        // The per-cluster values reach the manifests...
        let conf = text_of(
            &rendered["slurm"],
            "ConfigMap",
            "slurm-config",
            "slurm.conf",
        );
        assert!(conf.contains("ClusterName=hpc1\n"), "{conf}");
        assert!(
            conf.contains("SlurmctldHost=slurmctld-0(10.10.0.202)\n"),
            "{conf}"
        );
        assert!(
            conf.contains(
                "PartitionName=debug Nodes=compute-0 Default=NO MaxTime=01:00:00 State=UP\n"
            ),
            "{conf}"
        );
        let pool = rendered["metallb-config"]
            .iter()
            .find(|o| o["kind"] == "IPAddressPool")
            .unwrap();
        assert_eq!(
            pool["spec"]["addresses"],
            serde_json::json!(["10.10.0.200-10.10.0.250"])
        );
        let ldap = rendered["ldap"]
            .iter()
            .find(|o| o["kind"] == "Service")
            .unwrap();
        assert_eq!(
            ldap["metadata"]["annotations"]["metallb.io/loadBalancerIPs"],
            "10.10.0.201"
        );
        let client = text_of(
            &rendered["cvmfs"],
            "ConfigMap",
            "cvmfs-client",
            "default.local",
        );
        assert!(
            client.contains("CVMFS_HTTP_PROXY=\"http://10.10.0.203:3128;DIRECT\""),
            "{client}"
        );
        // ...and what they give still validates.
        csctl()
            .arg("validate")
            .arg(&copy)
            .assert()
            .success()
            .stdout(contains("0 error(s), 0 warning(s)"));
        // The compute nodes' user-data points at the same services.
        let user_data =
            yaml_file(&stack.join("examples/compute-user-data.yaml"))["stringData"]["user-data"]
                .as_str()
                .unwrap()
                .to_string();
        for want in [
            "--conf-server 10.10.0.202:6817",
            "ldap_uri = ldap://10.10.0.201",
            "http://10.10.0.203:3128",
        ] {
            assert!(
                user_data.contains(want),
                "{want} not in the compute user-data"
            );
        }
        assert!(user_data.starts_with("#cloud-config\n"));
    }
}

#[test]
fn examples_match_the_crds_and_the_cluster_class() {
    let capi = std::env::var_os("CAPI_CRDS_DIR").unwrap_or_else(|| {
        panic!("CAPI_CRDS_DIR is not set: point it at the Cluster API v1.14.0 CRDs (README, \"Test data\")")
    });
    let mut crds = CrdSet::builtin();
    crds.add_path(Path::new(&capi)).unwrap();
    for stack in stacks() {
        let class_objects = render(
            &stack.join("cluster-class"),
            None,
            &stack_prefix(&stack),
            "hpc",
        );
        let class = class_objects
            .iter()
            .find(|o| o["kind"] == "ClusterClass")
            .unwrap();
        let image = class_objects
            .iter()
            .find(|o| o["kind"] == "BeowulfImage")
            .unwrap();
        let mut objects = Vec::new();
        for e in std::fs::read_dir(stack.join("examples")).unwrap() {
            let path = e.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for doc in yaml::parse_documents(&text).unwrap() {
                let j = doc.to_json();
                let Lookup::Schema(s) = crds.lookup(
                    j["apiVersion"].as_str().unwrap(),
                    j["kind"].as_str().unwrap(),
                ) else {
                    panic!("{}: no schema for {}", path.display(), j["kind"]);
                };
                let problems = s.check(&doc, &path.display().to_string());
                assert!(problems.is_empty(), "{problems:?}");
                objects.push(j);
            }
        }
        let cluster = objects.iter().find(|o| o["kind"] == "Cluster").unwrap();
        assert_eq!(
            cluster["spec"]["topology"]["classRef"]["name"],
            class["metadata"]["name"]
        );
        // Every variable the example sets is declared, and its value fits the declared schema.
        for v in cluster["spec"]["topology"]["variables"].as_array().unwrap() {
            let name = v["name"].as_str().unwrap();
            let decl = class["spec"]["variables"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["name"] == name)
                .unwrap_or_else(|| panic!("variable {name} is not declared by the ClusterClass"));
            let schema =
                metadata_schema::validate::Schema::new(decl["schema"]["openAPIV3Schema"].clone())
                    .unwrap();
            let node = yaml::parse_one(&serde_json::to_string(&v["value"]).unwrap()).unwrap();
            assert!(
                schema.check(&node, name).is_empty(),
                "variable {name}: {:?}",
                schema.check(&node, name)
            );
        }
        // Variable defaults fit their own schemas.
        for d in class["spec"]["variables"].as_array().unwrap() {
            let s = &d["schema"]["openAPIV3Schema"];
            let schema = metadata_schema::validate::Schema::new(s.clone()).unwrap();
            let node = yaml::parse_one(&serde_json::to_string(&s["default"]).unwrap()).unwrap();
            assert!(
                schema.check(&node, "default").is_empty(),
                "default of {}",
                d["name"]
            );
        }
        // Compute hosts boot the stack's image with user-data that exists.
        for h in objects
            .iter()
            .filter(|o| o["kind"] == "BeowulfHost" && o["spec"]["image"].is_object())
        {
            assert_eq!(h["spec"]["image"]["name"], image["metadata"]["name"]);
            let secret = h["spec"]["userData"]["name"].as_str().unwrap();
            assert!(
                objects
                    .iter()
                    .any(|o| o["kind"] == "Secret" && o["metadata"]["name"] == secret),
                "user-data Secret {secret} is not in the examples"
            );
        }
    }
}

#[test]
fn node_image_reference_is_one_image_by_url_and_checksum() {
    for stack in stacks() {
        let declared = yaml_file(&stack.join("node-images/hpc-node.yaml"));
        let values = yaml_file(&stack.join("cluster-class/values.yaml"))["nodeImage"].clone();
        assert_eq!(values["name"], declared["name"]);
        assert_eq!(values["version"], declared["version"]);
        assert_eq!(values["files"]["kernel"], declared["files"]["kernel"]);
        assert_eq!(values["files"]["rootfs"], declared["files"]["rootfs"]);
        // With checksums set, the BeowulfImage carries URL and SHA-256 of each file.
        let mut v = yaml_file(&stack.join("cluster-class/values.yaml"));
        v["nodeImage"]["sha256"]["rootfs"] = "ab".repeat(32).into();
        let objects = render(
            &stack.join("cluster-class"),
            Some(&v),
            &stack_prefix(&stack),
            "hpc",
        );
        let image = objects
            .iter()
            .find(|o| o["kind"] == "BeowulfImage")
            .unwrap();
        let base = format!(
            "http://boot.beowulf.internal:8080/images/hpc-node/{}",
            declared["version"].as_str().unwrap()
        );
        assert_eq!(
            image["spec"]["rootfs"]["url"],
            format!("{base}/rootfs.squashfs")
        );
        assert_eq!(image["spec"]["rootfs"]["sha256"], "ab".repeat(32));
        assert_eq!(image["spec"]["kernel"]["url"], format!("{base}/vmlinuz"));
        assert!(
            image["spec"]["kernel"].get("sha256").is_none(),
            "empty checksum rendered"
        );
        // The command line images/hpc-node needs (its README): live root over HTTP, NoCloud over HTTP.
        let cmdline = image["spec"]["cmdline"].as_str().unwrap();
        for want in [
            "root=live:{{ rootfs_url }}",
            "ds=nocloud-net;s={{ nocloud_url }}",
            "rd.neednet=1",
            "BOOTIF={{ bootif }}",
        ] {
            assert!(cmdline.contains(want), "{want} not in {cmdline}");
        }
        // Machines boot it by default.
        let class = objects
            .iter()
            .find(|o| o["kind"] == "ClusterClass")
            .unwrap();
        let var = class["spec"]["variables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "nodeImage")
            .unwrap();
        assert_eq!(
            var["schema"]["openAPIV3Schema"]["default"],
            image["metadata"]["name"]
        );
        // The kubelet's provider ID comes from the NoCloud meta-data.
        let kct = objects
            .iter()
            .find(|o| o["kind"] == "KubeadmConfigTemplate")
            .unwrap();
        assert_eq!(
            kct["spec"]["template"]["spec"]["joinConfiguration"]["nodeRegistration"]["kubeletExtraArgs"]
                [0],
            serde_json::json!({"name": "provider-id", "value": "{{ ds.meta_data.provider_id }}"})
        );
    }
}

/// A scratch copy of the 1-33 stack to break on purpose (the directory lives as long as the TempDir).
fn scratch_copy_of_1_33() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let stack = tmp.path().join("1-33");
    copy_tree(&stacks()[0], &stack);
    (tmp, stack)
}

/// Replaces the first `from` in `stack/rel` with `to`; `from` must be there (so the test breaks what it means to).
fn edit_once(stack: &Path, rel: &str, from: &str, to: &str) {
    let p = stack.join(rel);
    let t = std::fs::read_to_string(&p).unwrap();
    assert!(t.contains(from), "{rel} lacks {from:?}");
    std::fs::write(&p, t.replacen(from, to, 1)).unwrap();
}

#[test]
fn broken_addon_manifests_fail_with_their_file_and_line() {
    let (_tmp, stack) = scratch_copy_of_1_33();
    let edit = |rel: &str, from: &str, to: &str| edit_once(&stack, rel, from, to);
    // A typo in a core kind, a wrong type in a CR of a CRD the stack ships, an unknown kind, bad YAML.
    edit(
        "cluster-addon/slurm/templates/slurmctld.yaml",
        "serviceName: slurmctld",
        "serviceNam: slurmctld",
    );
    edit(
        "cluster-addon/metallb-config/templates/pool.yaml",
        "autoAssign: true",
        "autoAssign: sometimes",
    );
    edit(
        "cluster-addon/cvmfs/templates/proxy.yaml",
        "kind: StatefulSet",
        "kind: StatefullSet",
    );
    edit(
        "cluster-addon/cni/templates/flannel.yaml",
        "  name: flannel\n  namespace: kube-flannel",
        "  name: flannel\n namespace: kube-flannel",
    );
    let s = stack.display().to_string();
    csctl()
        .arg("validate")
        .arg(&stack)
        .assert()
        .code(3)
        .stdout(
            // An unknown field is reported at its key, at the template's line.
            contains(format!("{s}/cluster-addon/slurm/templates/slurmctld.yaml:25:3: error: StatefulSet slurmctld: spec: Additional properties are not allowed ('serviceNam' was unexpected)"))
                .and(contains(format!("{s}/cluster-addon/metallb-config/templates/pool.yaml:9:15: error: IPAddressPool hpc: spec.autoAssign: \"sometimes\" is not of type \"boolean\"")))
                .and(contains(format!("{s}/cluster-addon/cvmfs/templates/proxy.yaml:57:7: error: unknown kind StatefullSet in apps/v1")))
                .and(contains(format!("{s}/cluster-addon/cni/templates/flannel.yaml (rendered):12:2: error: renders to malformed YAML")))
                .and(contains("4 error(s)")),
        );
}

/// RFC 6902 `add`/`replace` on a JSON pointer (with `-` for appending), what CAPI's topology controller does
/// with a ClusterClass's jsonPatches.
fn json_patch(doc: &mut Value, op: &str, path: &str, value: Value) {
    let tokens: Vec<String> = path
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    let (last, parents) = tokens.split_last().unwrap();
    let mut at = doc;
    for t in parents {
        at = match at {
            Value::Object(m) => m.get_mut(t).unwrap_or_else(|| panic!("{path}: no {t}")),
            Value::Array(a) => &mut a[t.parse::<usize>().unwrap()],
            _ => panic!("{path}: {t} is not in a container"),
        };
    }
    match (at, op) {
        (Value::Array(a), "add") if last == "-" => a.push(value),
        (Value::Array(a), "add") => a.insert(last.parse().unwrap(), value),
        (Value::Array(a), "replace") => a[last.parse::<usize>().unwrap()] = value,
        (Value::Object(m), "add") => {
            m.insert(last.clone(), value);
        }
        (Value::Object(m), "replace") => {
            assert!(m.contains_key(last), "{path}: replace of a missing member");
            m.insert(last.clone(), value);
        }
        (_, op) => panic!("{path}: cannot {op}"),
    }
}

/// Applies the ClusterClass's patches to its templates with `vars` (declared defaults, overridden by the
/// Cluster's values) and returns the patched templates by kind and name.
fn apply_class_patches(objects: &[Value], cluster_vars: &[Value]) -> BTreeMap<String, Value> {
    let class = objects
        .iter()
        .find(|o| o["kind"] == "ClusterClass")
        .unwrap();
    let mut vars = serde_json::Map::new();
    for d in class["spec"]["variables"].as_array().unwrap() {
        vars.insert(
            d["name"].as_str().unwrap().into(),
            d["schema"]["openAPIV3Schema"]["default"].clone(),
        );
    }
    for v in cluster_vars {
        vars.insert(v["name"].as_str().unwrap().into(), v["value"].clone());
    }
    let vars = Value::Object(vars);
    let mut templates: BTreeMap<String, Value> = objects
        .iter()
        .filter(|o| o["kind"] != "ClusterClass")
        .map(|o| {
            (
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                ),
                o.clone(),
            )
        })
        .collect();
    let spec = &class["spec"];
    let name_of = |r: &Value| {
        format!(
            "{}/{}",
            r["kind"].as_str().unwrap(),
            r["name"].as_str().unwrap()
        )
    };
    for patch in spec["patches"].as_array().unwrap() {
        if let Some(cond) = patch["enabledIf"].as_str() {
            let out = csctl::render::render_str(cond, &vars).unwrap();
            if out.trim() != "true" {
                continue;
            }
        }
        for def in patch["definitions"].as_array().unwrap() {
            let sel = &def["selector"];
            let kind = sel["kind"].as_str().unwrap();
            let m = &sel["matchResources"];
            let mut targets = Vec::new();
            if m["infrastructureCluster"] == true {
                targets.push(name_of(&spec["infrastructure"]["templateRef"]));
            }
            if m["controlPlane"] == true {
                targets.push(name_of(&spec["controlPlane"]["templateRef"]));
                targets.push(name_of(
                    &spec["controlPlane"]["machineInfrastructure"]["templateRef"],
                ));
            }
            for class_name in m["machineDeploymentClass"]["names"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let md = spec["workers"]["machineDeployments"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|md| md["class"] == *class_name)
                    .unwrap();
                targets.push(name_of(&md["bootstrap"]["templateRef"]));
                targets.push(name_of(&md["infrastructure"]["templateRef"]));
            }
            let targets: Vec<String> = targets
                .into_iter()
                .filter(|t| t.starts_with(&format!("{kind}/")))
                .collect();
            assert!(
                !targets.is_empty(),
                "patch {} selects nothing",
                patch["name"]
            );
            for t in targets {
                for jp in def["jsonPatches"].as_array().unwrap() {
                    let value = if let Some(v) = jp.get("value") {
                        v.clone()
                    } else if let Some(var) = jp["valueFrom"]["variable"].as_str() {
                        vars[var].clone()
                    } else {
                        let tpl = jp["valueFrom"]["template"].as_str().unwrap();
                        let out = csctl::render::render_str(tpl, &vars).unwrap();
                        yaml::parse_one(&out).unwrap().to_json()
                    };
                    let obj = templates.get_mut(&t).unwrap();
                    json_patch(
                        obj,
                        jp["op"].as_str().unwrap(),
                        jp["path"].as_str().unwrap(),
                        value,
                    );
                }
            }
        }
    }
    templates
}

const KUBE_VIP_MANIFEST: &str = "/etc/kubernetes/manifests/kube-vip.yaml";
/// The pin in cluster-class/values.yaml (its comment says where the digest comes from).
const KUBE_VIP_IMAGE: &str = "ghcr.io/kube-vip/kube-vip:v1.2.1@sha256:49b77655f9f109bedc5eb25723bb0e4c57d8513ba33cc69c31be3f243eb2386d";

/// The static pod a kubeadmConfigSpec writes to `path`, parsed.
fn static_pod(spec: &Value, path: &str) -> Value {
    let file = spec["files"]
        .as_array()
        .unwrap_or_else(|| panic!("no files in {spec}"))
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("no {path}"));
    assert_eq!(file["owner"], "root:root");
    yaml::parse_one(file["content"].as_str().unwrap())
        .unwrap()
        .to_json()
}

/// Runs a pre/postKubeadmCommand with `sh` on a copy of the kube-vip manifest, on a node where
/// `kubeadm init` runs (CABPK's /run/kubeadm/kubeadm.yaml exists) or a joining one; returns the manifest.
fn run_kubeadm_hook(command: &str, manifest: &str, init: bool) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let init_config = tmp.path().join("kubeadm.yaml");
    if init {
        std::fs::write(&init_config, "kind: InitConfiguration\n").unwrap();
    }
    let file = tmp.path().join("kube-vip.yaml");
    std::fs::write(&file, manifest).unwrap();
    assert!(command.contains("/run/kubeadm/kubeadm.yaml") && command.contains(KUBE_VIP_MANIFEST));
    let command = command
        .replace("/run/kubeadm/kubeadm.yaml", init_config.to_str().unwrap())
        .replace(KUBE_VIP_MANIFEST, file.to_str().unwrap());
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&command)
        .output()
        .unwrap();
    assert!(out.status.success(), "{command}: {out:?}");
    std::fs::read_to_string(&file).unwrap()
}

/// `beowulf-hpc-<maj>-<min>`: the release name CSO gives a stack directory's charts.
fn stack_prefix(stack: &Path) -> String {
    format!(
        "beowulf-hpc-{}",
        stack.file_name().unwrap().to_str().unwrap()
    )
}

#[test]
fn class_patches_apply_to_the_templates_and_the_results_validate() {
    let crds = CrdSet::builtin();
    for stack in stacks() {
        let prefix = stack_prefix(&stack);
        let objects = render(&stack.join("cluster-class"), None, &prefix, "hpc");
        let cluster = yaml_file(&stack.join("examples/cluster.yaml"));
        let check = |templates: &BTreeMap<String, Value>| {
            for (name, o) in templates {
                let Lookup::Schema(s) = crds.lookup(
                    o["apiVersion"].as_str().unwrap(),
                    o["kind"].as_str().unwrap(),
                ) else {
                    panic!("no schema for {name}");
                };
                let node = yaml::parse_one(&serde_json::to_string(o).unwrap()).unwrap();
                let problems = s.check(&node, name);
                assert!(problems.is_empty(), "{name} after patching: {problems:?}");
            }
        };
        // With the defaults only: the optional patches stay off, the rest apply.
        let defaults = apply_class_patches(&objects, &[]);
        check(&defaults);
        let kcp = &defaults[&format!("KubeadmControlPlaneTemplate/{prefix}-v1-control-plane")]["spec"]
            ["template"]["spec"]["kubeadmConfigSpec"];
        assert!(kcp.get("users").is_none(), "no SSH keys, no users");
        assert!(kcp.get("files").is_none(), "no endpoint host, no kube-vip");
        assert!(defaults[&format!("BeowulfClusterTemplate/{prefix}-v1-cluster")]["spec"]["template"]["spec"].get("controlPlaneEndpoint").is_none());
        // With the example Cluster's variables.
        let patched = apply_class_patches(
            &objects,
            cluster["spec"]["topology"]["variables"].as_array().unwrap(),
        );
        check(&patched);
        let infra = &patched[&format!("BeowulfClusterTemplate/{prefix}-v1-cluster")]["spec"]["template"]
            ["spec"];
        assert_eq!(
            infra["controlPlaneEndpoint"],
            serde_json::json!({"host": "10.10.0.100", "port": 6443})
        );
        let kcp = &patched[&format!("KubeadmControlPlaneTemplate/{prefix}-v1-control-plane")]["spec"]
            ["template"]["spec"]["kubeadmConfigSpec"];
        assert_eq!(kcp["users"][0]["name"], "hpcadmin");
        assert_eq!(
            kcp["users"][0]["sshAuthorizedKeys"][0],
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyReplaceMeWithYourOwnPublicKey admin@example"
        );
        let cm_args = kcp["clusterConfiguration"]["controllerManager"]["extraArgs"]
            .as_array()
            .unwrap();
        assert!(
            cm_args
                .contains(&serde_json::json!({"name": "cluster-cidr", "value": "10.244.0.0/16"})),
            "{cm_args:?}"
        );
        assert_eq!(
            kcp["clusterConfiguration"]["apiServer"]["extraArgs"][0],
            serde_json::json!({"name": "service-cluster-ip-range", "value": "10.96.0.0/12"})
        );
        let workers = &patched[&format!("BeowulfMachineTemplate/{prefix}-v1-compute")]["spec"]["template"]
            ["spec"];
        assert_eq!(
            workers["hostSelector"]["matchLabels"],
            serde_json::json!({"beowulf.io/role": "k8s-worker"})
        );
        assert_eq!(workers["imageRef"]["name"], format!("{prefix}-v1-hpc-node"));
        // Local disks: scratch on compute nodes, etcd on the control plane, both optional (diskless hosts run
        // from RAM).
        assert_eq!(
            workers["localDisks"],
            serde_json::json!([{"name": "scratch", "mountPath": "/scratch", "optional": true,
                                "disk": {"minSizeBytes": 107374182400u64}}])
        );
        let cp = &patched[&format!("BeowulfMachineTemplate/{prefix}-v1-control-plane")]["spec"]["template"]
            ["spec"];
        assert_eq!(cp["localDisks"][0]["mountPath"], "/var/lib/etcd", "{cp}");
        let join = &patched[&format!("KubeadmConfigTemplate/{prefix}-v1-compute")]["spec"]["template"]
            ["spec"]["joinConfiguration"]["nodeRegistration"]["kubeletExtraArgs"];
        assert!(
            join.as_array().unwrap().contains(&serde_json::json!({"name": "node-labels", "value": "slurm.beowulf.io/partition=compute"})),
            "{join}"
        );
        // The control-plane VIP: kube-vip as a static pod on the control-plane nodes, with the example's
        // VIP and the image pinned by digest; a valid Pod; the first node starts it with super-admin.conf.
        let vip = static_pod(kcp, KUBE_VIP_MANIFEST);
        let Lookup::Schema(pod_schema) = crds.lookup("v1", "Pod") else {
            panic!("no Pod schema")
        };
        let node = yaml::parse_one(&serde_json::to_string(&vip).unwrap()).unwrap();
        let problems = pod_schema.check(&node, KUBE_VIP_MANIFEST);
        assert!(problems.is_empty(), "kube-vip static pod: {problems:?}");
        assert_eq!(vip["metadata"]["namespace"], "kube-system");
        assert_eq!(vip["spec"]["hostNetwork"], true);
        let c = &vip["spec"]["containers"][0];
        assert_eq!(c["image"], KUBE_VIP_IMAGE);
        assert!(regex_like_digest(c["image"].as_str().unwrap()));
        let env: BTreeMap<&str, &str> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap(), e["value"].as_str().unwrap()))
            .collect();
        assert_eq!(env["address"], "10.10.0.100");
        assert_eq!(env["port"], "6443");
        assert_eq!(env["vip_arp"], "true");
        assert_eq!(env["cp_enable"], "true");
        assert_eq!(
            env["svc_enable"], "false",
            "MetalLB owns LoadBalancer services"
        );
        assert!(
            !env.contains_key("vip_interface"),
            "default: kube-vip detects the interface"
        );
        assert_eq!(
            vip["spec"]["volumes"][0]["hostPath"]["path"],
            "/etc/kubernetes/admin.conf"
        );
        // The init-only switch to super-admin.conf, run as a shell would on the file cloud-init writes.
        let pre = kcp["preKubeadmCommands"][0].as_str().unwrap();
        let post = kcp["postKubeadmCommands"][0].as_str().unwrap();
        let content = kcp["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == KUBE_VIP_MANIFEST)
            .unwrap()["content"]
            .as_str()
            .unwrap()
            .to_string();
        let during_init = run_kubeadm_hook(pre, &content, true);
        let init_pod = yaml::parse_one(&during_init).unwrap().to_json();
        assert_eq!(
            init_pod["spec"]["volumes"][0]["hostPath"]["path"],
            "/etc/kubernetes/super-admin.conf"
        );
        assert_eq!(
            init_pod["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
            "/etc/kubernetes/admin.conf",
            "only the host side changes"
        );
        assert_eq!(run_kubeadm_hook(post, &during_init, true), content);
        assert_eq!(
            run_kubeadm_hook(pre, &content, false),
            content,
            "a join keeps admin.conf"
        );
        assert_eq!(
            kcp["joinConfiguration"]["nodeRegistration"]["ignorePreflightErrors"],
            serde_json::json!(["DirAvailable--etc-kubernetes-manifests"])
        );
        // An interface from the Cluster reaches kube-vip.
        let mut vars = cluster["spec"]["topology"]["variables"]
            .as_array()
            .unwrap()
            .clone();
        vars.push(serde_json::json!({"name": "controlPlaneVIPInterface", "value": "eno1"}));
        let with_if = apply_class_patches(&objects, &vars);
        let pod = static_pod(
            &with_if[&format!("KubeadmControlPlaneTemplate/{prefix}-v1-control-plane")]["spec"]["template"]
                ["spec"]["kubeadmConfigSpec"],
            KUBE_VIP_MANIFEST,
        );
        assert!(
            pod["spec"]["containers"][0]["env"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!({"name": "vip_interface", "value": "eno1"})),
            "{pod}"
        );
    }
}

/// Files a Kubernetes minor of the stack has of its own; everything else in a newer minor is a relative
/// symlink into the oldest one (csctl packages links as their targets, see `create.rs`).
const PER_MINOR: [&str; 6] = [
    "csctl.yaml",
    "cluster-class/Chart.yaml",
    "cluster-class/values.yaml",
    "node-images/hpc-node.yaml",
    "examples/cluster.yaml",
    "examples/hosts.yaml",
];

#[test]
fn minors_share_their_sources_and_differ_only_in_versions() {
    let all = stacks();
    let names: Vec<String> = all
        .iter()
        .map(|s| s.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    assert!(
        names.contains(&"1-33".to_string()) && names.contains(&"1-34".to_string()),
        "{names:?}"
    );
    let oldest = &all[0];
    for stack in &all {
        let minor = stack.file_name().unwrap().to_str().unwrap();
        let (maj, min) = minor.split_once('-').unwrap();
        // The Kubernetes version everywhere it appears matches the directory.
        let k8s = yaml_file(&stack.join("csctl.yaml"))["config"]["kubernetesVersion"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(k8s.starts_with(&format!("v{maj}.{min}.")), "{minor}: {k8s}");
        let cluster = yaml_file(&stack.join("examples/cluster.yaml"));
        assert_eq!(cluster["spec"]["topology"]["version"], k8s.as_str());
        let image = yaml_file(&stack.join("node-images/hpc-node.yaml"));
        assert!(
            image["version"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{maj}.{min}.")),
            "{minor}: node image {}",
            image["version"]
        );
        if stack == oldest {
            continue;
        }
        // Own files only where a version differs; the rest links into the oldest minor.
        let mut own = Vec::new();
        let mut linked = 0;
        for e in walkdir::WalkDir::new(stack).min_depth(1) {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(stack).unwrap().to_str().unwrap();
            if e.path_is_symlink() {
                let target = std::fs::read_link(e.path()).unwrap();
                assert!(target.is_relative(), "{rel} -> {}", target.display());
                assert!(
                    e.path()
                        .canonicalize()
                        .unwrap()
                        .starts_with(oldest.canonicalize().unwrap()),
                    "{rel} does not lead into {}",
                    oldest.display()
                );
                linked += 1;
            } else if e.file_type().is_file() {
                own.push(rel.to_string());
            }
        }
        own.sort();
        let mut want: Vec<String> = PER_MINOR.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(own, want, "{minor}: files of its own");
        assert!(linked >= 4, "{minor}: {linked} links");
    }
}

#[test]
fn broken_static_pods_fail_validate_where_they_are_written() {
    let (_tmp, stack) = scratch_copy_of_1_33();
    let edit = |rel: &str, from: &str, to: &str| edit_once(&stack, rel, from, to);
    // In the kube-vip manifest of the controlPlaneVIP patch (a Go template CAPI renders).
    edit(
        "cluster-class/templates/cluster-class.yaml",
        "hostNetwork: true",
        "hostNetwork: yes-please",
    );
    edit(
        "cluster-class/templates/cluster-class.yaml",
        "imagePullPolicy: IfNotPresent",
        "imagePulPolicy: IfNotPresent",
    );
    // A literal static pod in the KubeadmControlPlaneTemplate, and one cloud-init jinja makes unparseable.
    edit(
        "cluster-class/templates/kubeadm-control-plane-template.yaml",
        "      kubeadmConfigSpec:\n",
        "      kubeadmConfigSpec:\n        files:\n          - path: /etc/kubernetes/manifests/x.yaml\n            content: |\n              apiVersion: v1\n              kind: Pod\n              metadata: {name: x}\n              spec:\n                containers: [{name: x, imag: x}]\n          - path: /etc/kubernetes/manifests/y.yaml\n            content: \"kind: Pod\\nspec: [{% for c in ds.meta_data.containers %}\"\n          - path: /etc/motd\n            content: \"not: [a, pod\"\n",
    );
    let s = stack.display().to_string();
    let cc = format!(
        "{s}/cluster-class/templates/cluster-class.yaml:227:19: error: static pod /etc/kubernetes/manifests/kube-vip.yaml (patch controlPlaneVIP, rendered with the variables' defaults)"
    );
    let kcp = format!("{s}/cluster-class/templates/kubeadm-control-plane-template.yaml");
    csctl()
        .arg("validate")
        .arg(&stack)
        .assert()
        .code(3)
        .stdout(
            contains(format!("{cc}, line 10 of the manifest: Pod: spec.hostNetwork: \"yes-please\" is not of type \"boolean\""))
                .and(contains(format!("{cc}, line 19 of the manifest: Pod: spec.containers.0: Additional properties are not allowed ('imagePulPolicy' was unexpected)")))
                .and(contains(format!("{kcp}:11:13: error: static pod /etc/kubernetes/manifests/x.yaml (KubeadmControlPlaneTemplate beowulf-hpc-1-33-v1-control-plane), line 5 of the manifest: Pod: spec.containers.0: Additional properties are not allowed ('imag' was unexpected)")))
                .and(contains(format!("{kcp}:18:13: warning: static pod /etc/kubernetes/manifests/y.yaml")))
                .and(contains("not checked, its content is not YAML here"))
                .and(contains("3 error(s), 1 warning(s)")),
        );
}

/// The compute class checks its machines' health and hands unhealthy ones to Beowulf's remediation: the
/// MachineHealthCheck the topology controller makes from `healthCheck` names a BeowulfRemediationTemplate the
/// chart itself ships, in the ClusterClass's namespace, with the strategy from the values.
#[test]
fn compute_nodes_are_health_checked_and_remediated_by_beowulf() {
    for stack in stacks() {
        let mut v = yaml_file(&stack.join("cluster-class/values.yaml"));
        v["remediation"]["powerCycles"] = 3.into();
        let objects = render(
            &stack.join("cluster-class"),
            Some(&v),
            &stack_prefix(&stack),
            "hpc",
        );
        let class = objects
            .iter()
            .find(|o| o["kind"] == "ClusterClass")
            .unwrap();
        let compute = class["spec"]["workers"]["machineDeployments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|md| md["class"] == "compute")
            .unwrap();
        let hc = &compute["healthCheck"];
        assert_eq!(hc["checks"]["nodeStartupTimeoutSeconds"], 1800);
        let statuses: Vec<&str> = hc["checks"]["unhealthyNodeConditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["False", "Unknown"]);
        let r = &hc["remediation"]["templateRef"];
        assert_eq!(r["apiVersion"], "infrastructure.cluster.x-k8s.io/v1alpha1");
        assert_eq!(r["kind"], "BeowulfRemediationTemplate");
        let template = objects
            .iter()
            .find(|o| {
                o["kind"] == "BeowulfRemediationTemplate" && o["metadata"]["name"] == r["name"]
            })
            .unwrap_or_else(|| panic!("{} is not in the chart", r["name"]));
        assert_eq!(template["metadata"]["namespace"], "hpc");
        let strategy = &template["spec"]["template"]["spec"]["strategy"];
        assert_eq!(strategy["powerCycles"], 3);
        assert_eq!(strategy["reprovision"], true);
        assert_eq!(strategy["timeoutSeconds"], 600);
    }
}
