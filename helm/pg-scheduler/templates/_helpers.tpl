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

{{/* The main Deployment's pods; the migration Job's pods have another component, so no selector
     of a Deployment or PodDisruptionBudget picks them up, nor the Service's while there is no
     pool (see service.yaml for the Service with pools). */}}
{{- define "pg-scheduler.selectorLabels" -}}
{{- include "pg-scheduler.workloadSelectorLabels" (dict "root" . "pool" dict) -}}
{{- end -}}

{{/* One Deployment of `pg-scheduler run`, as a dict passed to the templates below: .root, the
     chart's context; .pool, an entry of pools, or an empty dict for the main Deployment. */}}
{{- define "pg-scheduler.workloadName" -}}
{{- if .pool.name -}}
{{- printf "%s-%s" (include "pg-scheduler.fullname" .root) .pool.name -}}
{{- else -}}
{{- include "pg-scheduler.fullname" .root -}}
{{- end -}}
{{- end -}}

{{/* Each Deployment's pods have their own component (scheduler, or pool-<name> for a pool), so
     that no Deployment, PodDisruptionBudget or HorizontalPodAutoscaler counts another's pods. */}}
{{- define "pg-scheduler.component" -}}
{{- if .pool.name -}}pool-{{ .pool.name }}{{- else -}}scheduler{{- end -}}
{{- end -}}

{{- define "pg-scheduler.workloadSelectorLabels" -}}
app.kubernetes.io/name: {{ include "pg-scheduler.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ include "pg-scheduler.component" . }}
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

{{/* Checks a JSON schema cannot express (two values compared, one of two required, unique
     pool names). Included by every template that needs a valid configuration, so
     `helm template` and `helm install` stop with the message before anything is applied. */}}
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
{{- if not (or $v.mainDeployment.enabled $v.pools) -}}
{{- fail "pg-scheduler: mainDeployment.enabled is false and pools is empty: the release would run no pod" -}}
{{- end -}}
{{- if and (not $v.mainDeployment.enabled) (or $v.autoscaling.enabled $v.keda.enabled) -}}
{{- fail "pg-scheduler: autoscaling and keda scale the main Deployment, and mainDeployment.enabled is false" -}}
{{- end -}}
{{- if and $v.dashboard.enabled (not $v.dashboard.auth.existingSecret) -}}
{{- fail "pg-scheduler: dashboard.enabled needs dashboard.auth.existingSecret (a Secret with the basic-auth user and password): the dashboard serves on 0.0.0.0 in its pod and refuses to without them" -}}
{{- end -}}
{{- $names := list -}}
{{- range $v.pools -}}
{{- if has .name $names -}}
{{- fail (printf "pg-scheduler: two pools are named %q; each pool's name must be unique (it names its Deployment)" .name) -}}
{{- end -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- end -}}

{{/* The pod template of every Deployment of `pg-scheduler run`, called with a workload dict
     (see workloadName). A pool's pods differ from the main Deployment's only in their component
     label and in queues, workers, maxConcurrentJobs and resources, the pool's when it sets them. */}}
{{- define "pg-scheduler.podTemplate" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $pool := .pool -}}
metadata:
  labels:
    {{- include "pg-scheduler.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ include "pg-scheduler.component" . }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    {{- if or $v.database.url $v.database.leaderUrl }}
    # A changed DSN restarts the pods.
    checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
    {{- end }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "pg-scheduler.serviceAccountName" $root }}
  automountServiceAccountToken: {{ $v.serviceAccount.automountServiceAccountToken }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  # Longer than the drain (preStop sleep + shutdown timeout + 10 s), checked at render time:
  # the kubelet's SIGKILL must not cut the hand-back of running jobs short.
  terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  containers:
    - name: pg-scheduler
      image: {{ include "pg-scheduler.image" $root | quote }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      command: ["pg-scheduler"]
      args: ["run"]
      env:
        {{- if $v.app }}
        - name: PG_SCHEDULER_APP
          value: {{ $v.app | quote }}
        {{- end }}
        - name: DATABASE_URL
          valueFrom:
            secretKeyRef:
              name: {{ include "pg-scheduler.databaseSecretName" $root }}
              key: {{ include "pg-scheduler.databaseSecretKey" $root }}
        {{- if include "pg-scheduler.leaderDatabaseGiven" $root }}
        - name: PG_SCHEDULER_LEADER_DATABASE_URL
          valueFrom:
            secretKeyRef:
              name: {{ include "pg-scheduler.leaderSecretName" $root }}
              key: {{ include "pg-scheduler.leaderSecretKey" $root }}
        {{- end }}
        - name: PG_SCHEDULER_WORKERS
          value: {{ dig "workers" $v.workers $pool | quote }}
        - name: MAX_CONCURRENT_JOBS
          value: {{ dig "maxConcurrentJobs" $v.maxConcurrentJobs $pool | quote }}
        {{- with dig "queues" $v.queues $pool }}
        - name: PG_SCHEDULER_QUEUES
          value: {{ join "," . | quote }}
        {{- end }}
        - name: PG_SCHEDULER_SHUTDOWN_TIMEOUT
          value: {{ $v.shutdownTimeoutSeconds | quote }}
        - name: PG_SCHEDULER_METRICS_PORT
          value: {{ $v.metrics.port | quote }}
        - name: PG_SCHEDULER_METRICS_DIR
          value: {{ include "pg-scheduler.metricsDir" $root }}
        - name: PG_SCHEDULER_LOG_LEVEL
          value: {{ $v.logLevel | quote }}
        {{- with $v.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: metrics
          containerPort: {{ $v.metrics.port }}
          protocol: TCP
      {{- if $v.startupProbe.enabled }}
      startupProbe:
        httpGet:
          path: /healthz
          port: metrics
        periodSeconds: {{ $v.startupProbe.periodSeconds }}
        timeoutSeconds: {{ $v.startupProbe.timeoutSeconds }}
        failureThreshold: {{ $v.startupProbe.failureThreshold }}
      {{- end }}
      # Liveness looks at the supervisor's event loop only: a database outage restarts nothing.
      livenessProbe:
        httpGet:
          path: /healthz
          port: metrics
        periodSeconds: {{ $v.livenessProbe.periodSeconds }}
        timeoutSeconds: {{ $v.livenessProbe.timeoutSeconds }}
        failureThreshold: {{ $v.livenessProbe.failureThreshold }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: metrics
        periodSeconds: {{ $v.readinessProbe.periodSeconds }}
        timeoutSeconds: {{ $v.readinessProbe.timeoutSeconds }}
        failureThreshold: {{ $v.readinessProbe.failureThreshold }}
      {{- if gt (float64 $v.preStopSleepSeconds) 0.0 }}
      # SIGTERM, sent by the kubelet once this hook returns, starts the drain. The hook only
      # waits, so the pod leaves the endpoints first; it never signals the supervisor itself
      # (a second SIGTERM would hand running jobs back at once).
      lifecycle:
        preStop:
          exec:
            command: ["sleep", {{ $v.preStopSleepSeconds | quote }}]
      {{- end }}
      resources:
        {{- toYaml (dig "resources" $v.resources $pool) | nindent 8 }}
      securityContext:
        {{- toYaml $v.securityContext | nindent 8 }}
      volumeMounts:
        # readOnlyRootFilesystem: the only writable places are these emptyDirs.
        - name: tmp
          mountPath: /tmp
        - name: metrics
          mountPath: {{ include "pg-scheduler.metricsDir" $root }}
        {{- with $v.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: tmp
      emptyDir: {}
    - name: metrics
      emptyDir: {}
    {{- with $v.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $v.topologySpreadConstraints }}
  {{- $constraints := list }}
  {{- range . }}
  {{- $c := deepCopy . }}
  {{- if not $c.labelSelector }}
  {{- $_ := set $c "labelSelector" (dict "matchLabels" (include "pg-scheduler.workloadSelectorLabels" $ | fromYaml)) }}
  {{- end }}
  {{- $constraints = append $constraints $c }}
  {{- end }}
  topologySpreadConstraints:
    {{- toYaml $constraints | nindent 4 }}
  {{- end }}
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
