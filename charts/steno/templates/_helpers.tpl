{{/*
Names, labels, image references and the security settings every pod shares.
*/}}

{{- define "steno.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The base name of every object. Truncated so that "<fullname>-operator-discovery"
(the longest suffix, 19 characters) stays within 63.
*/}}
{{- define "steno.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 44 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 44 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 44 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "steno.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object; call with (dict "ctx" $ "component" "operator"). */}}
{{- define "steno.labels" -}}
helm.sh/chart: {{ include "steno.chart" .ctx }}
{{ include "steno.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: steno
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The labels that select one component's pods (stable across upgrades). */}}
{{- define "steno.selectorLabels" -}}
app.kubernetes.io/name: {{ include "steno.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The labels the operator puts on worker pods (steno_operator.manifests): name
"steno" and component "transcription-worker"; they carry no release label.
*/}}
{{- define "steno.workerSelectorLabels" -}}
app.kubernetes.io/name: steno
app.kubernetes.io/component: transcription-worker
{{- end }}

{{- define "steno.operatorName" -}}
{{- printf "%s-operator" (include "steno.fullname" .) }}
{{- end }}

{{- define "steno.servingName" -}}
{{- printf "%s-serving" (include "steno.fullname" .) }}
{{- end }}

{{- define "steno.operatorServiceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "steno.operatorName" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "steno.servingServiceAccountName" -}}
{{- if .Values.serving.serviceAccount.create }}
{{- default (include "steno.servingName" .) .Values.serving.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serving.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference: repository@digest when a digest is set, else repository:tag. */}}
{{- define "steno.image" -}}
{{- if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- printf "%s:%s" .repository .tag }}
{{- end }}
{{- end }}

{{/*
Pod-level security of the Pod Security "restricted" profile. The user and group
come from podSecurity; the rest is fixed.
*/}}
{{- define "steno.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser }}
runAsGroup: {{ .Values.podSecurity.runAsGroup }}
fsGroup: {{ .Values.podSecurity.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container-level security of the "restricted" profile, and a read-only root. */}}
{{- define "steno.containerSecurityContext" -}}
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The namespaces whose worker pods the chart's NetworkPolicies cover. */}}
{{- define "steno.workerNamespaces" -}}
{{- $namespaces := list .Release.Namespace }}
{{- range .Values.operator.watchNamespaces }}
{{- $namespaces = append $namespaces . }}
{{- end }}
{{- $namespaces | uniq | toJson }}
{{- end }}

{{/* The serving pool's Service DNS name, which TLS probes check by default. */}}
{{- define "steno.servingServerName" -}}
{{- default (printf "%s.%s.svc" (include "steno.servingName" .) .Release.Namespace) .Values.serving.tls.serverName }}
{{- end }}

{{/*
One NetworkPolicy egress rule from a {to, ports} value: TCP on each port (and UDP
on 53, for DNS); no `to` means any destination.
*/}}
{{- define "steno.egressRule" -}}
- ports:
  {{- range .ports }}
  {{- if eq (int .) 53 }}
  - port: 53
    protocol: UDP
  {{- end }}
  - port: {{ . }}
    protocol: TCP
  {{- end }}
  {{- with .to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* What the test pod's containers share: small resources, restricted security, TLS files. */}}
{{- define "steno.testContainer" -}}
resources:
  requests:
    cpu: 50m
    memory: 128Mi
  limits:
    memory: 256Mi
securityContext:
  {{- include "steno.containerSecurityContext" . | nindent 2 }}
{{- if .Values.serving.tls.enabled }}
volumeMounts:
  - name: tls
    mountPath: /etc/steno/tls
    readOnly: true
{{- end }}
{{- end }}
