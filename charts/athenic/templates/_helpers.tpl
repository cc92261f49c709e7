{{/* Names ---------------------------------------------------------------------------- */}}

{{- define "athenic.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "athenic.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "athenic.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels: call with (dict "ctx" $ "component" "api") */}}
{{- define "athenic.selectorLabels" -}}
app.kubernetes.io/name: {{ include "athenic.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "athenic.labels" -}}
helm.sh/chart: {{ include "athenic.chart" .ctx }}
{{ include "athenic.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: athenic
{{- end }}

{{/* Pods allowed to talk to the bundled NATS carry this label (see networkpolicies.yaml). */}}
{{- define "athenic.natsClientLabel" -}}
athenic.dev/nats-client: "true"
{{- end }}

{{- define "athenic.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The bundled NATS server's image, by digest when one is given. */}}
{{- define "athenic.natsImage" -}}
{{- $image := .Values.nats.bundled.image }}
{{- if $image.digest }}
{{- printf "%s:%s@%s" $image.repository $image.tag $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository $image.tag }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every pod: call with (dict "ctx" $ "component" "api" "values" .Values.api) */}}
{{- define "athenic.podSpecCommon" -}}
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .ctx.Values.podSecurityContext | nindent 2 }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml .values.topologySpreadConstraints | nindent 2 }}
{{- else if .ctx.Values.topologySpread }}
topologySpreadConstraints:
  {{- range $key := list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
  - maxSkew: 1
    topologyKey: {{ $key }}
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "athenic.selectorLabels" (dict "ctx" $.ctx "component" $.component) | nindent 8 }}
    {{- if $.rolling }}
    matchLabelKeys: [pod-template-hash]
    {{- end }}
  {{- end }}
{{- end }}
{{- end }}

{{- define "athenic.podLabels" -}}
{{- include "athenic.labels" . }}
{{- with .ctx.Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Secrets --------------------------------------------------------------------------- */}}

{{- define "athenic.e2bSecretName" -}}
{{- default (printf "%s-e2b" (include "athenic.fullname" .)) .Values.e2b.existingSecret }}
{{- end }}

{{- define "athenic.llmSecretName" -}}
{{- default (printf "%s-llm" (include "athenic.fullname" .)) .Values.llm.existingSecret }}
{{- end }}

{{- define "athenic.supabaseSecretName" -}}
{{- default (printf "%s-supabase" (include "athenic.fullname" .)) .Values.auth.supabase.existingSecret }}
{{- end }}

{{- define "athenic.natsAuthSecretName" -}}
{{- default (printf "%s-nats-auth" (include "athenic.fullname" .)) .Values.nats.bundled.auth.existingSecret }}
{{- end }}

{{- define "athenic.webhookSecretName" -}}
{{- .Values.notifier.webhook.existingSecret | default (printf "%s-webhook" (include "athenic.fullname" .)) -}}
{{- end }}

{{- define "athenic.llmHasKey" -}}
{{- if or .Values.llm.apiKey .Values.llm.existingSecret }}true{{ end }}
{{- end }}

{{- define "athenic.supabaseHasSecret" -}}
{{- if or .Values.auth.supabase.jwtSecret .Values.auth.supabase.existingSecret }}true{{ end }}
{{- end }}

{{/* NATS ------------------------------------------------------------------------------ */}}

{{- define "athenic.natsName" -}}
{{- printf "%s-nats" (include "athenic.fullname" .) }}
{{- end }}

{{- define "athenic.natsUrl" -}}
{{- if eq .Values.nats.mode "external" }}
{{- .Values.nats.external.url }}
{{- else }}
{{- printf "nats://%s.%s.svc:4222" (include "athenic.natsName" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{- define "athenic.natsReplicas" -}}
{{- if eq .Values.nats.mode "external" }}{{ .Values.nats.external.streamReplicas }}{{ else }}{{ .Values.nats.bundled.replicas }}{{ end }}
{{- end }}

{{/* Environment every service reads: broker, credentials, logging. */}}
{{/* Conversation files' limits: read by the api (uploads) and the orchestrator (what runs make). */}}
{{- define "athenic.filesEnv" -}}
- name: ATHENIC_FILE_MAX_BYTES
  value: {{ .Values.files.maxFileBytes | int64 | quote }}
- name: ATHENIC_CONVERSATION_FILES_MAX_BYTES
  value: {{ .Values.files.maxConversationBytes | int64 | quote }}
- name: ATHENIC_CONVERSATION_MAX_FILES
  value: {{ .Values.files.maxConversationFiles | int64 | quote }}
- name: ATHENIC_RUN_MAX_FILES
  value: {{ .Values.files.maxRunFiles | int64 | quote }}
{{- end }}

{{- define "athenic.commonEnv" -}}
- name: NATS_URL
  value: {{ include "athenic.natsUrl" . | quote }}
- name: NATS_REPLICAS
  value: {{ include "athenic.natsReplicas" . | quote }}
{{- /* the bundled broker's login is each service's own: athenic.natsLogin (_nats_users.tpl) */}}
{{- if and (eq .Values.nats.mode "external") .Values.nats.external.existingSecret }}
- name: NATS_USER
  valueFrom:
    secretKeyRef:
      name: {{ .Values.nats.external.existingSecret }}
      key: {{ .Values.nats.external.userKey }}
- name: NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.nats.external.existingSecret }}
      key: {{ .Values.nats.external.passwordKey }}
{{- end }}
{{- if and (eq .Values.nats.mode "external") .Values.nats.external.credsSecret }}
- name: NATS_CREDS_FILE
  value: /etc/athenic/nats/{{ .Values.nats.external.credsKey }}
{{- end }}
- name: LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- end }}

{{/* Volumes every pod mounts: a writable /tmp (the root filesystem is read-only), and the
NATS creds file when one is configured. */}}
{{- define "athenic.commonVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .tmpSize | default "64Mi" }}
{{- if and (eq .ctx.Values.nats.mode "external") .ctx.Values.nats.external.credsSecret }}
- name: nats-creds
  secret:
    secretName: {{ .ctx.Values.nats.external.credsSecret }}
    defaultMode: 0440
    items:
      - key: {{ .ctx.Values.nats.external.credsKey }}
        path: {{ .ctx.Values.nats.external.credsKey }}
{{- end }}
{{- end }}

{{- define "athenic.commonVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if and (eq .Values.nats.mode "external") .Values.nats.external.credsSecret }}
- name: nats-creds
  mountPath: /etc/athenic/nats
  readOnly: true
{{- end }}
{{- end }}

{{/* NetworkPolicy egress rules: the broker (bundled: our NATS pods; external: where you said it is) */}}
{{- define "athenic.natsEgress" -}}
{{- if eq .Values.nats.mode "external" }}
- ports:
    - {protocol: TCP, port: {{ .Values.nats.external.port }}}
  {{- with .Values.nats.external.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- else }}
- ports:
    - {protocol: TCP, port: 4222}
  to:
    - podSelector:
        matchLabels:
          {{- include "athenic.selectorLabels" (dict "ctx" . "component" "nats") | nindent 10 }}
{{- end }}
- ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
  to:
    {{- toYaml .Values.networkPolicy.dnsTo | nindent 4 }}
{{- end }}

{{/* A checksum of the chart-made secrets, so pods restart when one changes. */}}
{{- define "athenic.secretsChecksum" -}}
{{- include (print .Template.BasePath "/secrets.yaml") . | sha256sum }}
{{- end }}

{{/* The operator's rules on what it serves, the same in a ClusterRole or in a namespace's Role. */}}
{{- define "athenic.operatorRules" -}}
# its own resource: watch it, add/remove its finalizer and annotations
- apiGroups: [athenic.dev]
  resources: [sandboxquotas]
  verbs: [get, list, watch, patch]
# report phase, conditions, hard and used
- apiGroups: [athenic.dev]
  resources: [sandboxquotas/status]
  verbs: [get, patch]
# one event on the object for each accepted or refused change
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
# kopf peering: replicas announce themselves; one acts, the others pause
- apiGroups: [kopf.dev]
  resources: [{{ .peerings }}]
  verbs: [get, list, watch, patch]
{{- end }}

{{/* Scanner exceptions (checkov), each with its reason, as annotations of the resource they
concern: call with a list of "CKV_K8S_NN=reason". README ("Scanner exceptions") lists them. */}}
{{- define "athenic.checkovSkips" -}}
{{- range $i, $skip := . }}
checkov.io/skip{{ add1 $i }}: {{ $skip | quote }}
{{- end }}
{{- end }}

{{/* The image exceptions of a workload, only where they apply: call with (dict "image" <values of its image>). */}}
{{- define "athenic.imageSkips" -}}
{{- if not .image.digest }}
- "CKV_K8S_43=no digest in the values (a chart cannot know the digest of an image built after it): set image.digest to pin one"
{{- end }}
{{- if ne .image.pullPolicy "Always" }}
- "CKV_K8S_15=IfNotPresent: a pinned tag or digest does not change, and Always makes every pod start depend on the registry"
{{- end }}
{{- end }}
