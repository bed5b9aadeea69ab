{{/*
Names and labels shared by every template.
*/}}

{{/* Chart name, overridable. */}}
{{- define "state-service.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release name already contains the chart name. */}}
{{- define "state-service.fullname" -}}
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

{{- define "state-service.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "state-service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "state-service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "state-service.labels" -}}
helm.sh/chart: {{ include "state-service.chart" . }}
{{ include "state-service.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: server
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "state-service.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "state-service.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: repository@digest, or repository:tag (default appVersion). */}}
{{- define "state-service.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the Secret the chart creates for an inline Redis password. */}}
{{- define "state-service.redisSecretName" -}}
{{- printf "%s-redis" (include "state-service.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "true" when a Redis backend is configured (else the in-memory backend). */}}
{{- define "state-service.redisConfigured" -}}
{{- if or .Values.redis.url (and .Values.redis.existingSecret.name .Values.redis.existingSecret.urlKey) }}true{{ end }}
{{- end }}

{{/* Container ports; fixed by the image's STATE_LISTEN / STATE_METRICS_LISTEN. */}}
{{- define "state-service.grpcContainerPort" -}}50051{{- end }}
{{- define "state-service.metricsContainerPort" -}}9090{{- end }}

{{/* terminationGracePeriodSeconds: explicit, or drain + preStop sleep + 5 s. */}}
{{- define "state-service.terminationGracePeriodSeconds" -}}
{{- $drain := int .Values.config.drainTimeoutSeconds }}
{{- $preStop := int .Values.preStopSleepSeconds }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $drain $preStop 5 }}
{{- else }}
{{- $grace := int .Values.terminationGracePeriodSeconds }}
{{- if le $grace (add $drain $preStop) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than config.drainTimeoutSeconds (%d) + preStopSleepSeconds (%d), or the kubelet kills pods mid-drain" $grace $drain $preStop) }}
{{- end }}
{{- $grace }}
{{- end }}
{{- end }}

{{/* Checks across values that the schema cannot express. */}}
{{- define "state-service.validate" -}}
{{- if not (include "state-service.redisConfigured" .) }}
{{- if or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled }}
{{- fail "more than one replica (replicaCount > 1 or autoscaling.enabled) needs Redis: set redis.url or redis.existingSecret.{name,urlKey}; the in-memory backend is per pod" }}
{{- end }}
{{- end }}
{{- if and .Values.redis.password .Values.redis.existingSecret.passwordKey }}
{{- fail "set either redis.password or redis.existingSecret.passwordKey, not both" }}
{{- end }}
{{- if and (or .Values.redis.existingSecret.urlKey .Values.redis.existingSecret.passwordKey) (not .Values.redis.existingSecret.name) }}
{{- fail "redis.existingSecret.urlKey/passwordKey need redis.existingSecret.name" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not .Values.autoscaling.targetCPUUtilizationPercentage) (not .Values.autoscaling.targetMemoryUtilizationPercentage) }}
{{- fail "autoscaling.enabled needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" }}
{{- end }}
{{- if gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if gt (int .Values.config.defaultPageSize) (int .Values.config.maxPageSize) }}
{{- fail "config.defaultPageSize must not exceed config.maxPageSize" }}
{{- end }}
{{- end }}

{{/* Name of the Secret the chart creates for the page-token secret. */}}
{{- define "state-service.pageTokenSecretName" -}}
{{- printf "%s-page-tokens" (include "state-service.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "true" when the chart creates the page-token Secret: no existing one and
more than one pod may serve the same clients. */}}
{{- define "state-service.managedPageTokenSecret" -}}
{{- if and (not .Values.pageTokens.existingSecret) (or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled) }}true{{ end }}
{{- end }}
