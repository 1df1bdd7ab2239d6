{{- define "tslice.name" -}}{{ .Release.Name }}{{- end -}}

{{- define "tslice.labels" -}}
app.kubernetes.io/name: tslice
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "tslice.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "tslice.certManager" -}}
{{- if eq (toString .Values.webhook.certManager) "auto" -}}
{{- .Capabilities.APIVersions.Has "cert-manager.io/v1" -}}
{{- else -}}
{{- .Values.webhook.certManager -}}
{{- end -}}
{{- end -}}

{{- define "tslice.webhookService" -}}{{ include "tslice.name" . }}-webhook{{- end -}}
