{{/* repository[:tag]@digest, or repository:tag when no digest is known. */}}
{{- define "slurm.image" -}}
{{- if .digest -}}
{{ .repository }}{{ if .tag }}:{{ .tag }}{{ end }}@{{ .digest }}
{{- else -}}
{{ .repository }}:{{ .tag }}
{{- end -}}
{{- end }}

{{/* The munged sidecar every SLURM pod runs; the daemons talk to it over the shared /run/munge socket. */}}
{{- define "slurm.munged" -}}
- name: munged
  image: {{ include "slurm.image" .image }}
  command: [/bin/sh, -ec]
  args:
    - |
      install -o munge -g munge -m 0400 /munge-secret/munge.key /etc/munge/munge.key
      chown munge:munge /run/munge
      exec runuser -u munge -- munged --foreground --force
  volumeMounts:
    - name: munge-key
      mountPath: /munge-secret
      readOnly: true
    - name: munge-socket
      mountPath: /run/munge
{{- end }}

{{/* The volumes of the munge key and socket. */}}
{{- define "slurm.mungeVolumes" -}}
- name: munge-key
  secret:
    secretName: {{ .Values.munge.existingSecret }}
    defaultMode: 256
- name: munge-socket
  emptyDir: {}
{{- end }}

{{/* Service annotations pinning a MetalLB address, when one is given. */}}
{{- define "slurm.lbAnnotations" -}}
{{- if . }}
annotations:
  metallb.io/loadBalancerIPs: {{ . | quote }}
{{- end }}
{{- end }}
