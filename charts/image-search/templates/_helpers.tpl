{{/* Chart name, overridable. */}}
{{- define "image-search.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Default fully qualified name. Truncated to 45 characters, not 63: KServe appends "-predictor" and Knative a
revision suffix to it, and the results must still fit a DNS label.
*/}}
{{- define "image-search.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Chart name and version, as used by the helm.sh/chart label. */}}
{{- define "image-search.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "image-search.labels" -}}
helm.sh/chart: {{ include "image-search.chart" . }}
{{ include "image-search.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: image-search
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels: name and instance only, so they never change on upgrade. */}}
{{- define "image-search.selectorLabels" -}}
app.kubernetes.io/name: {{ include "image-search.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selects the predictor pods of this release, stable and canary alike. */}}
{{- define "image-search.predictorSelectorLabels" -}}
{{ include "image-search.selectorLabels" . }}
app.kubernetes.io/component: predictor
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "image-search.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "image-search.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The predictor image reference; a digest, when given, pins it. */}}
{{- define "image-search.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Milvus URI; by default the Milvus Service in the release namespace. */}}
{{- define "image-search.milvusUri" -}}
{{- default (printf "http://milvus.%s:19530" .Release.Namespace) .Values.milvus.uri }}
{{- end }}

{{/*
The stable predictor's Deployment and Service: <fullname>-predictor, or <fullname>-<name>-predictor once a promoted
canary's name is given in Standard mode.
*/}}
{{- define "image-search.predictorServiceName" -}}
{{- if and (ne .Values.deploymentMode "Knative") .Values.model.predictorName }}
{{- printf "%s-%s-predictor" (include "image-search.fullname" .) .Values.model.predictorName }}
{{- else }}
{{- printf "%s-predictor" (include "image-search.fullname" .) }}
{{- end }}
{{- end }}

{{/* Index settings for `image-search serve` and `index`, as command-line arguments. */}}
{{- define "image-search.indexArgs" -}}
- --index-type={{ .Values.milvus.index.type }}
{{- with .Values.milvus.index.params }}
- --index-params={{ include "image-search.paramList" . }}
{{- end }}
{{- with .Values.milvus.index.searchParams }}
- --search-params={{ include "image-search.paramList" . }}
{{- end }}
{{- with .Values.milvus.index.filterColumns }}
- --filter-columns={{ include "image-search.columnList" . }}
{{- end }}
{{- end }}

{{/* A map as NAME=VALUE,NAME=VALUE, sorted by name. */}}
{{- define "image-search.paramList" -}}
{{- $pairs := list }}
{{- range $name, $value := . }}
{{- $pairs = append $pairs (printf "%s=%v" $name $value) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* A map as KEY:KIND,KEY:KIND, sorted by key. */}}
{{- define "image-search.columnList" -}}
{{- $pairs := list }}
{{- range $key, $kind := . }}
{{- $pairs = append $pairs (printf "%s:%s" $key $kind) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* The device the predictor runs on: the GPU block decides. */}}
{{- define "image-search.device" -}}
{{- if .Values.gpu.enabled }}cuda{{ else }}cpu{{ end }}
{{- end }}

{{/* Pod security context of the restricted Pod Security profile. */}}
{{- define "image-search.podSecurityContext" -}}
runAsNonRoot: true
{{- with .Values.securityContext.runAsUser }}
runAsUser: {{ . }}
{{- end }}
{{- with .Values.securityContext.runAsGroup }}
runAsGroup: {{ . }}
{{- end }}
{{- with .Values.securityContext.fsGroup }}
fsGroup: {{ . }}
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container security context of the restricted Pod Security profile. */}}
{{- define "image-search.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Environment that points every cache at the writable emptyDir, since the root filesystem is read-only.
*/}}
{{- define "image-search.cacheEnv" -}}
- name: HOME
  value: /cache
- name: XDG_CACHE_HOME
  value: /cache/xdg
- name: TORCH_HOME
  value: /cache/torch
{{- end }}

{{/* Milvus connection environment; the token only ever comes from an existing Secret. */}}
{{- define "image-search.milvusEnv" -}}
- name: IMAGE_SEARCH_MILVUS_URI
  value: {{ include "image-search.milvusUri" . | quote }}
{{- with .Values.milvus.tokenSecret.name }}
- name: MILVUS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.milvus.tokenSecret.key }}
{{- end }}
{{- end }}

{{/* The writable volumes every container of the chart mounts. */}}
{{- define "image-search.writableVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.predictor.tmpSizeLimit }}
- name: cache
  emptyDir:
    sizeLimit: {{ .Values.predictor.cacheSizeLimit }}
{{- end }}

{{- define "image-search.writableVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: cache
  mountPath: /cache
{{- end }}

{{/*
The common part of a storage initializer init container (KServe's downloader, run here outside KServe). Ends with
the volumeMounts list open, so the caller appends the mount it downloads into.
*/}}
{{- define "image-search.storageInitializerSpec" -}}
imagePullPolicy: IfNotPresent
env:
  {{- include "image-search.cacheEnv" . | nindent 2 }}
  {{- with .Values.indexing.storageInitializer.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
resources:
  requests:
    cpu: 100m
    memory: 256Mi
  limits:
    memory: 1Gi
securityContext:
  {{- include "image-search.containerSecurityContext" . | nindent 2 }}
volumeMounts:
  {{- include "image-search.writableVolumeMounts" . | nindent 2 }}
{{- end }}

{{/* The port of milvus.uri: the one it names, else 443 for https and Milvus's 19530 otherwise. */}}
{{- define "image-search.milvusPort" -}}
{{- $uri := include "image-search.milvusUri" . }}
{{- $port := regexFind ":[0-9]+" (regexReplaceAll "^[a-zA-Z]+://" $uri "") | trimPrefix ":" }}
{{- if $port }}{{ $port }}{{ else if hasPrefix "https://" $uri }}443{{ else }}19530{{ end }}
{{- end }}

{{/*
NetworkPolicy peers of Milvus: networkPolicy.egress.milvus, or derived from the host of milvus.uri. A cluster
Service name (milvus, milvus.NAMESPACE, milvus.NAMESPACE.svc...) selects the Milvus chart's pods in that namespace;
an IP address becomes an ipBlock; any other host is outside the cluster and must be given explicitly.
*/}}
{{- define "image-search.milvusPeers" -}}
{{- $np := .Values.networkPolicy }}
{{- if $np.egress.milvus }}
{{- toYaml $np.egress.milvus }}
{{- else }}
{{- $uri := include "image-search.milvusUri" . }}
{{- $host := regexReplaceAll "^(?:[a-zA-Z]+://)?([^:/]+).*$" $uri "${1}" }}
{{- $labels := splitList "." $host }}
{{- if regexMatch "^[0-9.]+$" $host }}
- ipBlock:
    cidr: {{ $host }}/32
{{- else if eq (len $labels) 1 }}
- podSelector:
    matchLabels:
      app.kubernetes.io/name: milvus
{{- else if or (eq (len $labels) 2) (eq (index $labels 2) "svc") }}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ index $labels 1 }}
  podSelector:
    matchLabels:
      app.kubernetes.io/name: milvus
{{- else }}
{{- fail (printf "milvus.uri names %s, which is not a Service of the cluster: set networkPolicy.egress.milvus to its peers (for example an ipBlock), or networkPolicy.egress.enabled=false" $host) }}
{{- end }}
{{- end }}
{{- end }}

{{/* "true" when a predictor downloads its model package with KServe's storage initializer (any storageUri but pvc://). */}}
{{- define "image-search.downloadsModel" -}}
{{- $uris := list .Values.model.storageUri }}
{{- if .Values.canary.enabled }}{{ $uris = append $uris .Values.canary.storageUri }}{{ end }}
{{- range $uris }}{{ if and . (not (hasPrefix "pvc://" .)) }}true{{ end }}{{ end }}
{{- end }}

{{/* Whether the indexing source is an object-store prefix the indexer reads itself (no download first). */}}
{{- define "image-search.readsObjectStore" -}}
{{- $uri := .Values.indexing.source.uri }}
{{- if or (hasPrefix "s3://" $uri) (hasPrefix "gs://" $uri) }}true{{ end }}
{{- end }}

{{/* What `image-search index` and `sync` are given: the prefix itself, or the folder the source is mounted or
downloaded at. */}}
{{- define "image-search.indexSource" -}}
{{- $source := .Values.indexing.source }}
{{- if include "image-search.readsObjectStore" . }}{{ $source.uri }}
{{- else if and $source.pvc.claimName $source.pvc.path }}{{ printf "/data/source/%s" (trimPrefix "/" $source.pvc.path) }}
{{- else }}/data/source
{{- end }}
{{- end }}

{{/* Object-store environment: the SDKs read credentials, endpoint and region from it (objectStore in values). */}}
{{- define "image-search.objectStoreEnv" -}}
{{- range $name, $value := .Values.objectStore.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- if .Values.objectStore.gcpKeySecret }}
- name: GOOGLE_APPLICATION_CREDENTIALS
  value: /var/run/secrets/gcp/key.json
{{- end }}
{{- end }}

{{- define "image-search.objectStoreEnvFrom" -}}
{{- with .Values.objectStore.credentialsSecret }}
envFrom:
  - secretRef:
      name: {{ . }}
{{- end }}
{{- end }}

{{- define "image-search.objectStoreVolumes" -}}
{{- with .Values.objectStore.gcpKeySecret }}
- name: gcp-key
  secret:
    secretName: {{ . }}
    items:
      - key: key.json
        path: key.json
{{- end }}
{{- end }}

{{- define "image-search.objectStoreVolumeMounts" -}}
{{- if .Values.objectStore.gcpKeySecret }}
- name: gcp-key
  mountPath: /var/run/secrets/gcp
  readOnly: true
{{- end }}
{{- end }}
