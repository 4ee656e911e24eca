{{- define "sluice.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{ else }}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{ end }}
{{- end }}

{{- define "sluice.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "sluice.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "sluice.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "sluice.secretName" -}}
{{ .Values.secrets.existingSecret | default (printf "%s-secrets" (include "sluice.fullname" .)) }}
{{- end }}

{{- define "sluice.dbSecretName" -}}
{{ .Values.postgres.existingSecret | default (printf "%s-postgres" (include "sluice.fullname" .)) }}
{{- end }}

{{- define "sluice.natsURL" -}}
{{- if .Values.nats.enabled }}{{ printf "nats://%s-nats:4222" .Release.Name }}{{ else }}{{ .Values.nats.url }}{{ end }}
{{- end }}

{{/* The environment both binaries share. */}}
{{- define "sluice.env" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "sluice.dbSecretName" . }}
      key: DATABASE_URL
- name: SLUICE_ENCRYPTION_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "sluice.secretName" . }}
      key: SLUICE_ENCRYPTION_KEY
- name: NATS_URL
  value: {{ include "sluice.natsURL" . | quote }}
- name: QUEUE_REPLICAS
  value: {{ .Values.queue.replicas | quote }}
- name: QUEUE_MAX_JOBS
  value: {{ .Values.queue.maxJobs | quote }}
{{- range $k, $v := .Values.env }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{- end }}

{{- define "sluice.probes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: http}
  periodSeconds: 5
  failureThreshold: 2
{{- end }}
