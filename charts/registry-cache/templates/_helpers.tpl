{{- define "registry-cache.labels" -}}
app.kubernetes.io/name: registry-cache
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "registry-cache.image" -}}
{{- if hasPrefix "sha256:" (toString .Values.image.tag) -}}
{{ .Values.image.repository }}@{{ .Values.image.tag }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}
{{- end -}}

{{- define "registry-cache.webhookService" -}}
registry-cache-webhook
{{- end -}}
