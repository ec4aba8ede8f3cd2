{{/* Names. */}}
{{- define "corral.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<chart>, or the release name when it already contains the chart name; at most 52 characters so suffixes like "-operator" fit in 63. */}}
{{- define "corral.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "corral.operatorName" -}}{{ include "corral.fullname" . }}-operator{{- end -}}
{{- define "corral.routerName" -}}{{ include "corral.fullname" . }}-router{{- end -}}
{{- define "corral.redisName" -}}{{ include "corral.fullname" . }}-redis{{- end -}}

{{/* Labels of every object. */}}
{{- define "corral.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "corral.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: corral
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: include "corral.selectorLabels" (list . "router"). */}}
{{- define "corral.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "corral.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Labels of one component's objects: the common labels plus the component. */}}
{{- define "corral.componentLabels" -}}
{{ include "corral.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Images. */}}
{{- define "corral.tag" -}}
{{- .Values.image.tag | default .Chart.AppVersion -}}
{{- end -}}

{{- define "corral.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "corral.tag" .) -}}
{{- end -}}

{{- define "corral.runtimeImage" -}}
{{- $repository := .Values.runtime.image.repository | default .Values.image.repository -}}
{{- $tag := .Values.runtime.image.tag | default (include "corral.tag" .) -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}

{{- define "corral.runtimeGpuImage" -}}
{{- $repository := .Values.runtime.gpuImage.repository | default .Values.image.repository -}}
{{- $tag := .Values.runtime.gpuImage.tag | default (printf "%s-cuda" (.Values.runtime.image.tag | default (include "corral.tag" .))) -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}

{{/* Service accounts. */}}
{{- define "corral.operatorServiceAccount" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- .Values.operator.serviceAccount.name | default (include "corral.operatorName" .) -}}
{{- else -}}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "corral.routerServiceAccount" -}}
{{- if .Values.router.serviceAccount.create -}}
{{- .Values.router.serviceAccount.name | default (include "corral.routerName" .) -}}
{{- else -}}
{{- required "router.serviceAccount.name is required when router.serviceAccount.create is false" .Values.router.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "corral.leaseName" -}}
{{- .Values.operator.leaderElection.leaseName | default (include "corral.operatorName" .) -}}
{{- end -}}

{{/* Secrets. */}}
{{- define "corral.apiKeysSecret" -}}
{{- .Values.apiKeys.existingSecret | default (printf "%s-api-keys" (include "corral.fullname" .)) -}}
{{- end -}}

{{- define "corral.apiKeysEnabled" -}}
{{- if or .Values.apiKeys.existingSecret .Values.apiKeys.keys }}true{{ end -}}
{{- end -}}

{{- define "corral.adminApiKeysSecret" -}}
{{- .Values.adminApiKeys.existingSecret | default (printf "%s-admin-api-keys" (include "corral.fullname" .)) -}}
{{- end -}}

{{- define "corral.adminApiKeysEnabled" -}}
{{- if or .Values.adminApiKeys.existingSecret .Values.adminApiKeys.keys }}true{{ end -}}
{{- end -}}

{{- define "corral.redisSecret" -}}
{{- .Values.redis.auth.existingSecret | default (include "corral.redisName" .) -}}
{{- end -}}

{{/* True when the router's REDIS_URL needs the password from a Secret. */}}
{{- define "corral.redisPassword" -}}
{{- if and .Values.redis.auth.enabled (or .Values.redis.enabled .Values.redis.auth.existingSecret) }}true{{ end -}}
{{- end -}}

{{/* The router's REDIS_URL; $(REDIS_PASSWORD) is expanded by the kubelet from the variable before it. */}}
{{- define "corral.redisUrl" -}}
{{- $userinfo := "" -}}
{{- if include "corral.redisPassword" . -}}
{{- $userinfo = printf "%s:$(REDIS_PASSWORD)@" .Values.redis.auth.username -}}
{{- end -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s%s.%s.svc:6379/0" $userinfo (include "corral.redisName" .) .Release.Namespace -}}
{{- else -}}
{{- regexReplaceAll "^(rediss?://)" .Values.redis.url (printf "${1}%s" $userinfo) -}}
{{- end -}}
{{- end -}}

{{/* Fails rendering with a message a person can act on. */}}
{{- define "corral.validate" -}}
{{- if and (gt (int .Values.operator.replicas) 1) (not .Values.operator.leaderElection.enabled) -}}
{{- fail "operator.replicas above 1 needs operator.leaderElection.enabled: two operators acting at once would fight over every Model" -}}
{{- end -}}
{{- if and .Values.redis.enabled .Values.redis.url -}}
{{- fail "set either redis.enabled (a Redis in the release) or redis.url (an external Redis), not both" -}}
{{- end -}}
{{- if and .Values.ingress.enabled .Values.ingress.tls.enabled (not .Values.ingress.host) -}}
{{- fail "ingress.tls.enabled needs ingress.host (the name on the certificate)" -}}
{{- end -}}
{{- if and .Values.apiKeys.existingSecret .Values.apiKeys.keys -}}
{{- fail "set either apiKeys.existingSecret (a Secret of yours) or apiKeys.keys (a Secret the chart makes), not both" -}}
{{- end -}}
{{- if and .Values.adminApiKeys.existingSecret .Values.adminApiKeys.keys -}}
{{- fail "set either adminApiKeys.existingSecret (a Secret of yours) or adminApiKeys.keys (a Secret the chart makes), not both" -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (eq (int .Values.router.metricsPort) 0) (or (include "corral.apiKeysEnabled" .) (include "corral.adminApiKeysEnabled" .) .Values.keys.existingSecret) -}}
{{- fail "metrics.serviceMonitor with API keys needs router.metricsPort: with keys on, /metrics on the main port needs a key, which Prometheus does not send" -}}
{{- end -}}
{{- if and .Values.redis.url (contains "@" .Values.redis.url) -}}
{{- fail "redis.url must not hold credentials: put the password in a Secret (redis.auth.existingSecret) and the user in redis.auth.username" -}}
{{- end -}}
{{- if and .Values.router.autoscaling.enabled (gt (int .Values.router.autoscaling.minReplicas) (int .Values.router.autoscaling.maxReplicas)) -}}
{{- fail "router.autoscaling.minReplicas must not exceed router.autoscaling.maxReplicas" -}}
{{- end -}}
{{- if and .Values.ingress.enabled (eq .Values.ingress.streaming.preset "alb") (gt (int .Values.ingress.streaming.timeoutSeconds) 4000) -}}
{{- fail "ingress.streaming.timeoutSeconds is at most 4000 with the alb preset (the longest idle timeout of an AWS ALB)" -}}
{{- end -}}
{{- $rate := .Values.router.rateLimit -}}
{{- if and (gt (int $rate.points) 0) (lt (mulf (float64 $rate.burst) (float64 $rate.durationSeconds)) (float64 $rate.points)) -}}
{{- fail (printf "router.rateLimit.burst (%v) must be at least the requests allowed per second (%v/%vs), or the router refuses to start" $rate.burst $rate.points $rate.durationSeconds) -}}
{{- end -}}
{{- end -}}
