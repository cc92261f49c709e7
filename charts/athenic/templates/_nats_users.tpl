{{- /*
Each service's own NATS user on the bundled broker, with only the subjects its work needs
(README: "NATS users and permissions"). A service is added in three places: its name in
`athenic.natsServiceUsers`, its `athenic.natsPermissions.<name>` below, and its password key in
the nats-auth Secret (secrets.yaml generates `<name>-password` for every name listed here).

The JetStream API is reached through subjects: `$JS.API.STREAM.{CREATE,UPDATE,INFO}.<stream>`
provision (every service creates what it uses at start, idempotently), `STREAM.MSG.GET` and
`DIRECT.GET` read a KV key or a stored message (a bucket's keys are listed with `STREAM.INFO`
and read so: shared/kv.py), `CONSUMER.CREATE/INFO/DELETE` make the ephemeral consumers of KV
watches and Object Store reads (with `$JS.FC` flow control), `CONSUMER.MSG.NEXT` and `$JS.ACK` fetch
and acknowledge work. Replies come back on `_INBOX.>`.
*/ -}}

{{- define "athenic.natsServiceUsers" -}}
api orchestrator operator notifier
{{- end }}

{{- define "athenic.natsManage" -}}
- "$JS.API.STREAM.CREATE.{{ . }}"
- "$JS.API.STREAM.UPDATE.{{ . }}"
- "$JS.API.STREAM.INFO.{{ . }}"
{{- end }}

{{- define "athenic.natsRead" -}}
- "$JS.API.STREAM.MSG.GET.{{ . }}"
- "$JS.API.DIRECT.GET.{{ . }}"
- "$JS.API.DIRECT.GET.{{ . }}.>"
{{- end }}

{{- define "athenic.natsWatch" -}}
- "$JS.API.CONSUMER.CREATE.{{ . }}"
- "$JS.API.CONSUMER.CREATE.{{ . }}.>"
- "$JS.API.CONSUMER.INFO.{{ . }}.>"
- "$JS.API.CONSUMER.DELETE.{{ . }}.>"
- "$JS.FC.{{ . }}.>"
{{- end }}

{{- /* The orchestrators' durable consumer of the request stream: made by whichever service starts first. */ -}}
{{- define "athenic.natsRequestConsumer" -}}
- "$JS.API.CONSUMER.CREATE.ATHENIC_REQUESTS.orchestrator"
- "$JS.API.CONSUMER.CREATE.ATHENIC_REQUESTS.orchestrator.>"
- "$JS.API.CONSUMER.DURABLE.CREATE.ATHENIC_REQUESTS.orchestrator"
- "$JS.API.CONSUMER.INFO.ATHENIC_REQUESTS.orchestrator"
{{- end }}

{{- define "athenic.natsAllStreams" -}}
ATHENIC_REQUESTS KV_athenic_responses KV_athenic_conversations KV_athenic_turns KV_athenic_idempotency KV_athenic_policies KV_athenic_leases KV_athenic_sandboxes KV_athenic_kernels KV_athenic_devices KV_athenic_presence KV_athenic_file_index OBJ_athenic_files ATHENIC_NOTIFICATIONS
{{- end }}

{{- /* The notifier's two durable consumers of the notifications stream (made by whichever
service provisions first). */ -}}
{{- define "athenic.natsNotifyConsumers" -}}
{{- range list "notifier-events" "notifier-deliveries" }}
- "$JS.API.CONSUMER.CREATE.ATHENIC_NOTIFICATIONS.{{ . }}"
- "$JS.API.CONSUMER.CREATE.ATHENIC_NOTIFICATIONS.{{ . }}.>"
- "$JS.API.CONSUMER.DURABLE.CREATE.ATHENIC_NOTIFICATIONS.{{ . }}"
- "$JS.API.CONSUMER.INFO.ATHENIC_NOTIFICATIONS.{{ . }}"
{{- end }}
{{- end }}

{{- /* Conversation files: the Object Store bucket (chunks and metadata under $O.athenic_files,
read back through ordered consumers, replaced files purged) and its KV index (listed from its
stream's subjects and read by key: no consumer). */ -}}
{{- define "athenic.natsFiles" -}}
{{ include "athenic.natsRead" "OBJ_athenic_files" }}
{{ include "athenic.natsWatch" "OBJ_athenic_files" }}
- "$JS.API.STREAM.PURGE.OBJ_athenic_files"
- "$O.athenic_files.>"
{{ include "athenic.natsRead" "KV_athenic_file_index" }}
- "$KV.athenic_file_index.>"
{{- end }}

{{- /* api: publishes requests and cancels; reads records, the conversation log and its own
requests; claims conversations and Idempotency-Keys; watches records; hears progress events.
Never: fetches work, writes records, policies or leases. */ -}}
{{- define "athenic.natsPermissions.api" -}}
publish:
  allow:
    - "$JS.API.INFO"
    {{- range splitList " " (include "athenic.natsAllStreams" .) }}
    {{- include "athenic.natsManage" . | nindent 4 }}
    {{- end }}
    {{- include "athenic.natsRequestConsumer" . | nindent 4 }}
    {{- range list "ATHENIC_REQUESTS" "KV_athenic_responses" "KV_athenic_conversations" "KV_athenic_turns" "KV_athenic_idempotency" }}
    {{- include "athenic.natsRead" . | nindent 4 }}
    {{- end }}
    {{- include "athenic.natsWatch" "KV_athenic_responses" | nindent 4 }}
    {{- include "athenic.natsNotifyConsumers" . | nindent 4 }}
    {{- include "athenic.natsFiles" . | nindent 4 }}
    {{- range list "KV_athenic_devices" "KV_athenic_presence" }}
    {{- include "athenic.natsRead" . | nindent 4 }}
    {{- end }}
    - "athenic.requests.*"
    - "athenic.control.cancel.*"
    - "$KV.athenic_conversations.>"
    - "$KV.athenic_idempotency.>"
    - "$KV.athenic_devices.>"
    - "$KV.athenic_presence.>"
subscribe:
  allow:
    - "_INBOX.>"
    - "athenic.events.*"
    - "athenic.records.*"
{{- end }}

{{- /* orchestrator: fetches and acknowledges requests; writes records, turns, conversations and
leases; reads and watches policies; sends progress events; answers cancels. Never: publishes
requests, writes policies. */ -}}
{{- define "athenic.natsPermissions.orchestrator" -}}
publish:
  allow:
    - "$JS.API.INFO"
    {{- range splitList " " (include "athenic.natsAllStreams" .) }}
    {{- include "athenic.natsManage" . | nindent 4 }}
    {{- include "athenic.natsRead" . | nindent 4 }}
    {{- end }}
    {{- include "athenic.natsRequestConsumer" . | nindent 4 }}
    - "$JS.API.CONSUMER.MSG.NEXT.ATHENIC_REQUESTS.orchestrator"
    - "$JS.ACK.ATHENIC_REQUESTS.orchestrator.>"
    {{- range list "KV_athenic_policies" "KV_athenic_leases" "KV_athenic_responses" "KV_athenic_sandboxes" "KV_athenic_kernels" }}
    {{- include "athenic.natsWatch" . | nindent 4 }}
    {{- end }}
    {{- include "athenic.natsNotifyConsumers" . | nindent 4 }}
    {{- include "athenic.natsFiles" . | nindent 4 }}
    - "$KV.athenic_sandboxes.>"
    - "$KV.athenic_kernels.>"
    - "athenic.kernels.>"
    - "athenic.notify.finished.>"
    - "$KV.athenic_responses.>"
    - "$KV.athenic_conversations.>"
    - "$KV.athenic_turns.>"
    - "$KV.athenic_leases.>"
    - "athenic.events.*"
    - "athenic.control.cancel.*"
    - "athenic.control.advanced.*"
subscribe:
  allow:
    - "_INBOX.>"
    - "athenic.control.cancel.*"
    - "athenic.control.advanced.*"
    - "athenic.kernels.>"
# the answers to cancel requests (and to forwarded kernel runs) go to the asker's reply subject
allow_responses: true
{{- end }}

{{- /* operator: provisions, writes and watches the policies; reads the leases (usage in .status).
Never: reads requests or records. */ -}}
{{- define "athenic.natsPermissions.operator" -}}
publish:
  allow:
    - "$JS.API.INFO"
    {{- range list "KV_athenic_policies" "KV_athenic_leases" }}
    {{- include "athenic.natsManage" . | nindent 4 }}
    {{- include "athenic.natsRead" . | nindent 4 }}
    {{- include "athenic.natsWatch" . | nindent 4 }}
    {{- end }}
    - "$KV.athenic_policies.>"
subscribe:
  allow:
    - "_INBOX.>"
{{- end }}

{{- /* notifier: consumes finished turns and the deliveries it fans them out to (publishing
those), reads presence, reads and prunes devices. Never: reads requests, records or files. */ -}}
{{- define "athenic.natsPermissions.notifier" -}}
publish:
  allow:
    - "$JS.API.INFO"
    {{- range splitList " " (include "athenic.natsAllStreams" .) }}
    {{- include "athenic.natsManage" . | nindent 4 }}
    {{- end }}
    {{- include "athenic.natsRequestConsumer" . | nindent 4 }}
    {{- include "athenic.natsNotifyConsumers" . | nindent 4 }}
    - "$JS.API.CONSUMER.MSG.NEXT.ATHENIC_NOTIFICATIONS.notifier-events"
    - "$JS.API.CONSUMER.MSG.NEXT.ATHENIC_NOTIFICATIONS.notifier-deliveries"
    - "$JS.ACK.ATHENIC_NOTIFICATIONS.>"
    - "athenic.notify.deliver.>"
    {{- range list "KV_athenic_devices" "KV_athenic_presence" }}
    {{- include "athenic.natsRead" . | nindent 4 }}
    {{- end }}
    - "$KV.athenic_devices.>"
subscribe:
  allow:
    - "_INBOX.>"
{{- end }}

{{- /* The login a service's pod uses on the bundled broker: its user name, and its password as
a file from the nats-auth Secret (NATS_PASSWORD_FILE; the services read it at connect). */ -}}
{{- define "athenic.natsLogin" -}}
{{- if and (eq .ctx.Values.nats.mode "bundled") .ctx.Values.nats.bundled.auth.enabled }}
- name: NATS_USER
  value: {{ .service | quote }}
- name: NATS_PASSWORD_FILE
  value: /etc/athenic/nats-login/password
{{- end }}
{{- end }}

{{- define "athenic.natsLoginVolume" -}}
{{- if and (eq .ctx.Values.nats.mode "bundled") .ctx.Values.nats.bundled.auth.enabled }}
- name: nats-login
  secret:
    secretName: {{ include "athenic.natsAuthSecretName" .ctx }}
    defaultMode: 0440
    items:
      - key: {{ .service }}-password
        path: password
{{- end }}
{{- end }}

{{- define "athenic.natsLoginMount" -}}
{{- if and (eq .ctx.Values.nats.mode "bundled") .ctx.Values.nats.bundled.auth.enabled }}
- name: nats-login
  mountPath: /etc/athenic/nats-login
  readOnly: true
{{- end }}
{{- end }}
