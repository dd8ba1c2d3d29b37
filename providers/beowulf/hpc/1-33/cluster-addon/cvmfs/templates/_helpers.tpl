{{/* repository[:tag]@digest, or repository:tag when no digest is known. */}}
{{- define "cvmfs.image" -}}
{{- if .digest -}}
{{ .repository }}{{ if .tag }}:{{ .tag }}{{ end }}@{{ .digest }}
{{- else -}}
{{ .repository }}:{{ .tag }}
{{- end -}}
{{- end }}
