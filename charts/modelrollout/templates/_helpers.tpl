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

{{/* The alert rules (PrometheusRule spec, or a rule file): agreement drop, latency,
model error rate, model availability. An Alertmanager route to the controller's webhook
turns any of them into a rollback of the rollouts they match. */}}
{{- define "modelrollout.alertGroups" -}}
{{- $r := .Values.monitoring.prometheusRule -}}
groups:
  - name: modelrollout.suggest
    rules:
      - alert: SuggestAgreementDrop
        # Shadow agreement between the served answer and the shadow model, over 1 h.
        expr: |
          sum(rate(modelrollout_shadow_comparisons_total{agree="true"}[1h]))
            / sum(rate(modelrollout_shadow_comparisons_total[1h]))
            < {{ $r.agreementThreshold }}
        for: 5m
        labels: {severity: warning}
        annotations:
          summary: Shadow agreement of suggestions dropped below {{ $r.agreementThreshold }}
      - alert: SuggestLatencyHigh
        # p95 of one model evaluation, per served version.
        expr: |
          histogram_quantile(0.95, sum by (le, model_version) (
            rate(modelrollout_inference_seconds_bucket{role!="rules"}[10m])))
            > {{ $r.latencyP95Seconds }}
        for: 10m
        labels: {severity: warning}
        annotations:
          summary: 'Model {{ "{{ $labels.model_version }}" }}: p95 evaluation above {{ $r.latencyP95Seconds }} s'
      - alert: SuggestModelErrors
        # Model evaluations that raised (each request fell back to the rules).
        expr: |
          sum by (model_version) (rate(modelrollout_model_errors_total[10m]))
            / sum by (model_version) (rate(modelrollout_inference_seconds_count{role!="rules"}[10m]))
            > {{ $r.errorRatio }}
        for: 10m
        labels: {severity: page}
        annotations:
          summary: 'Model {{ "{{ $labels.model_version }}" }}: more than {{ $r.errorRatio }} of evaluations fail'
      - alert: SuggestModelUnavailable
        # A model is configured but answers come from the rules: no loadable version.
        expr: sum(rate(modelrollout_fallbacks_total{reason="no_model"}[5m])) > 0
        for: 5m
        labels: {severity: page}
        annotations:
          summary: Suggestions are served by the rules because no configured model version loads
      - alert: SuggestModelLoadErrors
        # A version failed verification or loading (bad checksum, unreadable file).
        expr: increase(modelrollout_model_load_errors_total[15m]) > 0
        labels: {severity: warning}
        annotations:
          summary: 'Model {{ "{{ $labels.model_version }}" }} failed to load'
{{- end }}
