{{/* Names, labels and the checks every render makes. */}}

{{- define "shipdeck.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "shipdeck.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "shipdeck.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shipdeck.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "shipdeck.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "shipdeck.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: shipdeck
{{- end -}}

{{- define "shipdeck.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "shipdeck.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "shipdeck.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Secret holding what the chart was given; existing Secrets are referenced instead. */}}
{{- define "shipdeck.secretName" -}}
{{- printf "%s-secrets" (include "shipdeck.fullname" .) -}}
{{- end -}}

{{- define "shipdeck.databaseSecret" -}}
{{- default (include "shipdeck.secretName" .) .Values.database.existingSecret -}}
{{- end -}}

{{- define "shipdeck.auditSecret" -}}
{{- default (include "shipdeck.secretName" .) .Values.audit.existingSecret -}}
{{- end -}}

{{- define "shipdeck.oidcSecret" -}}
{{- default (include "shipdeck.secretName" .) .Values.oidc.existingSecret -}}
{{- end -}}

{{- define "shipdeck.validate" -}}
{{- if and (not .Values.database.existingSecret) (not .Values.database.url) -}}
{{- fail "database.url (a postgresql:// URL) or database.existingSecret is required: replicas share one PostgreSQL" -}}
{{- end -}}
{{- if and (not .Values.audit.existingSecret) (not .Values.audit.key) -}}
{{- fail "audit.key (32+ characters) or audit.existingSecret is required: it keys the audit chain" -}}
{{- end -}}
{{- if and .Values.oidc.enabled (or (not .Values.oidc.issuerUrl) (not .Values.oidc.clientId)) -}}
{{- fail "oidc.enabled needs oidc.issuerUrl and oidc.clientId" -}}
{{- end -}}
{{- end -}}

{{/* The environment shared by the API pods and the migration job. */}}
{{- define "shipdeck.env" -}}
- name: SHIPDECK_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "shipdeck.databaseSecret" . }}
      key: database-url
- name: SHIPDECK_AUDIT_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "shipdeck.auditSecret" . }}
      key: audit-key
{{- if .Values.oidc.enabled }}
- name: SHIPDECK_OIDC_ISSUER
  value: {{ .Values.oidc.issuerUrl | quote }}
- name: SHIPDECK_OIDC_CLIENT_ID
  value: {{ .Values.oidc.clientId | quote }}
- name: SHIPDECK_OIDC_CLIENT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "shipdeck.oidcSecret" . }}
      key: oidc-client-secret
      optional: true
{{- if .Values.publicUrl }}
- name: SHIPDECK_OIDC_REDIRECT_URL
  value: {{ printf "%s/api/v1/auth/oidc/callback" (trimSuffix "/" .Values.publicUrl) | quote }}
{{- end }}
{{- end }}
{{- if .Values.publicUrl }}
- name: SHIPDECK_PUBLIC_URL
  value: {{ .Values.publicUrl | quote }}
{{- end }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}
