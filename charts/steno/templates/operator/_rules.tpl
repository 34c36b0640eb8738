{{/* The operator's rules on the namespaced objects of its jobs. */}}
{{- define "steno.operatorRules" -}}
# Kopf lists and watches TranscriptionJobs and runs a reconcile loop for each;
# patch: Kopf adds and removes its finalizer (steno.dev/operator) in metadata.
- apiGroups: ["steno.dev"]
  resources: ["transcriptionjobs"]
  verbs: ["list", "watch", "patch"]
# The reconciler writes phase, conditions, progress and results (merge patches).
- apiGroups: ["steno.dev"]
  resources: ["transcriptionjobs/status"]
  verbs: ["patch"]
# The child Job names its TranscriptionJob as owner with blockOwnerDeletion, which
# the OwnerReferencesPermissionEnforcement admission plugin allows only to those
# who may update the owner's finalizers.
- apiGroups: ["steno.dev"]
  resources: ["transcriptionjobs/finalizers"]
  verbs: ["update"]
# One Indexed Job per TranscriptionJob: created (get adopts one a previous run
# created), watched to wake the job's loop, patched to suspend and resume it.
# Never deleted by the operator: garbage collection follows the owner reference.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The job's pods, listed by label: scheduling state, and pod IPs for WatchProgress.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# The storage Secret a job names (spec.storageSecretRef), read by name to list
# inputs, write the plan and read manifests. get only: never list or watch.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# Events about TranscriptionJobs (accepted, scheduled, succeeded, failed).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}
