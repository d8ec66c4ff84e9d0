{{/* Chart name, truncated to a DNS label. */}}
{{- define "modelrollout.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: release-chart unless the release already contains it. */}}
{{- define "modelrollout.fullname" -}}
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

{{- define "modelrollout.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. */}}
{{- define "modelrollout.labels" -}}
helm.sh/chart: {{ include "modelrollout.chart" . }}
app.kubernetes.io/name: {{ include "modelrollout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelrollout
{{- end }}

{{/* Selector labels of one component: include with (dict "ctx" $ "component" "controller"). */}}
{{- define "modelrollout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelrollout.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "modelrollout.componentLabels" -}}
{{ include "modelrollout.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Service account names. */}}
{{- define "modelrollout.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create }}
{{- default (printf "%s-controller" (include "modelrollout.fullname" .)) .Values.controller.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.controller.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "modelrollout.suggest.serviceAccountName" -}}
{{- if .Values.suggest.serviceAccount.create }}
{{- default (printf "%s-suggest" (include "modelrollout.fullname" .)) .Values.suggest.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.suggest.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "modelrollout.training.serviceAccountName" -}}
{{- printf "%s-training" (include "modelrollout.fullname" .) }}
{{- end }}

{{/* Image reference: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "modelrollout.image" -}}
{{- $img := .image -}}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default .ctx.Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{/* The suggestion service group name that ModelRollouts target (spec.target). */}}
{{- define "modelrollout.target" -}}
{{- default (printf "%s-suggest" (include "modelrollout.fullname" .)) .Values.suggest.target }}
{{- end }}

{{/* The PVC holding model versions. */}}
{{- define "modelrollout.modelsClaim" -}}
{{- default (printf "%s-models" (include "modelrollout.fullname" .)) .Values.models.existingClaim }}
{{- end }}

{{/* The Secret holding the Alertmanager webhook bearer token. */}}
{{- define "modelrollout.webhookSecret" -}}
{{- default (printf "%s-webhook" (include "modelrollout.fullname" .)) .Values.controller.webhook.existingSecret }}
{{- end }}
