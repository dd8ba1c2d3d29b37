//! The CustomResourceDefinitions as `beowulf crds` prints and `beowulf release` ships them.
//!
//! kube-derive renders each kind's schema; this module adds what derive cannot express: the map-list markers
//! on `conditions` / `failureDomains` (so server-side apply merges them by key) and the CEL immutability
//! rules the contract asks for.
//!
//! *Decision:* templates carry no CEL immutability rule. The contract wants `spec.template.spec` immutable
//! but SSA dry-runs by the topology controller exempt (annotation `topology.cluster.x-k8s.io/dry-run`), and
//! CEL cannot read annotations; a rule would break ClusterClass rebases. Template rotation is documented.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::{Value, json};

use super::{
    BeowulfCluster, BeowulfClusterTemplate, BeowulfHost, BeowulfImage, BeowulfMachine,
    BeowulfMachineTemplate, BeowulfRemediation, BeowulfRemediationTemplate,
};

/// Every CRD of the provider, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    let mut out = vec![
        BeowulfCluster::crd(),
        BeowulfClusterTemplate::crd(),
        BeowulfHost::crd(),
        BeowulfImage::crd(),
        BeowulfMachine::crd(),
        BeowulfMachineTemplate::crd(),
        BeowulfRemediation::crd(),
        BeowulfRemediationTemplate::crd(),
    ];
    for crd in &mut out {
        finish(crd);
    }
    out
}

/// All CRDs as one multi-document YAML stream.
pub fn to_yaml() -> Result<String, serde_saphyr::ser::Error> {
    let mut s = String::new();
    for crd in all() {
        s.push_str("---\n");
        s.push_str(&serde_saphyr::to_string(&crd)?);
    }
    Ok(s)
}

fn finish(crd: &mut CustomResourceDefinition) {
    let kind = crd.spec.names.kind.clone();
    // The API server would default it; spelled out so the shipped YAML says what clients will see.
    crd.spec.names.list_kind = Some(format!("{kind}List"));
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        // Round-trip through JSON: editing nested JSONSchemaProps by hand is far noisier.
        let Ok(mut v) = serde_json::to_value(&*schema) else {
            continue;
        };
        kubernetes_formats(&mut v);
        mark_map_list(
            &mut v,
            &["properties", "status", "properties", "conditions"],
            "type",
        );
        mark_map_list(
            &mut v,
            &["properties", "status", "properties", "failureDomains"],
            "name",
        );
        mark_map_list(
            &mut v,
            &["properties", "spec", "properties", "failureDomains"],
            "name",
        );
        for (path, rules) in cel_rules(&kind) {
            if let Some(node) = pointer_mut(&mut v, path) {
                node["x-kubernetes-validations"] = Value::Array(rules);
            }
        }
        if let Ok(new) = serde_json::from_value(v) {
            *schema = new;
        }
    }
}

/// Integer formats Kubernetes knows are `int32` and `int64`; schemars writes Rust's (`uint8`, `uint32`, …),
/// which the API server answers with an "unrecognized format" warning on every apply. The bounds schemars
/// writes beside them (`minimum: 0`, `maximum`) stay, and the upper bound `uint16`/`uint32` only implied is
/// written out: without it the server stores `5000000000` in a `u32` field, and the object (and every list
/// holding it) no longer deserializes in the controllers.
fn kubernetes_formats(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let format = map.get("format").and_then(Value::as_str);
            let implied_max = match format {
                Some("uint16") => Some(u64::from(u16::MAX)),
                Some("uint32") => Some(u64::from(u32::MAX)),
                _ => None,
            };
            let replacement = match format {
                Some("int8" | "int16" | "uint8" | "uint16") => Some("int32"),
                Some("uint32" | "uint64" | "uint" | "int" | "uint128" | "int128") => Some("int64"),
                _ => None,
            };
            if let Some(max) = implied_max {
                map.entry("maximum").or_insert(json!(max));
            }
            if let Some(r) = replacement {
                map.insert("format".into(), json!(r));
            }
            map.values_mut().for_each(kubernetes_formats);
        }
        Value::Array(items) => items.iter_mut().for_each(kubernetes_formats),
        _ => {}
    }
}

fn pointer_mut<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |node, key| node.get_mut(*key))
}

fn mark_map_list(v: &mut Value, path: &[&str], key: &str) {
    if let Some(node) = pointer_mut(v, path) {
        node["x-kubernetes-list-type"] = json!("map");
        node["x-kubernetes-list-map-keys"] = json!([key]);
    }
}

/// CEL transition rules, per kind: (path of the schema node, rules).
fn cel_rules(kind: &str) -> Vec<(&'static [&'static str], Vec<Value>)> {
    match kind {
        "BeowulfMachine" => vec![(
            &["properties", "spec"][..],
            vec![
                json!({
                    "rule": "!has(oldSelf.providerID) || (has(self.providerID) && self.providerID == oldSelf.providerID)",
                    "message": "providerID is immutable once set",
                }),
                json!({
                    "rule": "!has(oldSelf.hostRef) || (has(self.hostRef) && self.hostRef.name == oldSelf.hostRef.name)",
                    "message": "hostRef is immutable once set: delete the machine to release its host",
                }),
            ],
        )],
        "BeowulfHost" => vec![(
            &["properties", "spec"][..],
            vec![json!({
                "rule": "!has(oldSelf.consumerRef) || !has(self.consumerRef) || self.consumerRef == oldSelf.consumerRef",
                "message": "consumerRef cannot move from one consumer to another: release the host first",
            })],
        )],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CAPI's `flect.Pluralize` for the words our kinds end in: every Beowulf kind ends in a word whose
    /// plural is `+s` (host, image, cluster, template, machine). Checked word by word so a new kind whose last
    /// word is irregular (…Policy, …Class, …Index) fails here instead of in clusterctl.
    fn flect_plural(lower_kind: &str) -> String {
        for (suffix, plural) in [
            ("class", "classes"),
            ("policy", "policies"),
            ("index", "indices"),
            ("status", "statuses"),
            ("address", "addresses"),
        ] {
            if let Some(stem) = lower_kind.strip_suffix(suffix) {
                return format!("{stem}{plural}");
            }
        }
        for ending in ["s", "x", "z", "ch", "sh"] {
            assert!(
                !lower_kind.ends_with(ending),
                "no flect rule coded for {lower_kind}"
            );
        }
        format!("{lower_kind}s")
    }

    #[test]
    fn crd_names_follow_capi_flect_rule() {
        let names: Vec<String> = all()
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "beowulfclusters.infrastructure.cluster.x-k8s.io",
                "beowulfclustertemplates.infrastructure.cluster.x-k8s.io",
                "beowulfhosts.infrastructure.cluster.x-k8s.io",
                "beowulfimages.infrastructure.cluster.x-k8s.io",
                "beowulfmachines.infrastructure.cluster.x-k8s.io",
                "beowulfmachinetemplates.infrastructure.cluster.x-k8s.io",
                "beowulfremediations.infrastructure.cluster.x-k8s.io",
                "beowulfremediationtemplates.infrastructure.cluster.x-k8s.io",
            ]
        );
        for crd in all() {
            let kind = &crd.spec.names.kind;
            let expect = format!(
                "{}.{}",
                flect_plural(&kind.to_lowercase()),
                super::super::GROUP
            );
            assert_eq!(
                crd.metadata.name.as_deref(),
                Some(expect.as_str()),
                "{kind}"
            );
            assert_eq!(crd.spec.names.plural, flect_plural(&kind.to_lowercase()));
            assert_eq!(
                crd.spec.names.list_kind.as_deref(),
                Some(format!("{kind}List").as_str())
            );
        }
    }

    /// Every `format` in our schemas is one the API server recognizes (kube-apiserver warns "unrecognized
    /// format" on each apply otherwise; the management-cluster test sees those warnings).
    #[test]
    fn schemas_use_only_formats_kubernetes_knows() {
        fn formats(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(f) = m.get("format").and_then(Value::as_str) {
                        out.push(f.to_string());
                    }
                    m.values().for_each(|x| formats(x, out));
                }
                Value::Array(a) => a.iter().for_each(|x| formats(x, out)),
                _ => {}
            }
        }
        let known = [
            "int32",
            "int64",
            "float",
            "double",
            "byte",
            "date",
            "date-time",
            "duration",
            "uri",
            "hostname",
            "ipv4",
            "ipv6",
            "cidr",
            "mac",
            "uuid",
            "password",
        ];
        let mut seen = Vec::new();
        for crd in all() {
            formats(&serde_json::to_value(&crd).unwrap(), &mut seen);
        }
        assert!(seen.iter().any(|f| f == "int64"), "{seen:?}");
        let unknown: Vec<_> = seen
            .iter()
            .filter(|f| !known.contains(&f.as_str()))
            .collect();
        assert!(unknown.is_empty(), "{unknown:?}");
    }

    /// Unsigned integers keep their bounds through the format mapping, and quantities are int-or-string:
    /// the API server must refuse what the controllers could not read back
    /// (`spec.hardwareRequirements.cpuThreads: 5000000000` was stored, then failed to deserialize).
    #[test]
    fn integers_keep_their_bounds_and_quantities_are_int_or_string() {
        let reqs =
            schema_of("BeowulfMachine")["properties"]["spec"]["properties"]["hardwareRequirements"]
                ["properties"]
                .clone();
        let cpu = &reqs["cpuThreads"];
        assert_eq!(
            (&cpu["format"], &cpu["minimum"], &cpu["maximum"]),
            (&json!("int64"), &json!(0.0), &json!(4_294_967_295.0))
        );
        let count = &reqs["disks"]["items"]["properties"]["count"];
        assert_eq!(
            (&count["minimum"], &count["maximum"]),
            (&json!(1.0), &json!(4_294_967_295.0))
        );
        assert_eq!(reqs["gpus"]["properties"]["count"]["minimum"], json!(1.0));
        for q in [
            &reqs["memory"],
            &reqs["disks"]["items"]["properties"]["minSize"],
        ] {
            assert_eq!(q["x-kubernetes-int-or-string"], json!(true), "{q}");
            assert!(q.get("type").is_none() && q.get("anyOf").is_none(), "{q}");
        }
        assert_eq!(
            schema_of("BeowulfHost")
                .pointer("/properties/spec/properties/bmc/properties/cipherSuite/maximum"),
            Some(&json!(255.0)),
            "a bound schemars wrote stays as written"
        );
    }

    #[test]
    fn flect_rule_helper_knows_irregular_words() {
        assert_eq!(flect_plural("fooclass"), "fooclasses");
        assert_eq!(flect_plural("foopolicy"), "foopolicies");
        assert_eq!(flect_plural("beowulfhost"), "beowulfhosts");
    }

    #[test]
    fn crds_are_namespaced_labelled_categorised_with_status() {
        for crd in all() {
            let kind = crd.spec.names.kind.clone();
            assert_eq!(crd.spec.group, "infrastructure.cluster.x-k8s.io");
            assert_eq!(crd.spec.scope, "Namespaced", "{kind}");
            let labels = crd.metadata.labels.clone().unwrap_or_default();
            assert_eq!(
                labels.get("cluster.x-k8s.io/v1beta2").map(String::as_str),
                Some("v1alpha1")
            );
            assert_eq!(
                crd.spec.names.categories,
                Some(vec!["cluster-api".to_string()]),
                "{kind}"
            );
            assert_eq!(crd.spec.versions.len(), 1);
            let v = &crd.spec.versions[0];
            assert!(v.served && v.storage);
            let has_status = v
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some();
            let expect_status = !kind.ends_with("Template") && kind != "BeowulfImage";
            assert_eq!(has_status, expect_status, "{kind} status subresource");
            let columns = v.additional_printer_columns.clone().unwrap_or_default();
            assert!(!columns.is_empty(), "{kind} has printer columns");
        }
    }

    fn schema_of(kind: &str) -> Value {
        let crd = all()
            .into_iter()
            .find(|c| c.spec.names.kind == kind)
            .unwrap();
        serde_json::to_value(
            crd.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap()
    }

    /// The rules of a structural schema (Kubernetes "Specifying a structural schema"): every node has a type
    /// (or is int-or-string / preserve-unknown-fields), no `$ref`/`definitions`, logical junctors carry no
    /// type/default/description/nullable, `metadata` at the root is not constrained beyond name/generateName,
    /// and `properties` and `additionalProperties` are not both set.
    fn check_structural(node: &Value, path: &str, errors: &mut Vec<String>) {
        let Some(obj) = node.as_object() else {
            errors.push(format!("{path}: not an object"));
            return;
        };
        for banned in ["$ref", "definitions", "$defs", "$schema"] {
            if obj.contains_key(banned) {
                errors.push(format!("{path}: has {banned}"));
            }
        }
        let escape = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
            || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        if !obj.contains_key("type") && !escape {
            errors.push(format!("{path}: no type"));
        }
        if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
            errors.push(format!("{path}: both properties and additionalProperties"));
        }
        for junctor in ["anyOf", "oneOf", "allOf", "not"] {
            let items: Vec<&Value> = match obj.get(junctor) {
                Some(Value::Array(a)) => a.iter().collect(),
                Some(v) => vec![v],
                None => continue,
            };
            for item in items {
                for k in [
                    "type",
                    "default",
                    "description",
                    "nullable",
                    "additionalProperties",
                ] {
                    if item.get(k).is_some() {
                        errors.push(format!("{path}.{junctor}: sets {k}"));
                    }
                }
            }
        }
        if let Some(Value::Object(props)) = obj.get("properties") {
            for (k, v) in props {
                check_structural(v, &format!("{path}.{k}"), errors);
            }
        }
        if let Some(items) = obj.get("items") {
            check_structural(items, &format!("{path}[]"), errors);
        }
        if let Some(ap @ Value::Object(_)) = obj.get("additionalProperties") {
            check_structural(ap, &format!("{path}{{}}"), errors);
        }
    }

    #[test]
    fn every_crd_schema_is_structural() {
        for crd in all() {
            let kind = crd.spec.names.kind.clone();
            let schema = schema_of(&kind);
            let mut errors = Vec::new();
            check_structural(&schema, &kind, &mut errors);
            if let Some(meta) = schema.pointer("/properties/metadata") {
                let extra: Vec<&String> = meta
                    .as_object()
                    .unwrap()
                    .keys()
                    .filter(|k| *k != "type")
                    .collect();
                assert!(
                    extra.is_empty(),
                    "{kind}: root metadata is constrained: {extra:?}"
                );
            }
            assert!(
                errors.is_empty(),
                "{kind} is not structural:\n{}",
                errors.join("\n")
            );
        }
    }

    #[test]
    fn structural_checker_catches_violations() {
        let mut errors = Vec::new();
        let bad = json!({"type": "object", "properties": {
            "a": {"description": "no type"},
            "b": {"$ref": "#/definitions/x", "type": "object"},
            "c": {"type": "string", "anyOf": [{"type": "string"}]},
        }});
        check_structural(&bad, "x", &mut errors);
        assert_eq!(errors.len(), 3, "{errors:?}");
    }

    #[test]
    fn conditions_and_failure_domains_are_map_lists() {
        for kind in ["BeowulfHost", "BeowulfMachine", "BeowulfCluster"] {
            let s = schema_of(kind);
            let c = s
                .pointer("/properties/status/properties/conditions")
                .unwrap();
            assert_eq!(c["x-kubernetes-list-type"], "map", "{kind}");
            assert_eq!(c["x-kubernetes-list-map-keys"], json!(["type"]));
        }
        let s = schema_of("BeowulfCluster");
        let fd = s
            .pointer("/properties/status/properties/failureDomains")
            .unwrap();
        assert_eq!(fd["x-kubernetes-list-map-keys"], json!(["name"]));
        assert_eq!(fd["type"], "array");
        // The v1beta2 item shape.
        let item = fd.pointer("/items/properties").unwrap();
        for k in ["name", "controlPlane", "attributes"] {
            assert!(item.get(k).is_some(), "failureDomains item has {k}");
        }
    }

    #[test]
    fn contract_field_names_are_exact() {
        let m = schema_of("BeowulfMachine");
        assert!(
            m.pointer("/properties/spec/properties/providerID")
                .is_some()
        );
        assert!(
            m.pointer("/properties/status/properties/initialization/properties/provisioned")
                .is_some()
        );
        assert!(
            m.pointer("/properties/status/properties/addresses/items/properties/type")
                .is_some()
        );
        let c = schema_of("BeowulfCluster");
        assert!(
            c.pointer("/properties/spec/properties/controlPlaneEndpoint/properties/host")
                .is_some()
        );
        assert!(
            c.pointer("/properties/spec/properties/controlPlaneEndpoint/properties/port")
                .is_some()
        );
        let t = schema_of("BeowulfMachineTemplate");
        assert!(
            t.pointer("/properties/spec/properties/template/properties/spec/properties/imageRef")
                .is_some()
        );
    }

    #[test]
    fn cel_immutability_rules_are_present() {
        let m = schema_of("BeowulfMachine");
        let rules = m
            .pointer("/properties/spec/x-kubernetes-validations")
            .unwrap()
            .to_string();
        assert!(rules.contains("oldSelf.providerID"));
        assert!(rules.contains("oldSelf.hostRef"));
        let h = schema_of("BeowulfHost");
        assert!(
            h.pointer("/properties/spec/x-kubernetes-validations")
                .is_some()
        );
    }

    #[test]
    fn yaml_round_trips() {
        let y = to_yaml().unwrap();
        assert_eq!(y.matches("kind: CustomResourceDefinition").count(), 8);
        for doc in y.split("---\n").filter(|d| !d.trim().is_empty()) {
            let crd: CustomResourceDefinition = serde_saphyr::from_str(doc).unwrap();
            assert!(
                crd.metadata
                    .name
                    .unwrap()
                    .ends_with(".infrastructure.cluster.x-k8s.io")
            );
        }
    }
}
