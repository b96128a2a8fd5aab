{{/*
Names. The full name is cut to 52 characters so that "<fullname>-component" (the longest
suffix) still fits the 63-character limit of a DNS label.
*/}}
{{- define "cairn.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "cairn.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "cairn.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object; pass (dict "ctx" $ "component" "auth"). */}}
{{- define "cairn.labels" -}}
helm.sh/chart: {{ include "cairn.chart" .ctx }}
{{ include "cairn.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: cairn
{{- end -}}

{{- define "cairn.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cairn.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Selects every pod of this release (network policies). */}}
{{- define "cairn.releaseSelector" -}}
app.kubernetes.io/name: {{ include "cairn.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "cairn.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "cairn.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "cairn.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The gRPC service name each service's health servicer reports (cairn.runtime.server). */}}
{{- define "cairn.grpcServiceName" -}}
{{- printf "cairn.%s.v1.%sService" . (title .) -}}
{{- end -}}

{{/* host:port of a service's headless Service; pass (dict "ctx" $ "service" "auth"). */}}
{{- define "cairn.serviceAddress" -}}
{{- $svc := index .ctx.Values.services .service -}}
{{- printf "%s-%s:%d" (include "cairn.fullname" .ctx) .service (int $svc.port) -}}
{{- end -}}

{{/* A service's Prometheus port (metrics.*); pass (dict "ctx" $ "service" "auth"). As the
service itself defaults it (cairn.runtime.settings): its gRPC port + 100 unless set. */}}
{{- define "cairn.metricsPort" -}}
{{- $svc := index .ctx.Values.services .service -}}
{{- int ($svc.metricsPort | default (add $svc.port 100)) -}}
{{- end -}}

{{/* How Prometheus finds the pods: "podMonitor", "annotations", or nothing (metrics.discovery). */}}
{{- define "cairn.metricsDiscovery" -}}
{{- $m := .Values.metrics -}}
{{- if $m.enabled -}}
{{- if eq $m.discovery "auto" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1/PodMonitor" -}}
podMonitor
{{- else -}}
annotations
{{- end -}}
{{- else if ne $m.discovery "none" -}}
{{- $m.discovery -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A pod's prometheus.io/* annotations when Prometheus discovers pods by them; pass
(dict "ctx" $ "port" 20153). */}}
{{- define "cairn.scrapeAnnotations" -}}
{{- if eq (include "cairn.metricsDiscovery" .ctx) "annotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end -}}
{{- end -}}

{{/* The NetworkPolicy ingress rule that lets metrics.scrapers reach every "metrics" port. */}}
{{- define "cairn.scrapeRule" -}}
{{- if .Values.metrics.enabled -}}
- ports:
    - port: metrics
      protocol: TCP
  {{- with .Values.metrics.scrapers }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
{{- end -}}

{{/* "address=grpc.service.Name" for every service, space-separated (the helm test Pod). */}}
{{- define "cairn.testTargets" -}}
{{- $pairs := list -}}
{{- range $name, $svc := .Values.services -}}
{{- $address := include "cairn.serviceAddress" (dict "ctx" $ "service" $name) -}}
{{- $pairs = append $pairs (printf "%s=%s" $address (include "cairn.grpcServiceName" $name)) -}}
{{- end -}}
{{- join " " $pairs -}}
{{- end -}}

{{/* The Secret holding the root token and internal secret. */}}
{{- define "cairn.secretName" -}}
{{- default (include "cairn.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Whether the services get CAIRN_REDIS_URL from a Secret (an external URL may carry a password). */}}
{{- define "cairn.redisUrlFromSecret" -}}
{{- if and (not .Values.redis.enabled) (or .Values.externalRedis.url .Values.externalRedis.existingSecret) -}}
true
{{- end -}}
{{- end -}}

{{/* The Secret and key of an external Redis URL. */}}
{{- define "cairn.redisUrlSecretName" -}}
{{- if .Values.externalRedis.existingSecret -}}
{{- .Values.externalRedis.existingSecret -}}
{{- else -}}
{{- include "cairn.fullname" . -}}-store
{{- end -}}
{{- end -}}

{{- define "cairn.redisUrlSecretKey" -}}
{{- if .Values.externalRedis.existingSecret -}}
{{- .Values.externalRedis.existingSecretKey -}}
{{- else -}}
redis-url
{{- end -}}
{{- end -}}

{{/* The Secret and key of the Redis password (bundled: yours or the chart's; external: yours). */}}
{{- define "cairn.redisPasswordSecretName" -}}
{{- if .Values.redis.enabled -}}
{{- default (printf "%s-store" (include "cairn.fullname" .)) .Values.redis.auth.existingSecret -}}
{{- else -}}
{{- .Values.externalRedis.passwordSecret.name -}}
{{- end -}}
{{- end -}}

{{- define "cairn.redisPasswordSecretKey" -}}
{{- if .Values.redis.enabled -}}
{{- if .Values.redis.auth.existingSecret -}}{{ .Values.redis.auth.existingSecretPasswordKey }}{{- else -}}redis-password{{- end -}}
{{- else -}}
{{- .Values.externalRedis.passwordSecret.key -}}
{{- end -}}
{{- end -}}

{{/* The Secret with the external Redis's CA certificate (empty: none), and where it is mounted. */}}
{{- define "cairn.redisCaSecret" -}}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.tls.enabled -}}
{{- .Values.externalRedis.tls.caSecret.name -}}
{{- end -}}
{{- end -}}

{{- define "cairn.redisCaDir" -}}/etc/cairn/redis-ca{{- end -}}

{{/* The ledger's HS256 secret: your Secret or the chart's generated one. */}}
{{- define "cairn.ledgerSecretName" -}}
{{- default (printf "%s-ledger-jwt" (include "cairn.fullname" .)) .Values.ledger.auth.existingSecret -}}
{{- end -}}

{{/* The Secret holding the S3 access and secret key, with the two key names. */}}
{{- define "cairn.s3SecretName" -}}
{{- if and (not .Values.minio.enabled) .Values.externalS3.existingSecret -}}
{{- .Values.externalS3.existingSecret -}}
{{- else if and .Values.minio.enabled .Values.minio.auth.existingSecret -}}
{{- .Values.minio.auth.existingSecret -}}
{{- else -}}
{{- include "cairn.fullname" . -}}-store
{{- end -}}
{{- end -}}

{{- define "cairn.s3AccessKeyKey" -}}
{{- if and (not .Values.minio.enabled) .Values.externalS3.existingSecret -}}
{{- .Values.externalS3.accessKeyKey -}}
{{- else if and .Values.minio.enabled .Values.minio.auth.existingSecret -}}
{{- .Values.minio.auth.rootUserKey -}}
{{- else -}}
s3-access-key
{{- end -}}
{{- end -}}

{{- define "cairn.s3SecretKeyKey" -}}
{{- if and (not .Values.minio.enabled) .Values.externalS3.existingSecret -}}
{{- .Values.externalS3.secretKeyKey -}}
{{- else if and .Values.minio.enabled .Values.minio.auth.existingSecret -}}
{{- .Values.minio.auth.rootPasswordKey -}}
{{- else -}}
s3-secret-key
{{- end -}}
{{- end -}}

{{/* Whether the chart's "-store" Secret has an S3 key pair to hand out. */}}
{{- define "cairn.s3HasCredentials" -}}
{{- if .Values.minio.enabled -}}
true
{{- else if and (eq .Values.externalS3.credentials "static") (or .Values.externalS3.existingSecret .Values.externalS3.accessKey) -}}
true
{{- end -}}
{{- end -}}

{{/*
Settings the values cannot express in the schema alone; rendering stops with a message that
names the value to fix.
*/}}
{{- define "cairn.validate" -}}
{{- if le (float64 .Values.terminationGracePeriodSeconds) (addf .Values.preStopSleepSeconds .Values.shutdownGraceSeconds) -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be greater than preStopSleepSeconds + shutdownGraceSeconds (%v + %v): Kubernetes would kill pods while they drain" .Values.terminationGracePeriodSeconds .Values.preStopSleepSeconds .Values.shutdownGraceSeconds) -}}
{{- end -}}
{{- if not .Values.redis.enabled -}}
{{- $r := .Values.externalRedis -}}
{{- $ways := len (compact (list (or $r.url $r.existingSecret) (join "," $r.sentinel.hosts) (join "," $r.cluster.nodes))) -}}
{{- if ne $ways 1 -}}
{{- fail "redis.enabled is false: set exactly one of externalRedis.url (or externalRedis.existingSecret), externalRedis.sentinel.hosts and externalRedis.cluster.nodes" -}}
{{- end -}}
{{- if and $r.cluster.nodes $r.db -}}
{{- fail "externalRedis.db: a Redis Cluster has only database 0" -}}
{{- end -}}
{{- end -}}
{{- $auth := .Values.ledger.auth -}}
{{- if and (has $auth.mode (list "rs256" "es256" "es512")) (not $auth.publicKey) (not $auth.existingSecret) -}}
{{- fail (printf "ledger.auth.mode=%s: set ledger.auth.publicKey (PEM) or ledger.auth.existingSecret with the key %s" $auth.mode $auth.publicKeyKey) -}}
{{- end -}}
{{- if and (eq $auth.mode "jwks") (not $auth.jwksUrl) -}}
{{- fail "ledger.auth.mode=jwks: set ledger.auth.jwksUrl" -}}
{{- end -}}
{{- if and (eq .Values.externalS3.credentials "iam") (or .Values.externalS3.accessKey .Values.externalS3.existingSecret) (not .Values.minio.enabled) -}}
{{- fail "externalS3.credentials=iam takes no keys: unset externalS3.accessKey/secretKey/existingSecret" -}}
{{- end -}}
{{- if and (not .Values.minio.enabled) (not .Values.externalS3.endpoint) -}}
{{- fail "minio.enabled is false: set externalS3.endpoint" -}}
{{- end -}}
{{- if and (not .Values.minio.enabled) (not .Values.externalS3.existingSecret) (ne (empty .Values.externalS3.accessKey) (empty .Values.externalS3.secretKey)) -}}
{{- fail "externalS3: set both accessKey and secretKey, or neither (or use externalS3.existingSecret)" -}}
{{- end -}}
{{- $ports := dict -}}
{{- $wanted := len .Values.services -}}
{{- range $name, $svc := .Values.services -}}
{{- $_ := set $ports (toString $svc.port) $name -}}
{{- if $svc.wsPort -}}
{{- $_ := set $ports (toString $svc.wsPort) $name -}}
{{- $wanted = add1 $wanted -}}
{{- end -}}
{{- end -}}
{{- if .Values.metrics.enabled -}}
{{- range $name, $svc := .Values.services -}}
{{- $_ := set $ports (include "cairn.metricsPort" (dict "ctx" $ "service" $name)) $name -}}
{{- $wanted = add1 $wanted -}}
{{- end -}}
{{- end -}}
{{- if ne (len $ports) $wanted -}}
{{- fail "services.*.port, services.*.wsPort, services.*.metricsPort (default port + 100): every port must be distinct" -}}
{{- end -}}
{{- $envoy := .Values.envoy -}}
{{- if has (int $envoy.statsPort) (list (int $envoy.httpPort) (int $envoy.adminPort)) -}}
{{- fail "envoy.statsPort must differ from envoy.httpPort and envoy.adminPort" -}}
{{- end -}}
{{- end -}}

{{/*
Secret environment of a service container; pass (dict "ctx" $ "blobs" true "ledger" true): the
services that store blobs get the S3 keys, the ones that verify ledger JWTs (auth, ledger) the
token key. Everything else comes from the shared ConfigMap.
*/}}
{{- define "cairn.env" -}}
{{- $ := .ctx -}}
- name: CAIRN_ROOT_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "cairn.secretName" $ }}
      key: {{ $.Values.secrets.rootTokenKey }}
- name: CAIRN_INTERNAL_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "cairn.secretName" $ }}
      key: {{ $.Values.secrets.internalSecretKey }}
{{- if include "cairn.redisUrlFromSecret" $ }}
- name: CAIRN_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "cairn.redisUrlSecretName" $ }}
      key: {{ include "cairn.redisUrlSecretKey" $ }}
{{- end }}
{{- if include "cairn.redisPasswordSecretName" $ }}
- name: CAIRN_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "cairn.redisPasswordSecretName" $ }}
      key: {{ include "cairn.redisPasswordSecretKey" $ }}
{{- end }}
{{- if and (not $.Values.redis.enabled) $.Values.externalRedis.sentinel.hosts $.Values.externalRedis.sentinel.passwordSecret.name }}
- name: CAIRN_REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.externalRedis.sentinel.passwordSecret.name }}
      key: {{ $.Values.externalRedis.sentinel.passwordSecret.key }}
{{- end }}
{{- if .ledger }}
{{- if eq $.Values.ledger.auth.mode "hs256" }}
- name: CAIRN_LEDGER_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "cairn.ledgerSecretName" $ }}
      key: {{ $.Values.ledger.auth.secretKey }}
{{- else if and (has $.Values.ledger.auth.mode (list "rs256" "es256" "es512")) $.Values.ledger.auth.existingSecret }}
- name: CAIRN_LEDGER_JWT_PUBLIC_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.ledger.auth.existingSecret }}
      key: {{ $.Values.ledger.auth.publicKeyKey }}
{{- end }}
{{- end }}
{{- if and .blobs (include "cairn.s3HasCredentials" $) }}
- name: CAIRN_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "cairn.s3SecretName" $ }}
      key: {{ include "cairn.s3AccessKeyKey" $ }}
- name: CAIRN_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "cairn.s3SecretName" $ }}
      key: {{ include "cairn.s3SecretKeyKey" $ }}
{{- end }}
{{- end -}}

{{/* Keeps a deleted pod serving until clients and Envoy's DNS refresh have let go of it. */}}
{{- define "cairn.preStop" -}}
{{- if .Values.preStopSleepSeconds -}}
lifecycle:
  preStop:
    exec:
      command: ["sleep", "{{ .Values.preStopSleepSeconds }}"]
{{- end -}}
{{- end -}}

{{/* Pod annotations that roll the pods when their configuration or generated secrets change. */}}
{{- define "cairn.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secrets: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end -}}


{{/*
Where a pod runs and how it pulls its image, the same for every workload (services, Envoy, Redis,
MinIO, the test Pod); pass (dict "ctx" $ "component" "auth"). Topology spread keeps a component's
replicas apart (values: topologySpread).
*/}}
{{- define "cairn.scheduling" -}}
{{- $ := .ctx -}}
{{- with $.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $.Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $component := .component -}}
{{- if and $.Values.topologySpread.enabled $component }}
topologySpreadConstraints:
  {{- range $.Values.topologySpread.topologyKeys }}
  - maxSkew: {{ $.Values.topologySpread.maxSkew }}
    topologyKey: {{ . }}
    whenUnsatisfiable: {{ $.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "cairn.selectorLabels" (dict "ctx" $ "component" $component) | nindent 8 }}
  {{- end }}
{{- end }}
{{- end -}}
