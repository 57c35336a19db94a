{{- define "registry-cache.checks" -}}
{{- if not (has .Values.mode (list "gardener" "standalone")) }}
{{- fail (printf "mode must be gardener or standalone, not %q" (toString .Values.mode)) }}
{{- end }}
{{- if lt (int .Values.replicas) 1 }}
{{- fail "replicas must be at least 1" }}
{{- end }}
{{- if and (eq .Values.mode "standalone") (semverCompare "<1.30-0" .Capabilities.KubeVersion.Version) }}
{{- fail (printf "mode standalone needs Kubernetes 1.30 or later (ValidatingAdmissionPolicy v1), not %s" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- end -}}

{{- define "registry-cache.standalone" -}}
{{- if eq .Values.mode "standalone" }}true{{ end }}
{{- end -}}

{{/* The controller's Deployment and PodDisruptionBudget: in mode standalone named as in manifests/controller. */}}
{{- define "registry-cache.controllerName" -}}
{{- if include "registry-cache.standalone" . }}registry-cache-controller{{ else }}registry-cache{{ end }}
{{- end -}}

{{/* What selects the controller's Pods. Standalone: as manifests/controller (one release per cluster: its
     cluster-scoped objects have fixed names); a seed: per release. */}}
{{- define "registry-cache.selectorLabels" -}}
app.kubernetes.io/name: registry-cache
{{- if not (include "registry-cache.standalone" .) }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
app.kubernetes.io/component: controller
{{- end -}}

{{/* Every object's labels: in mode standalone those manifests/ puts on it (kustomize: name, part-of), and the
     release. Add the component where manifests/ has one. */}}
{{- define "registry-cache.commonLabels" -}}
app.kubernetes.io/name: registry-cache
app.kubernetes.io/instance: {{ .Release.Name }}
{{- if include "registry-cache.standalone" . }}
app.kubernetes.io/part-of: registry-cache
{{- end }}
{{- end -}}

{{- define "registry-cache.labels" -}}
{{ include "registry-cache.commonLabels" . }}
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

{{- define "registry-cache.webhookClientCA" -}}
registry-cache-webhook-client-ca
{{- end -}}
