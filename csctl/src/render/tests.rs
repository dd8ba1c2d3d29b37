use serde_json::json;

use super::*;

fn data() -> serde_json::Value {
    json!({
        "Release": {"Name": "beowulf-hpc-1-33", "Namespace": "ns"},
        "Chart": {"Name": "beowulf-hpc-1-33-cluster-class", "Version": "v2"},
        "Values": {"image": {"name": "hpc-node"}, "list": ["a", "b"], "sel": {"role": "compute", "rack": "r1"},
                   "empty": "", "n": 3}
    })
}

fn r(t: &str) -> String {
    render_str(t, &data()).unwrap()
}

#[test]
fn fields_and_trimming() {
    assert_eq!(
        r("name: {{ .Release.Name }}-{{ .Chart.Version }}\n"),
        "name: beowulf-hpc-1-33-v2\n"
    );
    assert_eq!(r("a\n  {{- .Values.image.name }}\n"), "ahpc-node\n");
    assert_eq!(r("a {{ .Values.n -}}\n\n  b"), "a 3b");
    assert_eq!(r("x{{/* a comment */}}y{{- /* trimmed */ -}}  z"), "xyz");
    assert_eq!(r("{{ .Values.missing }}|{{ .Values.missing.deeper }}"), "|");
}

#[test]
fn control_structures() {
    assert_eq!(
        r("{{ if .Values.empty }}A{{ else if .Values.n }}B{{ else }}C{{ end }}"),
        "B"
    );
    assert_eq!(r("{{ if .Values.empty }}A{{ end }}"), "");
    assert_eq!(r("{{ range .Values.list }}[{{ . }}]{{ end }}"), "[a][b]");
    assert_eq!(
        r("{{ range $i, $v := .Values.list }}{{ $i }}={{ $v }} {{ end }}"),
        "0=a 1=b "
    );
    assert_eq!(
        r("{{ range $k, $v := .Values.sel }}{{ $k }}:{{ $v }};{{ end }}"),
        "rack:r1;role:compute;"
    );
    assert_eq!(
        r("{{ range .Values.none }}x{{ else }}none{{ end }}"),
        "none"
    );
    assert_eq!(
        r("{{ with .Values.image }}{{ .name }}/{{ $.Release.Namespace }}{{ end }}"),
        "hpc-node/ns"
    );
    assert_eq!(r("{{ $x := .Values.n }}{{ $x = 4 }}{{ $x }}"), "4");
    assert_eq!(
        r("{{ range $r := list \"cp\" \"w\" }}{{ $r }}-{{ $.Values.n }} {{ end }}"),
        "cp-3 w-3 "
    );
}

#[test]
fn define_include_template() {
    let t = "{{- define \"p\" -}}{{ .Release.Name }}-{{ .Chart.Version }}{{- end }}name: {{ include \"p\" . }}\n{{ template \"p\" . }}";
    assert_eq!(r(t), "name: beowulf-hpc-1-33-v2\nbeowulf-hpc-1-33-v2");
}

#[test]
fn functions() {
    assert_eq!(r("{{ .Values.missing | default \"d\" }}"), "d");
    assert_eq!(r("{{ default \"d\" .Values.image.name }}"), "hpc-node");
    assert_eq!(r("{{ .Values.image.name | quote }}"), "\"hpc-node\"");
    assert_eq!(
        r("{{ \"abcdef-\" | trunc 7 | trimSuffix \"-\" }}"),
        "abcdef"
    );
    assert_eq!(
        r("{{ printf \"%s-%s\" .Release.Name \"x\" | replace \"-\" \"_\" }}"),
        "beowulf_hpc_1_33_x"
    );
    assert_eq!(
        r("{{ if contains \"hpc\" .Release.Name }}yes{{ end }}"),
        "yes"
    );
    assert_eq!(
        r("k:\n  {{- toYaml .Values.sel | nindent 2 }}"),
        "k:\n  rack: r1\n  role: compute"
    );
    assert_eq!(
        r("{{ toYaml .Values.list | indent 4 }}"),
        "    - a\n    - b"
    );
    assert_eq!(
        r("{{ (index .Values.list 1) }}{{ index .Values.sel \"rack\" }}"),
        "br1"
    );
    assert_eq!(
        r(
            "{{ if and (eq .Values.n 3) (ne .Values.image.name \"x\") (not .Values.empty) }}ok{{ end }}"
        ),
        "ok"
    );
    assert_eq!(
        r("{{ len .Values.list }}{{ if gt .Values.n 2 }}>{{ end }}"),
        "2>"
    );
}

#[test]
fn unsupported_constructs_are_clear_errors() {
    let e = render_str("a\n{{ tpl .Values.x . }}", &data()).unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.message.contains("`tpl` is not supported"), "{e}");
    let e = render_str("{{ sprigThing 1 }}", &data()).unwrap_err();
    assert!(
        e.message.contains("function `sprigThing` is not supported"),
        "{e}"
    );
    let e = render_str("{{ block \"x\" . }}{{ end }}", &data()).unwrap_err();
    assert!(e.message.contains("`block` is not supported"), "{e}");
    let e = render_str("{{ if .x }}", &data()).unwrap_err();
    assert!(e.message.contains("without `end`"), "{e}");
    let e = render_str("{{ .x ", &data()).unwrap_err();
    assert!(e.message.contains("unclosed action"), "{e}");
    let e = render_str("{{ include \"nope\" . }}", &data()).unwrap_err();
    assert!(e.message.contains("no template \"nope\""), "{e}");
}

#[test]
fn escaped_go_templates_pass_through() {
    // ClusterClass patches carry their own Go templates: charts escape them with backticks.
    assert_eq!(
        r("enabledIf: '{{ `{{ ne .x \"\" }}` }}'"),
        "enabledIf: '{{ ne .x \"\" }}'"
    );
}
