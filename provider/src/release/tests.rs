//! One test per clusterctl repository rule (capi-contract.md checklist items 28–31), plus validation of every
//! object in the templates and ClusterClass against the upstream CAPI v1.14.0 CRD schemas (`$CAPI_CRDS_DIR`)
//! and our own CRD schemas.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::*;

fn v() -> Version {
    Version::parse("v0.3.1").unwrap()
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn component_docs() -> Vec<Value> {
    docs(&components_yaml(&default_image(&v())).unwrap())
}

const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
];

#[test]
fn metadata_yaml_is_clusterctl_v1alpha3_with_contract_v1beta2() {
    let m: Value = serde_saphyr::from_str(&metadata_yaml(&v())).unwrap();
    assert_eq!(m["apiVersion"], "clusterctl.cluster.x-k8s.io/v1alpha3");
    assert_eq!(m["kind"], "Metadata");
    let series = m["releaseSeries"].as_array().unwrap();
    assert!(!series.is_empty());
    assert_eq!(
        series[0],
        json!({"major": 0, "minor": 3, "contract": "v1beta2"})
    );
}

#[test]
fn contract_label_on_crds_agrees_with_metadata() {
    let m: Value = serde_saphyr::from_str(&metadata_yaml(&v())).unwrap();
    let contract = m["releaseSeries"][0]["contract"].as_str().unwrap();
    let crds: Vec<Value> = component_docs()
        .into_iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .collect();
    assert_eq!(crds.len(), 8);
    for crd in crds {
        assert_eq!(
            crd["metadata"]["labels"][format!("cluster.x-k8s.io/{contract}")],
            "v1alpha1",
            "{}",
            crd["metadata"]["name"]
        );
    }
}

#[test]
fn components_have_exactly_one_namespace() {
    let ns: Vec<Value> = component_docs()
        .into_iter()
        .filter(|d| d["kind"] == "Namespace")
        .collect();
    assert_eq!(ns.len(), 1);
    assert_eq!(ns[0]["metadata"]["name"], NAMESPACE);
}

#[test]
fn every_namespaced_component_is_in_that_namespace() {
    for d in component_docs() {
        let kind = d["kind"].as_str().unwrap();
        if CLUSTER_SCOPED.contains(&kind) {
            assert!(
                d["metadata"].get("namespace").is_none(),
                "{kind} is cluster-scoped"
            );
        } else {
            assert_eq!(
                d["metadata"]["namespace"], NAMESPACE,
                "{kind} {}",
                d["metadata"]["name"]
            );
        }
        if kind == "ClusterRoleBinding" {
            for s in d["subjects"].as_array().unwrap() {
                assert_eq!(s["namespace"], NAMESPACE);
            }
        }
    }
}

fn deployment() -> Value {
    component_docs()
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap()
}

#[test]
fn deployment_container_is_named_manager_and_supports_namespace_flag() {
    let d = deployment();
    let containers = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0]["name"], "manager");
    let args: Vec<&str> = containers[0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "manager");
    assert!(args.iter().any(|a| a.starts_with("--namespace=")));
    assert!(args.iter().any(|a| a.starts_with("--watch-filter=")));
    assert!(args.contains(&"--leader-elect"));
    // The flags the Deployment passes exist on the real command line.
    let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(
        std::iter::once("beowulf").chain(
            args.iter()
                .map(|a| strip_vars(a))
                .map(|s| Box::leak(s.into_boxed_str()) as &str),
        ),
    );
    assert!(cli.is_ok(), "{:?}", cli.err().map(|e| e.to_string()));
}

/// Replaces `${VAR:=default}` by its default and `${VAR}` by `x`.
fn strip_vars(s: &str) -> String {
    envsubst(s, &BTreeMap::new(), true)
}

#[test]
fn deployment_uses_host_network_and_boot_plane_capabilities() {
    let d = deployment();
    let spec = &d["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    let caps = &spec["containers"][0]["securityContext"]["capabilities"];
    assert_eq!(
        caps["add"],
        json!(["NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"])
    );
    assert_eq!(caps["drop"], json!(["ALL"]));
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
}

#[test]
fn every_component_carries_the_provider_label() {
    for d in component_docs() {
        assert_eq!(
            d["metadata"]["labels"]["cluster.x-k8s.io/provider"], PROVIDER_LABEL,
            "{} {}",
            d["kind"], d["metadata"]["name"]
        );
    }
}

/// All `$` uses in `text`: `(name, has_default)`; panics on anything clusterctl's envsubst would not take.
/// An empty default (`${VAR:=}`) is no default: clusterctl reports such a variable as not set.
fn variables(text: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        let after = &rest[i + 1..];
        assert!(
            after.starts_with('{'),
            "bare $ (use ${{VAR}}): {:?}",
            &rest[i..(i + 20).min(rest.len())]
        );
        let end = after.find('}').expect("unterminated ${");
        let inner = after[1..end].trim();
        let (name, default) = match inner.split_once(":=") {
            Some((n, d)) => (n, !d.is_empty()),
            None => (inner, false),
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
            "variable {name:?} is not UPPERCASE_WITH_UNDERSCORE"
        );
        assert!(
            !after[1..end].contains('$'),
            "nested variable in {inner:?} is unsupported"
        );
        out.push((name.to_string(), default));
        rest = &after[end + 1..];
    }
    out
}

#[test]
fn components_use_only_prefixed_braced_variables() {
    let vars = variables(&components_yaml(&default_image(&v())).unwrap());
    assert!(!vars.is_empty());
    for (name, has_default) in &vars {
        assert!(
            name.starts_with("BEOWULF_"),
            "{name} is not prefixed with the provider name"
        );
        assert!(
            has_default,
            "{name}: components must install with no variables set"
        );
    }
    assert!(vars.iter().any(|(n, _)| n == "BEOWULF_IMAGE"));
}

#[test]
fn variable_checker_rejects_bad_forms() {
    for bad in ["$FOO", "${foo}", "${A$B}", "${}"] {
        assert!(
            std::panic::catch_unwind(|| variables(bad)).is_err(),
            "{bad}"
        );
    }
    assert_eq!(
        variables("${ A } ${B:=x} ${C:=}"),
        [
            ("A".to_string(), false),
            ("B".to_string(), true),
            ("C".to_string(), false)
        ]
    );
}

/// clusterctl substitutes in the text and then parses it: with the defaults in, every value Kubernetes types
/// as a string is still one (an unquoted `${…:=true}` became a boolean in the nodeSelector, and clusterctl
/// refused the Deployment with "unrecognized type: string").
#[test]
fn components_keep_their_types_after_clusterctl_substitution() {
    let text = envsubst(
        &components_yaml(&default_image(&v())).unwrap(),
        &BTreeMap::new(),
        false,
    );
    let d = docs(&text)
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap();
    let spec = &d["spec"]["template"]["spec"];
    let selector = spec["nodeSelector"].as_object().unwrap();
    assert_eq!(selector.len(), 1);
    for (k, v) in selector {
        assert_eq!((k.as_str(), v), ("beowulf.io/boot-plane", &json!("true")));
    }
    for arg in spec["containers"][0]["args"].as_array().unwrap() {
        assert!(arg.is_string(), "{arg}");
    }
    assert!(spec["containers"][0]["image"].is_string());
}

/// With an image built, the Deployment runs it by digest (tag kept for people), and `BEOWULF_IMAGE` still
/// overrides it.
#[test]
fn the_deployment_runs_the_built_image_by_digest_unless_overridden() {
    let image = format!("registry.example/beowulf:v0.3.1@sha256:{}", "ab".repeat(32));
    let text = components_yaml(&image).unwrap();
    let run = |vars: &BTreeMap<&str, &str>| {
        let d = docs(&envsubst(&text, vars, false))
            .into_iter()
            .find(|d| d["kind"] == "Deployment")
            .unwrap();
        d["spec"]["template"]["spec"]["containers"][0]["image"].clone()
    };
    assert_eq!(run(&BTreeMap::new()), json!(image));
    let own = BTreeMap::from([("BEOWULF_IMAGE", "mine:1")]);
    assert_eq!(run(&own), json!("mine:1"));
}

#[test]
fn clusterclass_has_no_namespaces_and_no_variables() {
    assert!(
        !CLUSTERCLASS_DEFAULT.contains('$'),
        "clusterclass-*.yaml must not use env variables"
    );
    for d in docs(CLUSTERCLASS_DEFAULT) {
        assert!(
            d["metadata"].get("namespace").is_none(),
            "{} has a namespace",
            d["kind"]
        );
        let text = serde_json::to_string(&d).unwrap();
        assert!(
            !text.contains("\"namespace\""),
            "{}: references must not carry a namespace",
            d["kind"]
        );
    }
}

#[test]
fn templates_put_everything_in_one_namespace_and_use_clusterctl_variables() {
    for t in [CLUSTER_TEMPLATE, CLUSTER_TEMPLATE_TOPOLOGY] {
        for d in docs(t) {
            assert_eq!(d["metadata"]["namespace"], "${NAMESPACE}", "{}", d["kind"]);
        }
        let names: Vec<String> = variables(t).into_iter().map(|(n, _)| n).collect();
        for v in [
            "CLUSTER_NAME",
            "NAMESPACE",
            "KUBERNETES_VERSION",
            "CONTROL_PLANE_MACHINE_COUNT",
            "WORKER_MACHINE_COUNT",
        ] {
            assert!(names.iter().any(|n| n == v), "template uses {v}");
        }
    }
}

#[test]
fn topology_template_matches_the_clusterclass() {
    let cluster = docs(CLUSTER_TEMPLATE_TOPOLOGY)
        .into_iter()
        .find(|d| d["kind"] == "Cluster")
        .unwrap();
    let cc = docs(CLUSTERCLASS_DEFAULT)
        .into_iter()
        .find(|d| d["kind"] == "ClusterClass")
        .unwrap();
    assert_eq!(
        cluster["spec"]["topology"]["classRef"]["name"],
        cc["metadata"]["name"]
    );
    assert_eq!(
        "clusterclass-beowulf-default.yaml",
        format!(
            "clusterclass-{}.yaml",
            cc["metadata"]["name"].as_str().unwrap()
        )
    );
    let defined: Vec<&str> = cc["spec"]["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for var in cluster["spec"]["topology"]["variables"].as_array().unwrap() {
        assert!(
            defined.contains(&var["name"].as_str().unwrap()),
            "{}",
            var["name"]
        );
    }
    let classes: Vec<&Value> = cc["spec"]["workers"]["machineDeployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["class"])
        .collect();
    for md in cluster["spec"]["topology"]["workers"]["machineDeployments"]
        .as_array()
        .unwrap()
    {
        assert!(classes.contains(&&md["class"]));
    }
    // Every template the ClusterClass references ships in the same file.
    let text = serde_json::to_string(&cc).unwrap();
    for d in docs(CLUSTERCLASS_DEFAULT).iter().skip(1) {
        assert!(
            text.contains(&format!("\"name\":{}", d["metadata"]["name"])),
            "{} is referenced",
            d["metadata"]["name"]
        );
    }
}

// ---- schema validation

fn envsubst(text: &str, values: &BTreeMap<&str, &str>, lenient: bool) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}').unwrap() + i;
        let inner = rest[i + 2..end].trim();
        let (name, default) = match inner.split_once(":=") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        let value = values
            .get(name)
            .copied()
            .or(default)
            .or(lenient.then_some("x"));
        out.push_str(value.unwrap_or_else(|| panic!("no value for {name}")));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn sample_values() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("CLUSTER_NAME", "hpc1"),
        ("NAMESPACE", "default"),
        ("KUBERNETES_VERSION", "v1.33.1"),
        ("CONTROL_PLANE_MACHINE_COUNT", "3"),
        ("WORKER_MACHINE_COUNT", "4"),
        ("CONTROL_PLANE_ENDPOINT_IP", "10.0.0.100"),
        ("BEOWULF_KERNEL_URL", "http://10.0.0.1:8081/images/vmlinuz"),
        (
            "BEOWULF_INITRD_URL",
            "http://10.0.0.1:8081/images/initrd.img",
        ),
        (
            "BEOWULF_ROOTFS_URL",
            "http://10.0.0.1:8081/images/root.squashfs",
        ),
    ])
}

fn capi_crds_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("CAPI_CRDS_DIR").expect(
        "CAPI_CRDS_DIR is not set: export CAPI_CRDS_DIR=<dir with the CAPI v1.14.0 CRD YAMLs> (README, \"Test data\")",
    ))
}

/// The served version's openAPIV3Schema for `apiVersion`/`kind`, from the upstream CRDs or ours.
fn schema_for(api_version: &str, kind: &str) -> Value {
    let (group, version) = api_version.split_once('/').unwrap();
    let mut crds: Vec<Value> = crate::api::crds::all()
        .iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect();
    if group != crate::api::GROUP {
        let dir = capi_crds_dir();
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
            panic!(
                "cannot read CAPI_CRDS_DIR {}: {e} (it must hold the CAPI v1.14.0 CRD YAMLs; README, \"Test data\")",
                dir.display()
            )
        });
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                crds.push(
                    serde_saphyr::from_str(&text)
                        .unwrap_or_else(|e| panic!("{} is not a CRD YAML: {e}", path.display())),
                );
            }
        }
    }
    let crd = crds
        .into_iter()
        .find(|c| c["spec"]["group"] == group && c["spec"]["names"]["kind"] == kind)
        .unwrap_or_else(|| panic!("no CRD for {api_version} {kind}"));
    crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == version && v["served"] == true)
        .unwrap_or_else(|| panic!("{kind}: version {version} not served"))["schema"]["openAPIV3Schema"]
        .clone()
}

fn validate_all(yaml: &str) -> usize {
    let mut n = 0;
    for d in docs(yaml) {
        let schema = schema_for(
            d["apiVersion"].as_str().unwrap(),
            d["kind"].as_str().unwrap(),
        );
        let validator = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&d)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{} {} does not validate: {errors:#?}",
            d["kind"],
            d["metadata"]["name"]
        );
        n += 1;
    }
    n
}

#[test]
fn cluster_template_objects_validate_against_upstream_schemas() {
    let text = envsubst(CLUSTER_TEMPLATE, &sample_values(), false);
    assert_eq!(validate_all(&text), 8);
}

#[test]
fn topology_template_validates_against_upstream_schemas() {
    let text = envsubst(CLUSTER_TEMPLATE_TOPOLOGY, &sample_values(), false);
    assert_eq!(validate_all(&text), 1);
}

#[test]
fn default_workers_are_remediated_by_a_template_the_clusterclass_file_ships() {
    let all = docs(CLUSTERCLASS_DEFAULT);
    let cc = all.iter().find(|d| d["kind"] == "ClusterClass").unwrap();
    let r = &cc["spec"]["workers"]["machineDeployments"][0]["healthCheck"]["remediation"]["templateRef"];
    assert_eq!(r["kind"], "BeowulfRemediationTemplate");
    let t = all
        .iter()
        .find(|d| d["kind"] == r["kind"] && d["metadata"]["name"] == r["name"])
        .expect("the template is in clusterclass-beowulf-default.yaml");
    assert_eq!(
        t["spec"]["template"]["spec"]["strategy"]["reprovision"],
        true
    );
    assert!(
        cc["spec"]["controlPlane"].get("healthCheck").is_none(),
        "the control plane is left to KubeadmControlPlane's own remediation"
    );
}

#[test]
fn clusterclass_objects_validate_against_upstream_schemas() {
    assert_eq!(validate_all(CLUSTERCLASS_DEFAULT), 7);
}

#[test]
fn schema_validation_catches_a_broken_object() {
    let broken = CLUSTER_TEMPLATE.replace(
        "controlPlaneRef:\n    apiGroup:",
        "controlPlaneRef:\n    apiGroupX:",
    );
    let text = envsubst(&broken, &sample_values(), false);
    assert!(std::panic::catch_unwind(|| validate_all(&text)).is_err());
}

#[test]
fn write_lays_out_the_repository_deterministically() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write(tmp.path(), &v(), &default_image(&v())).unwrap();
    assert_eq!(dir, tmp.path().join("infrastructure-beowulf/v0.3.1"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "cluster-template-topology.yaml",
            "cluster-template.yaml",
            "clusterclass-beowulf-default.yaml",
            "infrastructure-components.yaml",
            "metadata.yaml"
        ]
    );
    let first = std::fs::read(dir.join("infrastructure-components.yaml")).unwrap();
    write(tmp.path(), &v(), &default_image(&v())).unwrap();
    assert_eq!(
        std::fs::read(dir.join("infrastructure-components.yaml")).unwrap(),
        first,
        "byte-identical"
    );
    assert!(
        String::from_utf8(first)
            .unwrap()
            .contains("ghcr.io/beowulf-hpc/beowulf:v0.3.1")
    );
}

#[test]
fn bad_versions_are_refused() {
    for bad in ["0.1.0", "v1", "vx.y.z", "v1.2.3.4", ""] {
        let e = Version::parse(bad).unwrap_err();
        assert!(e.to_string().contains("vMAJOR.MINOR.PATCH"), "{bad}");
    }
    assert_eq!(Version::parse("v1.2.3-rc.1").unwrap().minor, 2);
}

#[test]
fn release_command_line_parses() {
    use clap::{CommandFactory, Parser};
    crate::cli::Cli::command().debug_assert();
    let cli = crate::cli::Cli::try_parse_from([
        "beowulf",
        "release",
        "--version",
        "v0.1.0",
        "--out",
        "/tmp/x",
    ])
    .unwrap();
    assert!(matches!(cli.command, crate::cli::Command::Release(ref a) if a.version == "v0.1.0"));
}
