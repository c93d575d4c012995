{{/*
Name of the chart, overridable.
*/}}
{{- define "grpc-balancer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every object name: the release name, plus the chart name unless the
release name already holds it (`helm install grpc-balancer` gives
"grpc-balancer", not "grpc-balancer-grpc-balancer").
*/}}
{{- define "grpc-balancer.fullname" -}}
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

{{- define "grpc-balancer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object of the chart.
*/}}
{{- define "grpc-balancer.labels" -}}
helm.sh/chart: {{ include "grpc-balancer.chart" . }}
{{ include "grpc-balancer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: grpc-balancer
{{- end }}

{{/*
Labels that select the operator pods; never change them in an upgrade (a
Deployment's selector is immutable).
*/}}
{{- define "grpc-balancer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "grpc-balancer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "grpc-balancer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "grpc-balancer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Object names the operator is told about by flags; RBAC resourceNames use the
same helpers so the two cannot disagree.
*/}}
{{- define "grpc-balancer.webhookName" -}}
{{- include "grpc-balancer.fullname" . }}
{{- end }}
{{- define "grpc-balancer.webhookServiceName" -}}
{{- printf "%s-webhook" (include "grpc-balancer.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "grpc-balancer.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "grpc-balancer.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "grpc-balancer.metricsServiceName" -}}
{{- printf "%s-metrics" (include "grpc-balancer.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "grpc-balancer.leaseName" -}}
{{- printf "%s-leader" (include "grpc-balancer.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "grpc-balancer.certificateName" -}}
{{- printf "%s-webhook" (include "grpc-balancer.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "grpc-balancer.issuerName" -}}
{{- printf "%s-selfsigned" (include "grpc-balancer.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
An image reference from {repository, tag, digest}; the tag defaults to the
chart's appVersion, and a digest wins over the tag.
Usage: include "grpc-balancer.image" (list .Values.operator.image .Chart.AppVersion)
*/}}
{{- define "grpc-balancer.image" -}}
{{- $image := index . 0 }}
{{- $appVersion := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $appVersion $image.tag) }}
{{- end }}
{{- end }}

{{/*
Security context of the operator container: passes Pod Security "restricted".
*/}}
{{- define "grpc-balancer.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Command-line arguments of the operator: every name the chart creates is
passed explicitly so RBAC resourceNames and the code agree.
*/}}
{{- define "grpc-balancer.operatorArgs" -}}
- --metrics-listen=0.0.0.0:{{ .Values.operator.metricsPort }}
- --leader-election-namespace=$(POD_NAMESPACE)
- --leader-election-lease-name={{ include "grpc-balancer.leaseName" . }}
- --lease-duration={{ .Values.operator.leaseDuration }}
- --cluster-domain={{ .Values.operator.clusterDomain }}
- --webhook-listen=0.0.0.0:{{ .Values.webhook.port }}
- --discovery-listen=0.0.0.0:{{ .Values.webhook.discoveryPort }}
{{- if not .Values.webhook.url }}
- --proxy-discovery-address={{ include "grpc-balancer.webhookServiceName" . }}.{{ .Release.Namespace }}.svc:{{ .Values.webhook.discoveryPort }}
{{- end }}
- --webhook-configuration={{ include "grpc-balancer.webhookName" . }}
- --webhook-service={{ include "grpc-balancer.webhookServiceName" . }}
- --webhook-namespace=$(POD_NAMESPACE)
{{- if .Values.webhook.certManager.enabled }}
- --webhook-cert-source=cert-manager
- --webhook-cert-dir=/etc/grpc-balancer/webhook-tls
{{- else }}
- --webhook-cert-source=self-signed
- --webhook-cert-secret={{ include "grpc-balancer.webhookSecretName" . }}
{{- end }}
- --sidecar-mode={{ .Values.proxy.sidecarMode }}
- --proxy-admin-port={{ .Values.proxy.adminPort }}
- --proxy-image={{ include "grpc-balancer.image" (list .Values.proxy.image .Chart.AppVersion) }}
- --proxy-image-pull-policy={{ .Values.proxy.image.pullPolicy }}
{{- if .Values.proxy.allowImageOverride }}
- --proxy-allow-image-override
{{- end }}
- --proxy-log-level={{ .Values.proxy.logLevel }}
- --proxy-admin-debug={{ .Values.proxy.adminDebug }}
{{- with .Values.proxy.resources.requests }}
{{- with .cpu }}
- --proxy-cpu-request={{ . }}
{{- end }}
{{- with .memory }}
- --proxy-memory-request={{ . }}
{{- end }}
{{- end }}
{{- with .Values.proxy.resources.limits }}
{{- with .cpu }}
- --proxy-cpu-limit={{ . }}
{{- end }}
{{- with .memory }}
- --proxy-memory-limit={{ . }}
{{- end }}
{{- end }}
- --proxy-max-cpu={{ .Values.proxy.maxCpu }}
- --proxy-max-memory={{ .Values.proxy.maxMemory }}
{{- end }}
