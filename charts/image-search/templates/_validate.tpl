{{/*
Rules that span several values and so cannot live in values.schema.json. Each message says what to change.
*/}}
{{- define "image-search.validate" -}}
{{- $v := .Values }}
{{- $knative := eq $v.deploymentMode "Knative" }}
{{- $scaling := $v.autoscaling }}
{{- if gt (int $scaling.minReplicas) (int $scaling.maxReplicas) }}
{{- fail (printf "autoscaling.minReplicas (%v) is above autoscaling.maxReplicas (%v): raise maxReplicas or lower minReplicas" $scaling.minReplicas $scaling.maxReplicas) }}
{{- end }}
{{- if and (not $knative) (not $scaling.keda.enabled) (lt (int $scaling.minReplicas) 1) }}
{{- fail "autoscaling.minReplicas is 0 but the HPA of Standard mode cannot scale to zero: set deploymentMode=Knative or autoscaling.keda.enabled=true, or use minReplicas >= 1" }}
{{- end }}
{{- if and $knative $scaling.keda.enabled }}
{{- fail "autoscaling.keda.enabled works in Standard mode only (KServe creates the ScaledObject there): set deploymentMode=Standard or turn KEDA off" }}
{{- end }}
{{- if and $knative (has $scaling.scaleMetric (list "cpu" "memory")) }}
{{- fail (printf "autoscaling.scaleMetric=%s is for Standard mode; Knative scales on concurrency or rps" $scaling.scaleMetric) }}
{{- end }}
{{- if and (not $knative) (has $scaling.scaleMetric (list "concurrency" "rps")) }}
{{- fail (printf "autoscaling.scaleMetric=%s needs Knative mode; Standard mode scales on cpu or memory, or on a Prometheus query with autoscaling.keda" $scaling.scaleMetric) }}
{{- end }}
{{- if $v.canary.enabled }}
{{- if not $v.canary.storageUri }}
{{- fail "canary.enabled needs canary.storageUri: the canary must load its own model package (and so search its own collection)" }}
{{- end }}
{{- if eq (toString $v.canary.version) "" }}
{{- fail "canary.enabled needs canary.version: the pods' model-version label is how dashboards tell the canary from the stable version" }}
{{- end }}
{{- if eq (toString $v.canary.version) (toString $v.model.version) }}
{{- fail "canary.version equals model.version: give the canary's model its own version" }}
{{- end }}
{{- if eq $v.canary.storageUri $v.model.storageUri }}
{{- fail "canary.storageUri equals model.storageUri: a canary must run a different model version" }}
{{- end }}
{{- if and (not $knative) (eq $v.canary.name $v.model.predictorName) }}
{{- fail "canary.name equals model.predictorName: give the canary predictor its own name" }}
{{- end }}
{{- end }}
{{- $drain := $v.predictor.drain }}
{{- if and (not $knative) (gt (add $drain.preStopSeconds $drain.shutdownGraceSeconds) (int $v.predictor.terminationGracePeriodSeconds)) }}
{{- fail (printf "predictor.drain.preStopSeconds (%v) + predictor.drain.shutdownGraceSeconds (%v) exceed predictor.terminationGracePeriodSeconds (%v): Kubernetes kills the pod before requests in flight finish; raise terminationGracePeriodSeconds or shorten the drain" $drain.preStopSeconds $drain.shutdownGraceSeconds $v.predictor.terminationGracePeriodSeconds) }}
{{- end }}
{{- if gt (float64 $v.predictor.requestTimeoutSeconds) (float64 $drain.shutdownGraceSeconds) }}
{{- fail (printf "predictor.requestTimeoutSeconds (%v) exceeds predictor.drain.shutdownGraceSeconds (%v): a request in flight when the pod stops would be cut off before its own timeout; lower the timeout or raise the grace" $v.predictor.requestTimeoutSeconds $drain.shutdownGraceSeconds) }}
{{- end }}
{{- if and $knative (gt (int $drain.shutdownGraceSeconds) (int $v.predictor.timeoutSeconds)) }}
{{- fail (printf "predictor.drain.shutdownGraceSeconds (%v) exceeds predictor.timeoutSeconds (%v), which Knative gives a stopping pod: lower it or raise timeoutSeconds" $drain.shutdownGraceSeconds $v.predictor.timeoutSeconds) }}
{{- end }}
{{- if and $v.networkPolicy.enabled (not $v.networkPolicy.sameNamespace) (not $v.networkPolicy.allowedNamespaces) (not $v.networkPolicy.extraFrom) }}
{{- fail "networkPolicy admits no one: set networkPolicy.sameNamespace, allowedNamespaces or extraFrom (or disable the policy)" }}
{{- end }}
{{- if and $v.requestLogger.enabled (not $v.requestLogger.url) }}
{{- fail "requestLogger.enabled needs requestLogger.url: the sink that receives the request and response events" }}
{{- end }}
{{- if and $v.metrics.podMonitor.enabled $v.metrics.serviceMonitor.enabled }}
{{- fail "metrics.podMonitor and metrics.serviceMonitor are both enabled, which scrapes every pod twice: keep one" }}
{{- end }}
{{- if $v.indexing.enabled }}
{{- $source := $v.indexing.source }}
{{- if eq (len (compact (list $source.pvc.claimName $source.uri))) 0 }}
{{- fail "indexing.enabled needs a source: set indexing.source.pvc.claimName or indexing.source.uri" }}
{{- end }}
{{- if and $source.pvc.claimName $source.uri }}
{{- fail "indexing.source.pvc.claimName and indexing.source.uri are both set: choose one source" }}
{{- end }}
{{- if gt (int $v.indexing.parallelism) (int $v.indexing.shards) }}
{{- fail "indexing.parallelism is above indexing.shards: at most one pod per shard can run" }}
{{- end }}
{{- end }}
{{- if $v.sync.enabled }}
{{- $source := $v.indexing.source }}
{{- if and $source.pvc.claimName $source.uri }}
{{- fail "indexing.source.pvc.claimName and indexing.source.uri are both set: choose one source" }}
{{- end }}
{{- if not (or $source.pvc.claimName (include "image-search.readsObjectStore" .)) }}
{{- fail "sync.enabled needs indexing.source: a PVC (indexing.source.pvc.claimName) or an s3:// or gs:// prefix (indexing.source.uri)" }}
{{- end }}
{{- if gt (int $v.sync.parallelism) (int $v.sync.shards) }}
{{- fail "sync.parallelism is above sync.shards: at most one pod per shard can run" }}
{{- end }}
{{- end }}
{{- end }}
