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

{{- /* The webhooks' namespace selector: never kube-system nor the release's
namespace (the webhook's own pods must be creatable while it is down),
plus what the values add. */}}
{{- define "tslice.namespaceSelector" -}}
matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values: [kube-system, {{ .Release.Namespace | quote }}]
{{- with .Values.webhook.namespaceSelector.matchExpressions }}
{{ toYaml . }}
{{- end }}
{{- with .Values.webhook.namespaceSelector.matchLabels }}
matchLabels:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- /* CEL: a container list requests one of the GPU resources. */}}
{{- define "tslice.celGpu" -}}
{{- $res := toJson .Values.webhook.gpuResources -}}
(OBJ.spec.containers.exists(c, has(c.resources) && ((has(c.resources.limits) && c.resources.limits.exists(k, k in {{ $res }})) || (has(c.resources.requests) && c.resources.requests.exists(k, k in {{ $res }})))) || (has(OBJ.spec.initContainers) && OBJ.spec.initContainers.exists(c, has(c.resources) && ((has(c.resources.limits) && c.resources.limits.exists(k, k in {{ $res }})) || (has(c.resources.requests) && c.resources.requests.exists(k, k in {{ $res }}))))))
{{- end -}}
