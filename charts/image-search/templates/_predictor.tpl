{{/*
The pod part of a KServe predictor, shared by the stable predictor and the canary so the two can only differ
in their model. Called with (dict "root" $ "storageUri" URI "version" VERSION "collection" NAME).
A model package from storageUri is mounted by KServe at /mnt/models; without one the image's baked-in model is used.
The server finds the collection to search from the model it loads, so each model version searches its own index.
*/}}
{{- define "image-search.predictorPod" -}}
{{- $root := .root }}
{{- $values := $root.Values }}
{{- $knative := eq $values.deploymentMode "Knative" -}}
labels:
  {{- include "image-search.labels" $root | nindent 2 }}
  app.kubernetes.io/component: predictor
  image-search/model-version: {{ .version | quote }}
  {{- with $values.predictor.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- $annotations := $values.predictor.podAnnotations }}
{{- if and $knative $values.autoscaling.knative.scaleToZeroRetention }}
{{- $annotations = merge (dict "autoscaling.knative.dev/scale-to-zero-pod-retention-period" $values.autoscaling.knative.scaleToZeroRetention) $annotations }}
{{- end }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
serviceAccountName: {{ include "image-search.serviceAccountName" $root }}
automountServiceAccountToken: false
securityContext:
  {{- include "image-search.podSecurityContext" $root | nindent 2 }}
{{- with $values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $nodeSelector := $values.predictor.nodeSelector }}
{{- $tolerations := $values.predictor.tolerations }}
{{- $affinity := $values.predictor.affinity }}
{{- if $values.gpu.enabled }}
{{- $nodeSelector = merge (dict) $values.gpu.nodeSelector $values.predictor.nodeSelector }}
{{- $tolerations = concat $values.predictor.tolerations $values.gpu.tolerations }}
{{- $affinity = $values.gpu.affinity | default $values.predictor.affinity }}
{{- with $values.gpu.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- end }}
{{- with $nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.predictor.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.predictor.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- if not $knative }}
{{- /* Knative sets the grace period from the revision timeout and refuses it in the pod spec. */}}
terminationGracePeriodSeconds: {{ $values.predictor.terminationGracePeriodSeconds }}
{{- end }}
timeout: {{ $values.predictor.timeoutSeconds }}
{{- if $values.requestLogger.enabled }}
logger:
  url: {{ $values.requestLogger.url | quote }}
  mode: {{ $values.requestLogger.mode }}
{{- end }}
containers:
  - name: kserve-container
    image: {{ include "image-search.image" $root | quote }}
    imagePullPolicy: {{ $values.image.pullPolicy }}
    args:
      - --http_port=8080
      - --grpc_port=8081
      - --workers=1
      - --collection={{ .collection }}
      - --device={{ include "image-search.device" $root }}
      - --precision={{ $values.predictor.precision }}
      - --compile={{ $values.predictor.compile }}
      {{- include "image-search.indexArgs" $root | nindent 6 }}
      - --search-consistency={{ $values.milvus.searchConsistency }}
      - --max-batch-size={{ $values.predictor.maxBatchSize }}
      - --max-batch-delay-ms={{ $values.predictor.maxBatchDelayMs }}
      {{- with $values.predictor.maxRequestBytes }}
      - --max-request-bytes={{ int64 . }}
      {{- end }}
      - --shutdown-grace-seconds={{ $values.predictor.drain.shutdownGraceSeconds }}
      - --request-timeout-s={{ $values.predictor.requestTimeoutSeconds }}
      - --search-workers={{ $values.predictor.searchWorkers }}
      {{- with $values.predictor.namespaceHeader }}
      - --namespace-header={{ . }}
      {{- end }}
      {{- if .storageUri }}
      - --model-dir=/mnt/models
      {{- end }}
      {{- if $values.ui.enabled }}
      - --ui
      - --thumbnail-size={{ $values.ui.thumbnails.size }}
      - --thumbnail-cache-bytes={{ int64 $values.ui.thumbnails.cacheBytes }}
      {{- range $values.ui.thumbnails.baseUrls }}
      - {{ printf "--thumbnail-base-url=%s=%s" .prefix .url | quote }}
      {{- end }}
      {{- end }}
      {{- with $values.predictor.extraArgs }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    env:
      {{- if .storageUri }}
      # KServe's storage initializer downloads this package into /mnt/models before the server starts.
      - name: STORAGE_URI
        value: {{ .storageUri | quote }}
      {{- end }}
      - name: LOG_LEVEL
        value: {{ upper $values.predictor.logLevel | quote }}
      {{- include "image-search.milvusEnv" $root | nindent 6 }}
      {{- include "image-search.cacheEnv" $root | nindent 6 }}
      {{- if $values.objectStore.predictor }}
      {{- with include "image-search.objectStoreEnv" $root }}{{ . | trim | nindent 6 }}{{ end }}
      {{- end }}
      {{- with $values.predictor.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- if $values.objectStore.predictor }}
    {{- with include "image-search.objectStoreEnvFrom" $root }}{{ . | trim | nindent 4 }}{{ end }}
    {{- end }}
    ports:
      # Knative routes a single port per container, so gRPC is exposed in Standard mode only.
      - name: http1
        containerPort: 8080
        protocol: TCP
      {{- if not $knative }}
      - name: h2c
        containerPort: 8081
        protocol: TCP
      {{- end }}
    {{- if and (not $knative) $values.predictor.drain.preStopSeconds }}
    {{- /* Knative refuses lifecycle hooks; its queue-proxy holds the pod until requests have drained. */}}
    lifecycle:
      preStop:
        # Kubernetes removes a stopping pod from its endpoints while this runs, and sends SIGTERM after it, so
        # requests routed just before the update are still answered. python is in every image of this server;
        # the built-in sleep action needs Kubernetes 1.30.
        exec:
          command:
            - python
            - -c
            - import time; time.sleep({{ $values.predictor.drain.preStopSeconds }})
    {{- end }}
    {{- if not $knative }}
    {{- /* Knative holds traffic until the readiness probe passes, which covers the model load. */}}
    startupProbe:
      httpGet:
        path: /v2/health/live
        port: 8080
      periodSeconds: {{ $values.predictor.probes.startup.periodSeconds }}
      failureThreshold: {{ $values.predictor.probes.startup.failureThreshold }}
      timeoutSeconds: {{ $values.predictor.probes.timeoutSeconds }}
    {{- end }}
    livenessProbe:
      httpGet:
        path: /v2/health/live
        port: 8080
      periodSeconds: {{ $values.predictor.probes.liveness.periodSeconds }}
      failureThreshold: {{ $values.predictor.probes.liveness.failureThreshold }}
      timeoutSeconds: {{ $values.predictor.probes.timeoutSeconds }}
    readinessProbe:
      httpGet:
        path: /v2/models/image-search/ready
        port: 8080
      periodSeconds: {{ $values.predictor.probes.readiness.periodSeconds }}
      failureThreshold: {{ $values.predictor.probes.readiness.failureThreshold }}
      timeoutSeconds: {{ $values.predictor.probes.timeoutSeconds }}
    {{- $resources := deepCopy $values.predictor.resources }}
    {{- if $values.gpu.enabled }}
    {{- $_ := set $resources "limits" (merge (dict $values.gpu.resourceName $values.gpu.count) ($resources.limits | default dict)) }}
    {{- end }}
    {{- with $resources }}
    resources:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    securityContext:
      {{- include "image-search.containerSecurityContext" $root | nindent 6 }}
    volumeMounts:
      {{- include "image-search.writableVolumeMounts" $root | nindent 6 }}
      {{- if $values.objectStore.predictor }}
      {{- with include "image-search.objectStoreVolumeMounts" $root }}{{ . | trim | nindent 6 }}{{ end }}
      {{- end }}
volumes:
  {{- include "image-search.writableVolumes" $root | nindent 2 }}
  {{- if $values.objectStore.predictor }}
  {{- with include "image-search.objectStoreVolumes" $root }}{{ . | trim | nindent 2 }}{{ end }}
  {{- end }}
{{- end }}
