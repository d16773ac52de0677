{{/* Names and labels. */}}
{{- define "pg-scheduler.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pg-scheduler.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "pg-scheduler.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pg-scheduler.labels" -}}
helm.sh/chart: {{ include "pg-scheduler.chart" . }}
app.kubernetes.io/name: {{ include "pg-scheduler.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The Deployment's pods; the migration Job's pods have another component, so no selector
     of the Deployment, Service or PodDisruptionBudget picks them up. */}}
{{- define "pg-scheduler.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pg-scheduler.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: scheduler
{{- end -}}

{{- define "pg-scheduler.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pg-scheduler.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "pg-scheduler.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Where every process of a pod writes its metric samples (an emptyDir). */}}
{{- define "pg-scheduler.metricsDir" -}}/var/run/pg-scheduler/metrics{{- end -}}

{{/* The main DSN: the chart's Secret, or the user's. */}}
{{- define "pg-scheduler.databaseSecretName" -}}
{{- default (include "pg-scheduler.fullname" .) .Values.database.existingSecret -}}
{{- end -}}

{{- define "pg-scheduler.databaseSecretKey" -}}
{{- if .Values.database.existingSecret -}}{{ .Values.database.existingSecretKey }}{{- else -}}database-url{{- end -}}
{{- end -}}

{{- define "pg-scheduler.leaderDatabaseGiven" -}}
{{- if or .Values.database.leaderUrl .Values.database.leaderExistingSecret -}}true{{- end -}}
{{- end -}}

{{- define "pg-scheduler.leaderSecretName" -}}
{{- default (include "pg-scheduler.fullname" .) .Values.database.leaderExistingSecret -}}
{{- end -}}

{{- define "pg-scheduler.leaderSecretKey" -}}
{{- if .Values.database.leaderExistingSecret -}}{{ .Values.database.leaderExistingSecretKey }}{{- else -}}leader-database-url{{- end -}}
{{- end -}}

{{/* Checks a JSON schema cannot express (two values compared, one of two required).
     Included by every template that needs a valid configuration, so `helm template` and
     `helm install` stop with the message before anything is applied. */}}
{{- define "pg-scheduler.validate" -}}
{{- $v := .Values -}}
{{- if and (not $v.database.url) (not $v.database.existingSecret) -}}
{{- fail "pg-scheduler: set database.url or database.existingSecret (the DSN of your PostgreSQL); the chart never starts the embedded PostgreSQL" -}}
{{- end -}}
{{- if and $v.database.url $v.database.existingSecret -}}
{{- fail "pg-scheduler: set database.url or database.existingSecret, not both" -}}
{{- end -}}
{{- if and $v.database.leaderUrl $v.database.leaderExistingSecret -}}
{{- fail "pg-scheduler: set database.leaderUrl or database.leaderExistingSecret, not both" -}}
{{- end -}}
{{- $needed := addf $v.shutdownTimeoutSeconds 10 $v.preStopSleepSeconds -}}
{{- if le (float64 $v.terminationGracePeriodSeconds) (float64 $needed) -}}
{{- fail (printf "pg-scheduler: terminationGracePeriodSeconds (%v) must be greater than preStopSleepSeconds (%v) + shutdownTimeoutSeconds (%v) + 10 s for the supervisor to hand work back, i.e. more than %v" $v.terminationGracePeriodSeconds $v.preStopSleepSeconds $v.shutdownTimeoutSeconds $needed) -}}
{{- end -}}
{{- if and $v.autoscaling.enabled $v.keda.enabled -}}
{{- fail "pg-scheduler: autoscaling.enabled and keda.enabled are exclusive: KEDA creates its own HorizontalPodAutoscaler; enable one" -}}
{{- end -}}
{{- if and $v.autoscaling.enabled (not (dig "requests" "cpu" "" $v.resources)) -}}
{{- fail "pg-scheduler: autoscaling on CPU needs resources.requests.cpu (utilization is measured against it)" -}}
{{- end -}}
{{- if and $v.autoscaling.enabled (lt (int $v.autoscaling.maxReplicas) (int $v.autoscaling.minReplicas)) -}}
{{- fail (printf "pg-scheduler: autoscaling.maxReplicas (%v) is below autoscaling.minReplicas (%v)" $v.autoscaling.maxReplicas $v.autoscaling.minReplicas) -}}
{{- end -}}
{{- if and $v.keda.enabled (lt (int $v.keda.maxReplicaCount) (int $v.keda.minReplicaCount)) -}}
{{- fail (printf "pg-scheduler: keda.maxReplicaCount (%v) is below keda.minReplicaCount (%v)" $v.keda.maxReplicaCount $v.keda.minReplicaCount) -}}
{{- end -}}
{{- if and $v.keda.enabled (not $v.keda.prometheus.serverAddress) -}}
{{- fail "pg-scheduler: keda.enabled needs keda.prometheus.serverAddress (the Prometheus KEDA queries)" -}}
{{- end -}}
{{- end -}}
