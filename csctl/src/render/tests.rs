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

#[test]
fn field_after_parenthesis_only_without_space() {
    // `(x).f` is a field of the parenthesised value; `(x) .f` is a second argument (Helm's `default (include
    // "fullname" .) .Values.serviceAccount.name`).
    assert_eq!(r("{{ default (print \"x\") .Values.empty }}"), "x");
    assert_eq!(
        r("{{ default (print \"x\") .Values.image.name }}"),
        "hpc-node"
    );
    assert_eq!(r("{{ (dict \"a\" .Values.image).a.name }}"), "hpc-node");
}

#[test]
fn numbers_print_as_go_prints_float64() {
    let d = json!({"Values": {"f": 2.0, "h": 1.5, "e": 1.0e10, "s": 0.000001, "i": 1000000}});
    let r = |t: &str| render_str(t, &d).unwrap();
    assert_eq!(
        r("{{ .Values.f }}|{{ .Values.h }}|{{ .Values.e }}|{{ .Values.s }}"),
        "2|1.5|1e+10|1e-06"
    );
    // Integers stay integers (Helm would print 1e+06 here: its values are all float64).
    assert_eq!(r("{{ .Values.i }}"), "1000000");
    assert_eq!(
        r("{{ toYaml .Values }}"),
        "e: 10000000000\nf: 2\nh: 1.5\ni: 1000000\ns: 1e-06"
    );
}

#[test]
fn print_and_quote_follow_go_and_sprig() {
    assert_eq!(r("{{ print \"a\" \"b\" 1 2 \"c\" }}"), "ab1 2c");
    assert_eq!(
        r("[{{ .Values.missing | quote }}][{{ squote .Values.missing }}]"),
        "[][]"
    );
}

#[test]
fn to_yaml_quotes_yaml11_numbers() {
    let d = json!({"v": ["0x1F", "1_000", "1:20", "-0o17", "123abc", "a1"]});
    assert_eq!(
        render_str("{{ toYaml .v }}", &d).unwrap(),
        "- \"0x1F\"\n- \"1_000\"\n- \"1:20\"\n- \"-0o17\"\n- \"123abc\"\n- a1"
    );
}

#[test]
fn method_calls_are_clear_errors() {
    let e = render_str("{{ (.Files.Glob \"files/*\").AsConfig }}", &data()).unwrap_err();
    assert!(
        e.message.contains("`.Files.Glob` is given arguments"),
        "{e}"
    );
}

#[test]
fn to_json_writes_as_go_encoding_json() {
    let d = json!({"v": {"b": [1.0e10, 0.000001, 1e-7, 1e21, 2.5, 3], "a": "x<y & z>\u{1}"}});
    assert_eq!(
        render_str("{{ toJson .v }}", &d).unwrap(),
        r#"{"a":"x\u003cy \u0026 z\u003e\u0001","b":[10000000000,0.000001,1e-7,1e+21,2.5,3]}"#
    );
}

#[test]
fn string_literals_take_go_escapes() {
    assert_eq!(
        r(r#"{{ "a\x41\u00e9\101\b\f\v\a" | toJson }}"#),
        r#""aAéA\b\f\u000b\u0007""#
    );
    let e = render_str(r#"{{ "\xZZ" }}"#, &data()).unwrap_err();
    assert!(e.message.contains("bad escape"), "{e}");
}
