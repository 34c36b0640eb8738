"""Pure builders: the child Job, its names and labels, owner references, object-store keys.

Everything here is a function of the TranscriptionJob's identity, its spec,
its plan and the operator's settings, so a restarted operator builds exactly
the same objects, and the same *names*: the Job's name derives from the
TranscriptionJob's name and UID, so creating it twice is a 409 that the
reconciler answers by adopting the existing Job, never a second Job.

The Job (``batch/v1``, Indexed, one completion per shard):

* pod ``i`` works on shard ``i`` (``$JOB_COMPLETION_INDEX``) of the plan:
  ``steno work --plan URI --progress-host $(POD_IP) --progress-port P``, plus
  ``--int8-cross-kv`` and ``--beam-size N`` when the spec asks for them, then
  the settings' extra arguments;
* ``podFailurePolicy``: the worker's bad-spec exit code fails the whole Job
  (retrying cannot help), a pod disrupted by its node (drain, preemption,
  eviction: the ``DisruptionTarget`` condition) is retried without counting;
* ``backoffLimitPerIndex``: a shard that keeps failing stops alone, the
  others go on (the Job then fails with ``FailedIndexes``);
* ``activeDeadlineSeconds`` from ``spec.deadlineSeconds``,
  ``ttlSecondsAfterFinished`` from the settings, ``suspend`` from the spec;
* pods follow the *restricted* Pod Security Standard: non-root, no privilege
  escalation, every capability dropped, RuntimeDefault seccomp, read-only
  root file system with an ``emptyDir`` at ``/tmp`` for scratch, and no
  service-account token (workers never call the Kubernetes API);
* storage credentials come from the referenced Secret as environment
  variables (``envFrom``), which is what the worker's storage configuration
  reads.

Object-store keys mirror the worker's layout (``steno_inference.jobs.layout``,
which the operator must not import): everything the job writes lives under
``<output>/_steno/``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from steno_api.plan import PLAN_KEY as PLAN_KEY
from steno_api.plan import RESERVED_DIR as RESERVED_DIR

from steno_operator.settings import OperatorSettings, PlacementDefaults
from steno_operator.spec import API_VERSION, KIND, PlacementSpec, TranscriptionJobSpec

# --- object-store layout (steno_inference.jobs.layout) ------------------------
# RESERVED_DIR and PLAN_KEY come from the plan format both sides share (steno_api.plan).

MANIFESTS_DIR = f"{RESERVED_DIR}/manifests"
RESULT_MANIFEST_KEY = f"{RESERVED_DIR}/manifest.json"  # the operator's: the job's commit point
SHARD_DIGITS = 5  # shard-00000 … shard-99999

# --- labels and annotations --------------------------------------------------

LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_JOB_UID = "steno.dev/transcriptionjob-uid"
LABEL_JOB_NAME = "steno.dev/transcriptionjob"
ANNOTATION_PLAN_URI = "steno.dev/plan-uri"
ANNOTATION_PLAN_SHA256 = "steno.dev/plan-sha256"
APP_NAME = "steno"
COMPONENT = "transcription-worker"
MANAGED_BY = "steno-operator"

# --- the worker --------------------------------------------------------------

WORKER_CONTAINER = "worker"
SCRATCH_VOLUME = "scratch"
SCRATCH_PATH = "/tmp"  # the only writable path: the root file system is read-only
# steno_inference.jobs.exitcodes.EXIT_BAD_SPEC: the plan, spec, model or storage
# configuration is wrong; a retry cannot help, so the Job fails at once.
EXIT_BAD_SPEC = 2
# The Kubernetes pod condition set on pods that are disrupted (drained node,
# preemption, eviction by the API): not the shard's fault, retried for free.
DISRUPTION_CONDITION = "DisruptionTarget"
POD_IP_ENV = "POD_IP"
# steno work's flag for spec.int8CrossKV. On a pod without a CUDA device the
# engine refuses it with exit code 2, which the FailJob rule below turns into
# a failed job (WorkerRejectedSpec) instead of retries.
INT8_CROSS_KV_FLAG = "--int8-cross-kv"
# steno work's flag for spec.beamSize, given only above 1 (greedy is the worker's
# default). Beam search runs on the torch backend only: a worker told to use onnx
# (worker.extraArgs) refuses it with exit code 2, a failed job as above.
BEAM_SIZE_FLAG = "--beam-size"
# steno work's flag for spec.deterministic: repeatable decoder attention kernels on
# a GPU (slower); a CPU worker's kernels are repeatable already and ignore it.
DETERMINISTIC_FLAG = "--deterministic"

# --- names -------------------------------------------------------------------

UID_HASH_CHARS = 8
# An Indexed Job's pods get the hostname "<job>-<index>", a DNS label of at most
# 63 characters: 63 - len("-999") leaves 59 for the Job; keep a margin for the
# shard counts MAX_PARALLELISM allows (up to 1000 → "-999").
MAX_JOB_NAME_CHARS = 52
MAX_LABEL_VALUE_CHARS = 63
_NOT_DNS_LABEL = re.compile(r"[^a-z0-9-]+")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


@dataclass(frozen=True)
class JobIdentity:
    """Which TranscriptionJob: what every name and reference derives from."""

    namespace: str
    name: str
    uid: str


@dataclass(frozen=True)
class PlanRef:
    """The plan the Job runs."""

    uri: str
    sha256: str
    shards: int


def child_job_name(identity: JobIdentity) -> str:
    """``<name>-<hash of uid>``, a DNS label short enough for the pods' hostnames.

    The UID makes a TranscriptionJob deleted and recreated under the same
    name get a new Job, not the old one still being garbage-collected.
    """
    digest = hashlib.sha256(identity.uid.encode()).hexdigest()[:UID_HASH_CHARS]
    base = _NOT_DNS_LABEL.sub("-", identity.name.lower())[: MAX_JOB_NAME_CHARS - UID_HASH_CHARS - 1]
    base = base.strip("-") or "tj"
    return f"{base}-{digest}"


def selector_labels(identity: JobIdentity) -> dict[str, str]:
    """The labels that find a job's children (a UID: valid as a label value, never reused)."""
    return {LABEL_JOB_UID: identity.uid}


def label_selector(identity: JobIdentity) -> str:
    return ",".join(f"{key}={value}" for key, value in selector_labels(identity).items())


def child_labels(identity: JobIdentity) -> dict[str, str]:
    labels = {
        LABEL_NAME: APP_NAME,
        LABEL_COMPONENT: COMPONENT,
        LABEL_MANAGED_BY: MANAGED_BY,
        **selector_labels(identity),
    }
    # The name is a convenience for `kubectl get -l`; long names are not valid label values.
    if len(identity.name) <= MAX_LABEL_VALUE_CHARS and _LABEL_VALUE.match(identity.name):
        labels[LABEL_JOB_NAME] = identity.name
    return labels


def owner_reference(identity: JobIdentity) -> dict[str, Any]:
    """The TranscriptionJob as the controlling owner: deleting it deletes the Job and pods."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": identity.name,
        "uid": identity.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def is_owned_by(obj: dict[str, Any], identity: JobIdentity) -> bool:
    """Whether ``obj`` names this TranscriptionJob (by UID) as its controller."""
    for reference in obj.get("metadata", {}).get("ownerReferences") or []:
        if reference.get("uid") == identity.uid and reference.get("controller"):
            return True
    return False


# --- storage keys ------------------------------------------------------------


def _child(prefix: str, relative: str) -> str:
    return prefix + relative if prefix.endswith("/") else f"{prefix}/{relative}"


def normalized_prefix(uri: str) -> str:
    """``s3://bucket/folder`` → ``s3://bucket/folder/``; ``s3://bucket`` → ``s3://bucket/``."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if key and not key.endswith("/"):
        key += "/"
    return f"s3://{bucket}/{key}"


def plan_uri(output: str) -> str:
    return _child(normalized_prefix(output), PLAN_KEY)


def shard_manifest_uri(output: str, shard: int) -> str:
    return _child(normalized_prefix(output), f"{MANIFESTS_DIR}/shard-{shard:0{SHARD_DIGITS}d}.json")


def result_manifest_uri(output: str) -> str:
    return _child(normalized_prefix(output), RESULT_MANIFEST_KEY)


# --- the Job -----------------------------------------------------------------


@dataclass(frozen=True)
class EffectivePlacement:
    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]]
    priority_class_name: str | None
    runtime_class_name: str | None


def effective_placement(job: PlacementSpec, defaults: PlacementDefaults) -> EffectivePlacement:
    """The job's placement where it gives one, the operator's defaults elsewhere."""
    node_selector = job.node_selector if job.node_selector is not None else defaults.node_selector
    tolerations = job.tolerations if job.tolerations is not None else defaults.tolerations
    return EffectivePlacement(
        node_selector=dict(node_selector),
        tolerations=[t.to_kubernetes() for t in tolerations],
        priority_class_name=job.priority_class_name or defaults.priority_class_name,
        runtime_class_name=job.runtime_class_name or defaults.runtime_class_name,
    )


def worker_args(plan: PlanRef, settings: OperatorSettings, spec: TranscriptionJobSpec) -> list[str]:
    """``steno work``'s arguments: the plan and progress server, the job's engine flags,
    then the settings' extra arguments (the chart's ``worker.extraArgs``)."""
    engine_flags = [INT8_CROSS_KV_FLAG] if spec.int8_cross_kv else []
    if spec.beam_size > 1:
        engine_flags += [BEAM_SIZE_FLAG, str(spec.beam_size)]
    if spec.deterministic:
        engine_flags.append(DETERMINISTIC_FLAG)
    return [
        "--plan", plan.uri,
        "--progress-host", f"$({POD_IP_ENV})",
        "--progress-port", str(settings.worker.progress_port),
        *engine_flags,
        *settings.worker.extra_args,
    ]


def build_job(
    identity: JobIdentity,
    spec: TranscriptionJobSpec,
    plan: PlanRef,
    settings: OperatorSettings,
) -> dict[str, Any]:
    """The Indexed Job that runs every shard of ``plan`` (see the module docstring)."""
    worker = settings.worker
    placement = effective_placement(spec.placement, settings.placement)
    labels = child_labels(identity)
    gpus = str(spec.gpus_per_pod)
    # The root file system is read-only: everything that writes goes to scratch
    # (temporary files, caches such as converted models), unless the settings
    # point a variable elsewhere (a model volume, say).
    variables = {"TMPDIR": SCRATCH_PATH, "HOME": SCRATCH_PATH,
                 "STENO_CACHE_DIR": f"{SCRATCH_PATH}/steno-cache"}
    variables.update(dict(worker.extra_env))
    env: list[dict[str, Any]] = [
        {"name": POD_IP_ENV, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        *({"name": name, "value": value} for name, value in sorted(variables.items())),
    ]
    container: dict[str, Any] = {
        "name": WORKER_CONTAINER,
        "image": worker.image,
        "imagePullPolicy": worker.image_pull_policy,
        "command": list(worker.command),
        "args": worker_args(plan, settings, spec),
        "env": env,
        "ports": [{"name": "progress", "containerPort": worker.progress_port,
                   "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": worker.cpu_request, "memory": worker.memory,
                         worker.gpu_resource: gpus},
            "limits": {"memory": worker.memory, worker.gpu_resource: gpus},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": SCRATCH_VOLUME, "mountPath": SCRATCH_PATH}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if spec.storage_secret_name is not None:
        container["envFrom"] = [{"secretRef": {"name": spec.storage_secret_name}}]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": worker.termination_grace_s,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": worker.run_as_user,
            "runAsGroup": worker.run_as_user,
            "fsGroup": worker.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": SCRATCH_VOLUME, "emptyDir": {"sizeLimit": worker.scratch_size}}],
        "tolerations": placement.tolerations,
    }
    if placement.node_selector:
        pod_spec["nodeSelector"] = placement.node_selector
    if placement.priority_class_name:
        pod_spec["priorityClassName"] = placement.priority_class_name
    if placement.runtime_class_name:
        pod_spec["runtimeClassName"] = placement.runtime_class_name
    if worker.service_account_name:
        pod_spec["serviceAccountName"] = worker.service_account_name
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": plan.shards,
        "parallelism": plan.shards,
        "backoffLimitPerIndex": worker.backoff_limit_per_index,
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {"containerName": WORKER_CONTAINER, "operator": "In",
                                    "values": [EXIT_BAD_SPEC]},
                },
                {
                    "action": "Ignore",
                    "onPodConditions": [{"type": DISRUPTION_CONDITION, "status": "True"}],
                },
            ]
        },
        "ttlSecondsAfterFinished": worker.ttl_seconds_after_finished,
        "suspend": spec.suspend,
        "template": {
            "metadata": {"labels": labels},
            "spec": pod_spec,
        },
    }
    if spec.deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": child_job_name(identity),
            "namespace": identity.namespace,
            "labels": labels,
            "annotations": {ANNOTATION_PLAN_URI: plan.uri, ANNOTATION_PLAN_SHA256: plan.sha256},
            "ownerReferences": [owner_reference(identity)],
        },
        "spec": job_spec,
    }
