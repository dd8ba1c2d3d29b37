//! `csctl validate` end to end: the seed stack and the upstream fixture pass; broken stacks report every
//! problem at once with file:line:column; the vendored CRDs are the upstream ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use predicates::prelude::PredicateBooleanExt;
use predicates::str::contains;

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.contains(from),
        "{} does not contain {from:?}",
        path.display()
    );
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn seed_stack_is_valid_with_the_built_in_beowulf_crds() {
    // The provider's kinds are validated without --crd-dir (their CRDs are built in).
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../providers/beowulf/hpc/1-33");
    csctl()
        .arg("validate")
        .arg(&seed)
        .assert()
        .success()
        .stdout(contains("0 error(s), 0 warning(s)").and(contains("no CRD known").not()));
}

#[test]
fn vendored_beowulf_crds_equal_what_the_provider_generates() {
    assert_eq!(
        csctl::crds::BEOWULF.1,
        beowulf::api::crds::to_yaml().unwrap(),
        "csctl/crds/beowulf-v1alpha1.yaml is stale: cargo run -p beowulf-provider --bin beowulf -- crds > csctl/crds/beowulf-v1alpha1.yaml"
    );
}

#[test]
fn seed_stack_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../providers/beowulf/hpc/1-33");
    csctl()
        .args(["create", "-o"])
        .arg(tmp.path())
        .arg(&seed)
        .assert()
        .success()
        .stdout(contains("created").and(contains("beowulf-hpc-1-33-v1")));
    assert!(
        tmp.path()
            .join("beowulf-hpc-1-33-v1/beowulf-hpc-1-33-cluster-class-v1.tgz")
            .is_file()
    );
}

#[test]
fn upstream_fixture_stack_is_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let stack = tmp.path().join("docker-ferrol-1-27");
    copy_tree(&fixtures_dir().join("stacks/docker-ferrol-1-27"), &stack);
    // Its ClusterClass is CAPI v1beta1: validated against the v1beta1 schema of the same CRD.
    csctl()
        .arg("validate")
        .arg(&stack)
        .assert()
        .success()
        .stdout(contains("unknown hook \"name\"").and(contains("0 error(s)")));
}

#[test]
fn all_problems_are_reported_at_once_with_positions() {
    let tmp = tempfile::tempdir().unwrap();
    let stack = golden_stack(&tmp.path().join("stack"));
    // 1. A stage without a subchart (line 7, column 13 of clusteraddon.yaml).
    edit(
        &stack.join("clusteraddon.yaml"),
        "      action: apply\n",
        "      action: apply\n    - name: slurm\n      action: apply\n",
    );
    // 2. A wrong chart name (line 2, column 7).
    edit(
        &stack.join("cluster-class/Chart.yaml"),
        "name: test-golden-1-33-cluster-class",
        "name: golden-cluster-class",
    );
    // 3. A ClusterClass reference to a template the chart does not contain.
    edit(
        &stack.join("cluster-class/templates/cluster-class.yaml"),
        "name: {{ .Release.Name }}-{{ .Chart.Version }}-cp\n",
        "name: {{ .Release.Name }}-{{ .Chart.Version }}-control-plane\n",
    );
    // 4. A typo in a CAPI object (unknown field) and a bad enum value.
    edit(
        &stack.join("cluster-class/templates/kcp.yaml"),
        "        format: cloud-config",
        "        format: yaml\n        preKubeadmCommandz: [\"true\"]",
    );
    let out = csctl().arg("validate").arg(&stack).assert().code(3);
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let s = stack.display().to_string();
    for want in [
        format!("{s}/clusteraddon.yaml:7:13: error: stage \"slurm\" has no subchart"),
        format!(
            "{s}/cluster-class/Chart.yaml:2:7: error: chart name is \"golden-cluster-class\", expected \"test-golden-1-33-cluster-class\""
        ),
        format!(
            "{s}/cluster-class/templates/cluster-class.yaml (rendered):15:13: error: references KubeadmControlPlaneTemplate \"test-golden-1-33-v1-control-plane\", which the chart does not contain"
        ),
        format!(
            "{s}/cluster-class/templates/kcp.yaml:9:17: error: KubeadmControlPlaneTemplate test-golden-1-33-v1-cp: spec.template.spec.kubeadmConfigSpec.format: \"yaml\" is not one of"
        ),
        format!(
            "{s}/cluster-class/templates/kcp.yaml:10:9: error: KubeadmControlPlaneTemplate test-golden-1-33-v1-cp: spec.template.spec.kubeadmConfigSpec: Additional properties are not allowed ('preKubeadmCommandz' was unexpected)"
        ),
    ] {
        assert!(stdout.contains(&want), "missing:\n{want}\nin:\n{stdout}");
    }
    assert!(
        stdout.contains("4 error(s)") || stdout.contains("5 error(s)"),
        "{stdout}"
    );
}

#[test]
fn api_version_must_be_served() {
    let tmp = tempfile::tempdir().unwrap();
    let stack = golden_stack(&tmp.path().join("stack"));
    edit(
        &stack.join("cluster-class/templates/kcp.yaml"),
        "controlplane.cluster.x-k8s.io/v1beta2",
        "controlplane.cluster.x-k8s.io/v1alpha4",
    );
    csctl()
        .arg("validate")
        .arg(&stack)
        .assert()
        .code(3)
        .stdout(contains(
            "kcp.yaml:1:13: error: KubeadmControlPlaneTemplate is not served as controlplane.cluster.x-k8s.io/v1alpha4; served versions: v1beta1, v1beta2",
        ));
}

#[test]
fn unsupported_template_constructs_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let stack = golden_stack(&tmp.path().join("stack"));
    edit(
        &stack.join("cluster-class/templates/kcp.yaml"),
        "kind: KubeadmControlPlaneTemplate\n",
        "kind: KubeadmControlPlaneTemplate\n# {{ tpl .Values.x . }}\n",
    );
    csctl()
        .arg("validate")
        .arg(&stack)
        .assert()
        .code(3)
        .stdout(contains("templates/kcp.yaml:3:0: error: cannot render: `tpl` is not supported by csctl's renderer"));
}

#[test]
fn extra_crds_validate_provider_kinds() {
    let tmp = tempfile::tempdir().unwrap();
    let stack = golden_stack(&tmp.path().join("stack"));
    let crds = tmp.path().join("crds");
    std::fs::create_dir(&crds).unwrap();
    std::fs::write(
        crds.join("test.yaml"),
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: testclustertemplates.infrastructure.cluster.x-k8s.io
spec:
  group: infrastructure.cluster.x-k8s.io
  names: {kind: TestClusterTemplate, plural: testclustertemplates}
  scope: Namespaced
  versions:
    - name: v1alpha1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            apiVersion: {type: string}
            kind: {type: string}
            metadata: {type: object}
            spec:
              type: object
              required: [template]
              properties:
                template:
                  type: object
                  properties:
                    spec:
                      type: object
                      properties:
                        rack: {type: string}
"#,
    )
    .unwrap();
    csctl()
        .arg("validate")
        .arg("--crd-dir")
        .arg(&crds)
        .arg(&stack)
        .assert()
        .success()
        .stdout(contains("TestClusterTemplate").not());
    edit(
        &stack.join("cluster-class/templates/test-cluster-template.yaml"),
        "spec: {}",
        "spec: {rack: 7}",
    );
    csctl()
        .arg("validate")
        .arg("--crd-dir")
        .arg(&crds)
        .arg(&stack)
        .assert()
        .code(3)
        .stdout(contains("test-cluster-template.yaml:7:18: error: TestClusterTemplate test-golden-1-33-v1-cluster: spec.template.spec.rack: 7 is not of type \"string\""));
}

#[test]
fn json_output_for_scripts() {
    let tmp = tempfile::tempdir().unwrap();
    let stack = golden_stack(&tmp.path().join("stack"));
    edit(
        &stack.join("cluster-class/Chart.yaml"),
        "apiVersion: v2",
        "apiVersion: v1",
    );
    let o = csctl()
        .args(["--format", "json", "validate"])
        .arg(&stack)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["errors"], 1);
    let p = &j["stacks"][0]["problems"][0];
    assert_eq!(p["line"], 1);
    assert_eq!(p["column"], 13);
    assert_eq!(p["severity"], "error");
    assert!(p["message"].as_str().unwrap().contains("expected \"v2\""));
}

#[test]
fn bad_config_is_reported_with_position() {
    let tmp = tempfile::tempdir().unwrap();
    let stack = golden_stack(&tmp.path().join("stack"));
    edit(&stack.join("csctl.yaml"), "v1.33.4", "1.33");
    csctl().arg("validate").arg(&stack).assert().code(3).stdout(
        contains("csctl.yaml:3:22: error: config.kubernetesVersion").and(contains("vX.Y.Z")),
    );
}

#[test]
fn vendored_crds_are_byte_identical_to_upstream() {
    let dir = std::env::var_os("CAPI_CRDS_DIR").unwrap_or_else(|| {
        panic!("CAPI_CRDS_DIR is not set: point it at the CAPI v1.14.0 CRDs (README, \"Test data\"; CI's .ci/run sets it)")
    });
    let dir = Path::new(&dir);
    for (name, text) in csctl::crds::VENDORED {
        let upstream = std::fs::read(dir.join(name)).unwrap();
        assert!(
            upstream == text.as_bytes(),
            "{name} differs from {}",
            dir.display()
        );
        let vendored = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("crds/capi-v1.14.0")
                .join(name),
        )
        .unwrap();
        assert_eq!(vendored, upstream, "{name}");
    }
}

#[test]
fn seed_stack_validates_against_the_beowulf_provider_crds() {
    let tmp = tempfile::tempdir().unwrap();
    let crds = tmp.path().join("beowulf-crds.yaml");
    std::fs::write(&crds, beowulf::api::crds::to_yaml().unwrap()).unwrap();
    let seed = tmp.path().join("1-33");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../providers/beowulf/hpc/1-33"),
        &seed,
    );
    csctl()
        .arg("validate")
        .arg("--crd-dir")
        .arg(&crds)
        .arg(&seed)
        .assert()
        .success()
        .stdout(contains("0 error(s), 0 warning(s)"));
    // A typo in a provider template is an error, reported at the unknown key's template line.
    edit(
        &seed.join("cluster-class/templates/beowulf-machine-templates.yaml"),
        "imageRef:",
        "imageRefs:",
    );
    csctl()
        .arg("validate")
        .arg("--crd-dir")
        .arg(&crds)
        .arg(&seed)
        .assert()
        .code(3)
        .stdout(
            contains("beowulf-machine-templates.yaml:13:7: error: BeowulfMachineTemplate beowulf-hpc-1-33-v1-control-plane: spec.template.spec: Additional properties are not allowed ('imageRefs' was unexpected)")
                .and(contains("\"imageRef\" is a required property")),
        );
}
