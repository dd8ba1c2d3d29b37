//! Reads YAML as the consumers do: a differential test of our two YAML readers against sigs.k8s.io/yaml, the
//! reading of kubectl, Helm and the cluster-stack-operator (go-yaml v2, libyaml's rules), run by the Go peer
//! `yamlcheck` (e2e/go-peers/yamlcheck, built by `.ci/install` into `$BEOWULF_PEERS_DIR/go/yamlcheck-current`).
//!
//! Our readers:
//! - `csctl`: `metadata_schema::yaml::parse_documents` + `Node::to_json`, the one reader of csctl (metadata.yaml,
//!   csctl.yaml, clusteraddon.yaml, Chart.yaml, addon manifests) and of `beowulf-release`'s schema check;
//! - `saphyr`: serde-saphyr into `serde_json::Value` with the options of the provider's standalone inventory
//!   loader (`Inventory::parse`: `from_str_with_options`, `legacy_octal_numbers`; here `from_multiple_with_options`,
//!   the same per document). The loader deserializes into typed structs, so a value difference here matters
//!   there only for a field of that type.
//!
//! The Go side splits a file the way kubectl does (apimachinery's `NewYAMLReader`: a line starting with `---`
//! and followed only by spaces or a comment separates documents; anything else after `---` is an error) and
//! converts each piece with `YAMLToJSONStrict` (duplicate keys rejected) and `YAMLToJSON` (lenient).
//!
//! The rule: if lenient Go rejects, we must reject; if strict Go accepts, we must accept with the same value; if
//! only strict Go rejects (duplicate keys: Helm and the operator accept them, kubectl's strict field validation
//! refuses them), we may reject, or accept with lenient Go's value. Every other difference fails the test unless
//! it is in `ALLOWED` with its reason. Corpus: every YAML file under `providers/`, the Cluster Stacks fixtures
//! (`$CLUSTER_STACKS_FIXTURES_DIR`) and the edge cases in `tests/yaml-corpus/`.
//!
//! Normalisations (where no consumer sees a difference):
//! - documents that are `null` (empty, only comments, `~`) are dropped on both sides: kubectl and Helm skip them,
//!   and `parse_documents` drops them itself;
//! - numbers compare by value: Go prints a whole float as `1000` (`1e3`), we as `1000.0`; an integer beyond
//!   64 bits is a float on both sides but printed differently. A JSON consumer reads the same number.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use Diff::{Differs, WeAccept, WeReject};
use Reader::{Csctl, Saphyr};
use serde_json::Value;

/// The differences we accept: (file of tests/yaml-corpus or corpus label, reader, difference, why).
const ALLOWED: &[(&str, Reader, Diff, &str)] = &[
    // kubectl's splitter, not YAML: consumers disagree among themselves, we read what libyaml and Helm read.
    ("directive-yaml11.yaml", Csctl, WeAccept, KUBECTL_SPLITTER),
    ("directive-yaml11.yaml", Saphyr, WeAccept, KUBECTL_SPLITTER),
    (
        "empty-explicit-null-doc.yaml",
        Csctl,
        WeAccept,
        KUBECTL_SPLITTER,
    ),
    (
        "empty-explicit-null-doc.yaml",
        Saphyr,
        WeAccept,
        KUBECTL_SPLITTER,
    ),
    (
        "markers-content-on-marker-line.yaml",
        Csctl,
        WeAccept,
        KUBECTL_SPLITTER,
    ),
    (
        "markers-content-on-marker-line.yaml",
        Saphyr,
        WeAccept,
        KUBECTL_SPLITTER,
    ),
    (
        "markers-end-then-content.yaml",
        Csctl,
        Differs,
        "`a: 1` `...` `b: 2` (no `---`) is two documents in YAML and to libyaml; sigs.k8s.io/yaml decodes only the \
         first and silently drops `b` (kubectl's splitter cuts only at `---`). We see both (a single-document \
         file then fails `parse_one`); dropping data silently is not worth copying",
    ),
    (
        "markers-end-then-content.yaml",
        Saphyr,
        Differs,
        "as for csctl",
    ),
    // Where our parser (granit-parser, under both readers) is stricter than libyaml: not fixable from here.
    (
        "escape-single-quote.yaml",
        Csctl,
        WeReject,
        "`\\'` in a double-quoted scalar is not a YAML escape (1.1 or 1.2); libyaml accepts it as an extension. \
         Parser-level; write `'` alone",
    ),
    ("escape-single-quote.yaml", Saphyr, WeReject, "as for csctl"),
    (
        "flow-underindented.yaml",
        Csctl,
        WeReject,
        "a flow collection continued on a line less indented than its block parent is invalid YAML (1.2 \
         spec, 7.x: flow lines are indented at least n); libyaml does not check. Parser-level",
    ),
    ("flow-underindented.yaml", Saphyr, WeReject, "as for csctl"),
    (
        "tab-after-colon.yaml",
        Csctl,
        WeReject,
        "`key:<TAB>value` is valid YAML (a tab separates in a line) and libyaml takes it; granit-parser wants a \
         space. Parser-level (serde-saphyr upstream); rare in Kubernetes YAML, the error names the spot",
    ),
    ("tab-after-colon.yaml", Saphyr, WeReject, "as for csctl"),
    (
        "tab-after-dash.yaml",
        Csctl,
        WeAccept,
        "`-<TAB>item`: libyaml refuses a tab after the indicator (\"cannot start any token\"), YAML 1.2 \
         allows it; parser-level, and the value is the one the author meant",
    ),
    ("tab-after-dash.yaml", Saphyr, WeAccept, "as for csctl"),
    (
        "tags-binary.yaml",
        Csctl,
        Differs,
        "`!!binary` decodes to its bytes in go-yaml, stays base64 text for us: Kubernetes YAML carries \
         base64 as plain strings (Secret `data`), never as a `!!binary` tag; csctl checks no such value",
    ),
    // The inventory reader (serde-saphyr's own YAML 1.1/1.2 mix). The inventory is read only by Beowulf and
    // into typed fields (strings, u16/u32, bools), so these matter only for a field of that type.
    (
        "directive-yaml12.yaml",
        Saphyr,
        WeAccept,
        "`%YAML 1.2`: libyaml reads 1.1 only; serde-saphyr reads 1.2. Valid YAML, and meaningless for typed fields",
    ),
    (
        "escape-slash.yaml",
        Saphyr,
        WeAccept,
        "`\\/` is a YAML 1.2 escape libyaml lacks; the inventory's strings mean the same with it",
    ),
    (
        "scalars-inf.yaml",
        Saphyr,
        WeAccept,
        "`.inf` into a `serde_json::Value` is the string `.inf`; the inventory has no float field, and a \
         string or integer field refuses it",
    ),
    (
        "scalars-inf-neg.yaml",
        Saphyr,
        WeAccept,
        "as scalars-inf.yaml",
    ),
    ("scalars-nan.yaml", Saphyr, WeAccept, "as scalars-inf.yaml"),
    (
        "tags.yaml",
        Saphyr,
        WeReject,
        "serde-saphyr does not put a core-tagged scalar (`!!int \"12\"`) into an untyped value; a typed field \
         takes it. Nobody tags inventory values",
    ),
    ("tags-bool-null.yaml", Saphyr, WeReject, "as tags.yaml"),
    (
        "keys-non-string.yaml",
        Saphyr,
        Differs,
        "serde-saphyr keeps a key's text (`0x10`, `1e3`), go-yaml resolves it (`16`, `1000`); inventory keys \
         are field names, which must be the text",
    ),
    (
        "keys-yaml11-booleans.yaml",
        Saphyr,
        Differs,
        "YAML 1.1 turns the key `on`/`y`/`no` into a boolean (\"true\"), serde-saphyr keeps the text; inventory \
         keys are field names, and none is a YAML 1.1 boolean",
    ),
    (
        "scalars-yaml11-booleans.yaml",
        Saphyr,
        Differs,
        "serde-saphyr takes YAML 1.1 booleans in any case (`yEs`), go-yaml only in three spellings; a bool \
         field gets what the author meant, a string field gets the text either way",
    ),
    (
        "merge-key-after.yaml",
        Saphyr,
        Differs,
        "a `<<` merge after an explicit key: the YAML merge spec and serde-saphyr keep the explicit key, \
         go-yaml v2 lets the merge override it",
    ),
    (
        "scalars-ints-more.yaml",
        Saphyr,
        Differs,
        "`_` inside a float (`1_0.5`) or doubled (`1__0`): go-yaml strips every `_`, serde-saphyr takes only \
         single separators in integers and keeps the rest as strings (a number field refuses them)",
    ),
    (
        "scalars-floats-odd.yaml",
        Saphyr,
        Differs,
        "as scalars-ints-more.yaml (`1_000e3`)",
    ),
];

const KUBECTL_SPLITTER: &str = "kubectl's document splitter (apimachinery NewYAMLReader) refuses anything but a \
    comment after `---` (`--- ~`, `--- {a: 1}`) and cuts a `%YAML` directive off its document; libyaml, Helm \
    (whole-file sigs.k8s.io/yaml) and the YAML spec accept them. csctl reads Chart.yaml/values.yaml as Helm does";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    Csctl,
    Saphyr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Diff {
    /// We accept what (lenient) Go rejects.
    WeAccept,
    /// We reject what (strict) Go accepts.
    WeReject,
    /// Both accept, the values differ.
    Differs,
}

type Docs = Result<Vec<Value>, String>;

struct GoResult {
    strict: Docs,
    lenient: Docs,
}

fn yamlcheck() -> PathBuf {
    let peers =
        std::env::var_os("BEOWULF_PEERS_DIR").unwrap_or_else(|| "/opt/beowulf-peers".into());
    let bin = Path::new(&peers).join("go/yamlcheck-current/yamlcheck");
    assert!(
        bin.is_file(),
        "{} is missing: run `bash .ci/install` (builds the Go peer e2e/go-peers/yamlcheck, seconds; needs Go \
         and the Go module proxy)",
        bin.display()
    );
    bin
}

fn run_go(bin: &Path, file: &Path) -> GoResult {
    let out = Command::new(bin).arg(file).output().expect("run yamlcheck");
    assert!(
        out.status.success(),
        "yamlcheck {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut strict = Ok(Vec::new());
    let mut lenient = Ok(Vec::new());
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let doc: Value = serde_json::from_str(line).unwrap();
        if let Some(e) = doc.get("split_error") {
            let e = format!("split: {}", e.as_str().unwrap());
            return GoResult {
                strict: Err(e.clone()),
                lenient: Err(e),
            };
        }
        for (acc, mode) in [(&mut strict, "strict"), (&mut lenient, "lenient")] {
            let r = &doc[mode];
            if let Ok(docs) = acc {
                match r.get("error") {
                    Some(e) => *acc = Err(e.as_str().unwrap().to_string()),
                    None if r["json"].is_null() => {}
                    None => docs.push(r["json"].clone()),
                }
            }
        }
    }
    GoResult { strict, lenient }
}

fn run_ours(reader: Reader, text: &str) -> Docs {
    let docs = match reader {
        Reader::Csctl => metadata_schema::yaml::parse_documents(text)
            .map(|d| d.iter().map(|n| n.to_json()).collect::<Vec<_>>())
            .map_err(|e| e.to_string()),
        Reader::Saphyr => serde_saphyr::from_multiple_with_options::<Value>(
            text,
            serde_saphyr::options! { legacy_octal_numbers: true },
        )
        .map_err(|e| {
            let s = e.to_string();
            s.lines().next().unwrap_or(&s).to_string()
        }),
    };
    docs.map(|d| d.into_iter().filter(|v| !v.is_null()).collect())
}

/// Equal up to the documented normalisations (numbers by value).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || (x.is_f64() || y.is_f64()) && x.as_f64() == y.as_f64()
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn same_docs(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
}

fn short(docs: &Docs) -> String {
    let s = match docs {
        Ok(d) => serde_json::to_string(d).unwrap(),
        Err(e) => format!("error: {e}"),
    };
    if s.len() > 300 {
        format!("{}…", &s[..s.floor_char_boundary(300)])
    } else {
        s
    }
}

fn compare(ours: &Docs, go: &GoResult) -> Option<Diff> {
    match (ours, &go.strict, &go.lenient) {
        (Ok(_), _, Err(_)) => Some(Diff::WeAccept),
        (Err(_), Ok(_), _) => Some(Diff::WeReject),
        (Err(_), Err(_), _) => None,
        (Ok(o), _, Ok(g)) => (!same_docs(o, g)).then_some(Diff::Differs),
    }
}

fn corpus() -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    let mut add = |label: &str, dir: &Path| {
        let mut found: Vec<_> = walkdir::WalkDir::new(dir)
            .into_iter()
            .map(|e| e.unwrap())
            .filter(|e| {
                e.file_type().is_file()
                    && matches!(
                        e.path().extension().and_then(|x| x.to_str()),
                        Some("yaml" | "yml")
                    )
            })
            .map(|e| {
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                (format!("{label}/{rel}"), e.into_path())
            })
            .collect();
        assert!(!found.is_empty(), "no YAML files under {}", dir.display());
        found.sort();
        files.extend(found);
    };
    add("providers", &root.join("providers"));
    add("fixtures", &common::fixtures_dir());
    add(
        "yaml-corpus",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/yaml-corpus"),
    );
    files
}

#[test]
fn our_yaml_reading_agrees_with_sigs_k8s_io_yaml() {
    let bin = yamlcheck();
    let files = corpus();
    let mut failures = Vec::new();
    let mut allowed_used = vec![false; ALLOWED.len()];
    let mut documents = 0;
    for (label, path) in &files {
        // As csctl reads files (`from_utf8_lossy`; the inventory loader's `read_to_string` is the same on UTF-8).
        let text = String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned();
        let go = run_go(&bin, path);
        documents += go.lenient.as_ref().map_or(1, Vec::len);
        for reader in [Reader::Csctl, Reader::Saphyr] {
            let ours = run_ours(reader, &text);
            let Some(diff) = compare(&ours, &go) else {
                continue;
            };
            // Entries name a file of tests/yaml-corpus, or any corpus file by its label.
            let allowed = ALLOWED.iter().position(|(f, r, d, _)| {
                (*f == label.as_str() || format!("yaml-corpus/{f}") == *label)
                    && *r == reader
                    && *d == diff
            });
            match allowed {
                Some(i) => allowed_used[i] = true,
                None => failures.push(format!(
                    "{label} ({reader:?}, {diff:?}):\n  ours:        {}\n  Go strict:   {}\n  Go lenient:  {}",
                    short(&ours),
                    short(&go.strict),
                    short(&go.lenient)
                )),
            }
        }
    }
    for (used, (file, reader, diff, _)) in allowed_used.iter().zip(ALLOWED) {
        if !used {
            failures.push(format!(
                "allow-list entry no longer needed: {file} ({reader:?}, {diff:?})"
            ));
        }
    }
    eprintln!(
        "yaml differential: {} files, {documents} documents (Go's count), {} allowed differences",
        files.len(),
        ALLOWED.len()
    );
    assert!(
        failures.is_empty(),
        "{} disagreements with sigs.k8s.io/yaml (fix our reading or add to ALLOWED with the reason):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
