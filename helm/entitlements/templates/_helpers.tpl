{{/*
The chart name, truncated to the 63 characters of a DNS label.
*/}}
{{- define "entitlements.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The fully qualified name: <release>-entitlements, or the release name when it already contains
the chart name.
*/}}
{{- define "entitlements.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "entitlements.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels (without a component).
*/}}
{{- define "entitlements.labels" -}}
helm.sh/chart: {{ include "entitlements.chart" . }}
app.kubernetes.io/name: {{ include "entitlements.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: entitlements
{{- end }}

{{/*
Selector labels of the central server pods.
*/}}
{{- define "entitlements.selectorLabels" -}}
app.kubernetes.io/name: {{ include "entitlements.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "entitlements.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "entitlements.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference: repository@digest, or repository:tag (tag defaults to appVersion).
*/}}
{{- define "entitlements.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The name of the ConfigMap holding catalog.toml.
*/}}
{{- define "entitlements.catalogConfigMap" -}}
{{- default (printf "%s-catalog" (include "entitlements.fullname" .)) .Values.existingCatalogConfigMap }}
{{- end }}

{{/*
The catalog TOML: the `catalog` value, or the chart's files/catalog.toml.
*/}}
{{- define "entitlements.catalog" -}}
{{- if .Values.catalog }}
{{- .Values.catalog }}
{{- else }}
{{- .Files.Get "files/catalog.toml" }}
{{- end }}
{{- end }}

{{/*
The central service's gRPC URL for relays.
*/}}
{{- define "entitlements.upstream" -}}
{{- $scheme := ternary "https" "http" .Values.tls.enabled }}
{{- default (printf "%s://%s:%v" $scheme (include "entitlements.fullname" .) .Values.service.grpcPort) .Values.sidecar.upstream }}
{{- end }}

{{/*
The catalog volume (for the central pods and for application pods with the relay).
*/}}
{{- define "entitlements.catalogVolume" -}}
- name: catalog
  configMap:
    name: {{ include "entitlements.catalogConfigMap" . }}
    items:
      - key: catalog.toml
        path: catalog.toml
{{- end }}

{{/*
Secret references from .Values.secrets.existingSecret. Pass a dict with "root" (the chart
context) and "env" (a dict: environment variable name -> key of .Values.secrets, e.g.
"ENTITLEMENTS_DATABASE_URL" -> "databaseUrl"). A reference whose key is "" is left out.
*/}}
{{- define "entitlements.secretEnv" -}}
{{- $s := .root.Values.secrets }}
{{- range $name, $field := .env }}
{{- $ref := get $s $field }}
{{- if $ref.key }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ required "secrets.existingSecret is required: the chart references a Secret, it creates none" $s.existingSecret | quote }}
      key: {{ $ref.key | quote }}
      {{- if $ref.optional }}
      optional: true
      {{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The relay container of the sidecar pattern. Include it in an application pod's containers (or,
with sidecar.native, its initContainers) next to the application container, together with the
"entitlements.sidecarVolumes" volumes:

  initContainers:
    {{- include "entitlements.sidecarContainer" . | nindent 4 }}
  volumes:
    {{- include "entitlements.sidecarVolumes" . | nindent 4 }}

The relay serves the same EntitlementService on 127.0.0.1:50051 from its own cache, with no
database, and resolves with the same catalog as the central service.
*/}}
{{- define "entitlements.sidecarContainer" -}}
{{- $sc := .Values.sidecar -}}
- name: entitlements-relay
  image: {{ include "entitlements.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if $sc.native }}
  # A native sidecar: started (healthz) before the application, stopped after it.
  restartPolicy: Always
  {{- end }}
  args:
    - serve
    - --upstream
    - {{ include "entitlements.upstream" . | quote }}
    - --grpc-addr
    - {{ $sc.grpcAddr | quote }}
    - --http-addr
    - {{ printf "0.0.0.0:%v" $sc.httpPort | quote }}
    {{- range $sc.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  env:
    - name: ENTITLEMENTS_CATALOG
      value: /etc/entitlements/catalog.toml
    - name: ENTITLEMENTS_LOG_FORMAT
      value: {{ .Values.config.logFormat | quote }}
    - name: RUST_LOG
      value: {{ .Values.config.logLevel | quote }}
    - name: ENTITLEMENTS_CACHE_CAPACITY
      value: {{ $sc.cacheCapacity | quote }}
    - name: ENTITLEMENTS_MAX_TTL
      value: {{ .Values.config.maxTtl | quote }}
    - name: ENTITLEMENTS_STALE_IF_ERROR
      value: {{ .Values.config.staleIfError | quote }}
    {{- with .Values.config.edition }}
    - name: ENTITLEMENTS_EDITION
      value: {{ . | quote }}
    {{- end }}
    {{- with $sc.upstreamCaConfigMap }}
    - name: ENTITLEMENTS_UPSTREAM_CA
      value: /var/run/entitlements/upstream-ca/ca.crt
    {{- end }}
    {{- include "entitlements.secretEnv" (dict "root" . "env" (dict "ENTITLEMENTS_UPSTREAM_TOKEN" "relayToken")) | trim | nindent 4 }}
    {{- with $sc.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: relay-http
      containerPort: {{ $sc.httpPort }}
      protocol: TCP
  # The gRPC listener is loopback-only and the kubelet probes the pod IP, so the probes use the
  # relay's HTTP listener: /healthz (the process is up) and /readyz (catalog and upstream loaded).
  startupProbe:
    httpGet:
      path: /healthz
      port: relay-http
    periodSeconds: 1
    failureThreshold: 30
  livenessProbe:
    httpGet:
      path: /healthz
      port: relay-http
    periodSeconds: 10
    timeoutSeconds: 2
  readinessProbe:
    httpGet:
      path: /readyz
      port: relay-http
    periodSeconds: 5
    timeoutSeconds: 2
  {{- with $sc.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml (merge (deepCopy .Values.securityContext) (dict "runAsUser" 65532 "runAsGroup" 65532)) | nindent 4 }}
  volumeMounts:
    - name: catalog
      mountPath: /etc/entitlements
      readOnly: true
    {{- if $sc.upstreamCaConfigMap }}
    - name: entitlements-upstream-ca
      mountPath: /var/run/entitlements/upstream-ca
      readOnly: true
    {{- end }}
{{- end }}

{{/*
The volumes the relay container mounts: the catalog, and the upstream CA bundle when set.
*/}}
{{- define "entitlements.sidecarVolumes" -}}
{{ include "entitlements.catalogVolume" . }}
{{- with .Values.sidecar.upstreamCaConfigMap }}
- name: entitlements-upstream-ca
  configMap:
    name: {{ . }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end }}
