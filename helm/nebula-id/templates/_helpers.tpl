{{/* The chart name, overridable. */}}
{{- define "nebula-id.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's resources: <release>-nebula-id, or just the
release name when it already contains the chart name.
*/}}
{{- define "nebula-id.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "nebula-id.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every resource carries. */}}
{{- define "nebula-id.labels" -}}
helm.sh/chart: {{ include "nebula-id.chart" . }}
{{ include "nebula-id.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nebula-id
{{- end }}

{{/* Labels that select the operator pods (never change them on upgrade). */}}
{{- define "nebula-id.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nebula-id.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "nebula-id.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nebula-id.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "nebula-id.webhookServiceName" -}}
{{- printf "%s-webhook" (include "nebula-id.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "nebula-id.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "nebula-id.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* repository[:tag][@digest] of an image block; the tag defaults to appVersion. */}}
{{- define "nebula-id.image" -}}
{{- $image := index . 0 }}{{- $root := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{- define "nebula-id.sidecarEtcdEndpoints" -}}
{{- join "," (default .Values.etcd.endpoints .Values.etcd.sidecar.endpoints) }}
{{- end }}

{{/*
Refuse an etcd that anyone on the network could rewrite: every endpoint must be
https:// and the operator must log in with a user, unless etcd.allowInsecure.
*/}}
{{- define "nebula-id.etcdGuard" -}}
{{- if not .Values.etcd.allowInsecure }}
{{- $problems := list }}
{{- range $e := concat .Values.etcd.endpoints .Values.etcd.sidecar.endpoints }}
{{- if not (hasPrefix "https://" $e) }}
{{- $problems = append $problems (printf "endpoint %s is not https://" $e) }}
{{- end }}
{{- end }}
{{- if not .Values.etcd.auth.secretName }}
{{- $problems = append $problems "etcd.auth.secretName is empty (no etcd user)" }}
{{- end }}
{{- if $problems }}
{{- fail (printf "refusing a plaintext or unauthenticated etcd: %s. Use https:// endpoints with etcd.tls and etcd.auth, or set etcd.allowInsecure=true on purpose (anyone who reaches etcd can then rewrite every pool)." (join "; " $problems)) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Per-pool etcd users: on when asked for and the operator logs in to etcd at all. */}}
{{- define "nebula-id.poolUsers" -}}
{{- if and .Values.etcd.poolUsers .Values.etcd.auth.secretName }}true{{ end }}
{{- end }}
