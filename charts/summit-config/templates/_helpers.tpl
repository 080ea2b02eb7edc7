{{- define "summit-config.name" -}}summit-config{{- end }}

{{- define "summit-config.labels" -}}
app.kubernetes.io/name: summit-config
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "summit-config.selector" -}}
app.kubernetes.io/name: summit-config
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "summit-config.serviceAccount" -}}{{ .Release.Name }}-operator{{- end }}
