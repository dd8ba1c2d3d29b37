//! JSON Schemas of the built-in Kubernetes kinds (Deployment, Service, ConfigMap, RBAC, CRDs, …), generated
//! offline from k8s-openapi's Kubernetes 1.33 types (their `schemars` implementations are derived from the
//! upstream OpenAPI spec) and made strict like CRD schemas (unknown fields are errors, what `kubectl
//! --validate=strict` reports). Addon manifests are checked against them.
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use k8s_openapi::Resource;
use k8s_openapi::api::{
    admissionregistration::v1 as admission, apps::v1 as apps, autoscaling::v2 as autoscaling,
    batch::v1 as batch, coordination::v1 as coordination, core::v1 as core,
    networking::v1 as networking, policy::v1 as policy, rbac::v1 as rbac,
    scheduling::v1 as scheduling, storage::v1 as storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
use metadata_schema::validate::Schema;
use schemars::JsonSchema;
use serde_json::Value;

use crate::crds::strict;

/// API groups that come with Kubernetes itself: a kind in one of them must be a built-in kind (no CRD can
/// add kinds to them).
pub const BUILTIN_GROUPS: [&str; 21] = [
    "",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
];

/// The Kubernetes version whose schemas these are.
pub const KUBERNETES_VERSION: &str = "1.33";

struct Kind {
    generate: fn() -> Value,
    compiled: OnceLock<Result<Schema, String>>,
}

/// The built-in kinds csctl knows, by (group, version, kind).
pub struct CoreKinds {
    kinds: HashMap<(&'static str, &'static str, &'static str), Kind>,
}

/// What is known about a kind of a built-in group.
pub enum CoreLookup<'a> {
    Schema(&'a Schema),
    /// Known kind, but not in this version (e.g. `apps/v1beta1`); the versions csctl knows.
    OtherVersions(Vec<&'static str>),
    /// Not a kind csctl knows in this group; the kinds it knows there.
    UnknownKind(Vec<&'static str>),
    /// Not a built-in group.
    NotBuiltin,
    BadSchema(String),
}

/// Types that hold any JSON value but that k8s-openapi's schemas declare as `type: object` (the upstream
/// OpenAPI spec cannot express "any"): a CRD's `default: true` or `enum: [a, b]` would be rejected.
const ANY_JSON: [&str; 1] = ["io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON"];

/// The schema of `T` as a JSON value: a root with its sub-schemas under `$defs`, every object strict.
fn generate<T: JsonSchema>() -> Value {
    let mut root = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    if let Some(Value::Object(defs)) = root.get_mut("$defs") {
        for (name, v) in defs.iter_mut() {
            *v = if ANY_JSON.contains(&name.as_str()) {
                serde_json::json!({"description": "any JSON value"})
            } else {
                strict(v.take())
            };
        }
    }
    strict(root)
}

macro_rules! kinds {
    ($($t:ty),* $(,)?) => {
        vec![$((
            <$t as Resource>::GROUP,
            <$t as Resource>::VERSION,
            <$t as Resource>::KIND,
            generate::<$t> as fn() -> Value,
        )),*]
    };
}

impl Default for CoreKinds {
    fn default() -> Self {
        let list = kinds![
            core::ConfigMap,
            core::Secret,
            core::Service,
            core::ServiceAccount,
            core::Namespace,
            core::Pod,
            core::PersistentVolumeClaim,
            core::PersistentVolume,
            core::Endpoints,
            core::LimitRange,
            core::ResourceQuota,
            apps::Deployment,
            apps::StatefulSet,
            apps::DaemonSet,
            apps::ReplicaSet,
            batch::Job,
            batch::CronJob,
            rbac::ClusterRole,
            rbac::ClusterRoleBinding,
            rbac::Role,
            rbac::RoleBinding,
            policy::PodDisruptionBudget,
            networking::NetworkPolicy,
            networking::Ingress,
            networking::IngressClass,
            apiextensions::CustomResourceDefinition,
            admission::ValidatingWebhookConfiguration,
            admission::MutatingWebhookConfiguration,
            scheduling::PriorityClass,
            storage::StorageClass,
            storage::CSIDriver,
            coordination::Lease,
            autoscaling::HorizontalPodAutoscaler,
        ];
        let kinds = list
            .into_iter()
            .map(|(g, v, k, generate)| {
                (
                    (g, v, k),
                    Kind {
                        generate,
                        compiled: OnceLock::new(),
                    },
                )
            })
            .collect();
        Self { kinds }
    }
}

impl CoreKinds {
    /// The schema for a built-in `apiVersion`/`kind`, compiled on first use.
    pub fn lookup<'a>(&'a self, api_version: &str, kind: &str) -> CoreLookup<'a> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        if !BUILTIN_GROUPS.contains(&group) {
            return CoreLookup::NotBuiltin;
        }
        // A linear search: the keys are `'static`, the arguments are not (and there are few kinds).
        if let Some((_, k)) = self
            .kinds
            .iter()
            .find(|((g, v, k), _)| *g == group && *v == version && *k == kind)
        {
            return match k
                .compiled
                .get_or_init(|| Schema::new((k.generate)()).map_err(|e| e.to_string()))
            {
                Ok(s) => CoreLookup::Schema(s),
                Err(e) => CoreLookup::BadSchema(e.clone()),
            };
        }
        let mut versions: Vec<&'static str> = self
            .kinds
            .keys()
            .filter(|(g, _, k)| *g == group && *k == kind)
            .map(|(_, v, _)| *v)
            .collect();
        if !versions.is_empty() {
            versions.sort_unstable();
            return CoreLookup::OtherVersions(versions);
        }
        let known: BTreeMap<&'static str, ()> = self
            .kinds
            .keys()
            .filter(|(g, _, _)| *g == group)
            .map(|(_, _, k)| (*k, ()))
            .collect();
        CoreLookup::UnknownKind(known.into_keys().collect())
    }

    /// Every (apiVersion, kind) known, sorted.
    pub fn known(&self) -> Vec<(String, &'static str)> {
        let mut out: Vec<(String, &'static str)> = self
            .kinds
            .keys()
            .map(|(g, v, k)| {
                let av = if g.is_empty() {
                    v.to_string()
                } else {
                    format!("{g}/{v}")
                };
                (av, *k)
            })
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metadata_schema::yaml;

    fn problems(kinds: &CoreKinds, text: &str) -> Vec<String> {
        let doc = yaml::parse_one(text).unwrap();
        let j = doc.to_json();
        let CoreLookup::Schema(s) = kinds.lookup(
            j["apiVersion"].as_str().unwrap(),
            j["kind"].as_str().unwrap(),
        ) else {
            panic!("no schema for {text}");
        };
        s.check(&doc, "t.yaml")
            .into_iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn every_builtin_kind_compiles() {
        let kinds = CoreKinds::default();
        for (av, k) in kinds.known() {
            assert!(
                matches!(kinds.lookup(&av, k), CoreLookup::Schema(_)),
                "{av} {k} does not compile"
            );
        }
    }

    #[test]
    fn a_valid_deployment_passes_and_typos_are_errors_at_their_position() {
        let kinds = CoreKinds::default();
        let ok = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  selector:\n    matchLabels: {app: x}\n  template:\n    metadata:\n      labels: {app: x}\n    spec:\n      containers:\n        - name: x\n          image: busybox\n          ports: [{containerPort: 80}]\n          resources: {limits: {cpu: 1, memory: 64Mi}}\n";
        assert_eq!(problems(&kinds, ok), Vec::<String>::new());
        let bad = ok
            .replace("containerPort: 80", "containerPort: eighty")
            .replace(
                "image: busybox",
                "imagePullPolicy: Always\n          imag: busybox",
            );
        let p = problems(&kinds, &bad);
        assert!(
            p.iter()
                .any(|p| p.starts_with("t.yaml:15:11:") && p.contains("'imag' was unexpected")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.contains("\"eighty\" is not of type \"integer\"")),
            "{p:?}"
        );
    }

    #[test]
    fn int_or_string_and_quantities_accept_both() {
        let kinds = CoreKinds::default();
        let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports:\n    - {port: 80, targetPort: http}\n    - {port: 81, targetPort: 8081}\n";
        assert_eq!(problems(&kinds, svc), Vec::<String>::new());
    }

    #[test]
    fn crd_defaults_and_enums_may_be_any_json() {
        let kinds = CoreKinds::default();
        let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: as.x.io}\nspec:\n  group: x.io\n  names: {kind: A, plural: as}\n  scope: Namespaced\n  versions:\n    - name: v1\n      served: true\n      storage: true\n      schema:\n        openAPIV3Schema:\n          type: object\n          properties:\n            on: {type: boolean, default: true}\n            mode: {type: string, enum: [a, b]}\n";
        assert_eq!(problems(&kinds, crd), Vec::<String>::new());
        let p = problems(&kinds, &crd.replace("served: true", "serve: true"));
        assert!(
            p.iter().any(|p| p.contains("'serve' was unexpected")),
            "{p:?}"
        );
    }

    #[test]
    fn unknown_kinds_and_versions_of_builtin_groups_are_named() {
        let kinds = CoreKinds::default();
        match kinds.lookup("apps/v1beta1", "Deployment") {
            CoreLookup::OtherVersions(v) => assert_eq!(v, ["v1"]),
            _ => panic!("apps/v1beta1 Deployment"),
        }
        match kinds.lookup("apps/v1", "Deploymnet") {
            CoreLookup::UnknownKind(k) => assert!(k.contains(&"Deployment"), "{k:?}"),
            _ => panic!("typo kind"),
        }
        assert!(matches!(
            kinds.lookup("metallb.io/v1beta1", "IPAddressPool"),
            CoreLookup::NotBuiltin
        ));
    }
}
