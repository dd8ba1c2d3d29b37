{{/* The name every object of this ClusterClass starts with: <release>-<chart version>. */}}
{{- define "beowulf.prefix" -}}
{{ .Release.Name }}-{{ .Chart.Version }}
{{- end }}
