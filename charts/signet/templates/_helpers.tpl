{{/* Names ------------------------------------------------------------------ */}}

{{- define "signet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-<chart>", or the release name alone when it already contains the chart name. */}}
{{- define "signet.fullname" -}}
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

{{/* Component names stay within 63 characters (Service names must). */}}
{{- define "signet.vault.fullname" -}}
{{- printf "%s-vault" (include "signet.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}
{{- define "signet.controller.fullname" -}}
{{- printf "%s-controller" (include "signet.fullname" . | trunc 52 | trimSuffix "-") }}
{{- end }}
{{- define "signet.webhook.fullname" -}}
{{- printf "%s-webhook" (include "signet.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}
{{- define "signet.rotator.fullname" -}}
{{- printf "%s-rotator" (include "signet.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{/* Labels ----------------------------------------------------------------- */}}

{{- define "signet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "signet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: signet
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: pass (dict "ctx" $ "component" "vault"). */}}
{{- define "signet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "signet.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "signet.componentLabels" -}}
{{ include "signet.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Images ----------------------------------------------------------------- */}}

{{/* Pass (dict "image" .Values.x.image "ctx" $). */}}
{{- define "signet.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* Vault endpoint and TLS ---------------------------------------------------- */}}

{{- define "signet.vault.scheme" -}}
{{- if .Values.vault.tls.enabled }}https{{ else }}http{{ end }}
{{- end }}

{{- define "signet.vault.url" -}}
{{- if .Values.operator.vaultUrl }}
{{- .Values.operator.vaultUrl }}
{{- else }}
{{- printf "%s://%s.%s.svc:%d" (include "signet.vault.scheme" .) (include "signet.vault.fullname" .) .Release.Namespace (int .Values.vault.port) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the vault's serving certificate. */}}
{{- define "signet.vault.tlsSecret" -}}
{{- if .Values.certManager.enabled }}
{{- printf "%s-tls" (include "signet.vault.fullname" .) }}
{{- else }}
{{- required "vault.tls.existingSecret is required when vault.tls.enabled is true and certManager.enabled is false (a kubernetes.io/tls Secret for the vault's HTTPS)" .Values.vault.tls.existingSecret }}
{{- end }}
{{- end }}

{{- define "signet.webhook.tlsSecret" -}}
{{- printf "%s-tls" (include "signet.webhook.fullname" .) }}
{{- end }}

{{/* Issuer of the chart's certificates (cert-manager only). */}}
{{- define "signet.certManager.issuerRef" -}}
{{- if .Values.certManager.issuerRef.name -}}
name: {{ .Values.certManager.issuerRef.name }}
kind: {{ .Values.certManager.issuerRef.kind }}
group: {{ .Values.certManager.issuerRef.group }}
{{- else -}}
name: {{ include "signet.fullname" . }}-ca
kind: Issuer
group: cert-manager.io
{{- end }}
{{- end }}

{{/* Security ------------------------------------------------------------------ */}}

{{/* Pod security context meeting the "restricted" Pod Security Standard. */}}
{{- define "signet.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "signet.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Scheduling fields shared by every pod: pass the component's values. */}}
{{- define "signet.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/* Egress rule to the Kubernetes API server (port-based, optionally by CIDR). */}}
{{- define "signet.networkPolicy.apiServerEgress" -}}
{{- $api := .Values.networkPolicy.apiServer -}}
- ports:
    {{- range $api.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- with $api.cidrs }}
  to:
    {{- range . }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  {{- end }}
{{- end }}

{{/* RBAC ---------------------------------------------------------------------- */}}

{{/* What the controller needs for raw tokens, and nothing more. */}}
{{- define "signet.rawTokenRules" -}}
# SSA of the Secret creates it the first time (create) and updates it
# afterwards (patch); get checks it holds the current token; delete removes
# it when the EnrollmentToken goes or switches to attestation.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create", "get", "patch", "delete"]
# Setting blockOwnerDeletion on the Secrets' owner references needs this
# where the OwnerReferencesPermissionEnforcement plugin is on.
- apiGroups: ["signet.dev"]
  resources: ["enrollmenttokens/finalizers"]
  verbs: ["update"]
{{- end }}
