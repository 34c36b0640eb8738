"""Pure builders: names, labels, owner references, storage keys and the Indexed Job."""

from __future__ import annotations

import re

import pytest
from steno_inference.cli import build_parser as steno_parser
from steno_operator import manifests as m
from steno_operator.settings import (
    GPU_TOLERATION,
    OperatorSettings,
    PlacementDefaults,
    WorkerPodSettings,
)
from steno_operator.spec import Toleration, parse_spec

pytestmark = pytest.mark.unit

IDENTITY = m.JobIdentity(namespace="media", name="interviews-2024", uid="6f1a0c1e-3b7d-4c2a-9e55-0f7d3c2b1a90")
PLAN = m.PlanRef("s3://results/out/_steno/plan.json", "ab" * 32, 3)
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _job(settings: OperatorSettings | None = None, **spec_fields: object) -> dict:
    raw = {"input": {"prefix": "s3://audio/in/"}, "output": {"uri": "s3://results/out/"}, "model": "tiny.en",
           "storageSecretRef": {"name": "s3-creds"}, **spec_fields}
    return m.build_job(IDENTITY, parse_spec(raw), PLAN, settings or OperatorSettings())


def _pod(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


def test_job_name_is_deterministic_short_and_a_dns_label() -> None:
    name = m.child_job_name(IDENTITY)
    assert name == m.child_job_name(IDENTITY)
    assert name.startswith("interviews-2024-") and DNS_LABEL.match(name)
    other = m.child_job_name(m.JobIdentity("media", "interviews-2024", "another-uid"))
    assert other != name  # a recreated job of the same name gets a new Job
    long = m.child_job_name(m.JobIdentity("ns", "a.very." + "long-" * 60 + "name", "uid"))
    assert len(long) <= m.MAX_JOB_NAME_CHARS and DNS_LABEL.match(long)
    # The pods' hostnames "<job>-<index>" stay DNS labels for the largest index.
    assert len(f"{long}-999") <= 63


def test_labels_owner_reference_and_selector() -> None:
    labels = m.child_labels(IDENTITY)
    assert labels[m.LABEL_JOB_UID] == IDENTITY.uid and labels[m.LABEL_JOB_NAME] == IDENTITY.name
    assert labels[m.LABEL_MANAGED_BY] == "steno-operator"
    assert m.label_selector(IDENTITY) == f"{m.LABEL_JOB_UID}={IDENTITY.uid}"
    long_name = m.JobIdentity("ns", "x" * 70, "uid")
    assert m.LABEL_JOB_NAME not in m.child_labels(long_name)
    owner = m.owner_reference(IDENTITY)
    assert owner == {"apiVersion": "steno.dev/v1alpha1", "kind": "TranscriptionJob", "name": IDENTITY.name,
                     "uid": IDENTITY.uid, "controller": True, "blockOwnerDeletion": True}
    job = _job()
    assert m.is_owned_by(job, IDENTITY)
    assert not m.is_owned_by(job, m.JobIdentity("media", IDENTITY.name, "someone-else"))


def test_storage_keys_follow_the_worker_layout() -> None:
    assert m.plan_uri("s3://results/out") == "s3://results/out/_steno/plan.json"
    assert m.plan_uri("s3://results") == "s3://results/_steno/plan.json"
    assert m.shard_manifest_uri("s3://results/out/", 7) == "s3://results/out/_steno/manifests/shard-00007.json"
    assert m.result_manifest_uri("s3://results/out/") == "s3://results/out/_steno/manifest.json"


def test_the_job_runs_one_indexed_shard_per_pod() -> None:
    job = _job(parallelism=3, deadlineSeconds=3600)
    spec = job["spec"]
    assert job["metadata"]["name"] == m.child_job_name(IDENTITY)
    assert job["metadata"]["ownerReferences"] == [m.owner_reference(IDENTITY)]
    assert job["metadata"]["annotations"][m.ANNOTATION_PLAN_SHA256] == PLAN.sha256
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    assert spec["activeDeadlineSeconds"] == 3600
    assert spec["ttlSecondsAfterFinished"] == WorkerPodSettings.ttl_seconds_after_finished
    assert spec["backoffLimitPerIndex"] == WorkerPodSettings.backoff_limit_per_index
    assert spec["suspend"] is False
    assert spec["template"]["metadata"]["labels"] == m.child_labels(IDENTITY)
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob", "onExitCodes": {"containerName": "worker", "operator": "In", "values": [2]}}
    assert rules[1] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert "activeDeadlineSeconds" not in _job()["spec"]
    assert _job(suspend=True)["spec"]["suspend"] is True


def test_the_worker_container() -> None:
    settings = OperatorSettings(worker=WorkerPodSettings(
        image="registry.example/steno@sha256:" + "0" * 64, command=("steno", "work"), extra_args=("--device", "cuda"),
        extra_env=(("STENO_CACHE_DIR", "/models"),), progress_port=6000))
    pod = _pod(_job(settings, gpusPerPod=2))
    (container,) = pod["containers"]
    assert container["image"].endswith("0" * 64)
    assert container["command"] == ["steno", "work"]
    assert container["args"] == ["--plan", PLAN.uri, "--progress-host", "$(POD_IP)", "--progress-port", "6000",
                                 "--device", "cuda"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["STENO_CACHE_DIR"]["value"] == "/models"  # the settings win over the scratch default
    assert env["TMPDIR"]["value"] == "/tmp"
    assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert container["ports"] == [{"name": "progress", "containerPort": 6000, "protocol": "TCP"}]
    assert pod["restartPolicy"] == "Never"


def test_int8_cross_kv_reaches_the_worker_command() -> None:
    settings = OperatorSettings(worker=WorkerPodSettings(extra_args=("--dtype", "bf16")))
    (plain,) = _pod(_job(settings))["containers"]
    assert m.INT8_CROSS_KV_FLAG not in plain["args"]
    assert _pod(_job(settings, int8CrossKV=False))["containers"][0]["args"] == plain["args"]
    (int8,) = _pod(_job(settings, int8CrossKV=True))["containers"]
    # The job's flag comes before the settings' extra arguments, which keep the last word.
    assert int8["args"] == ["--plan", PLAN.uri, "--progress-host", "$(POD_IP)", "--progress-port",
                            str(WorkerPodSettings.progress_port), "--int8-cross-kv", "--dtype", "bf16"]
    # steno work's own parser takes it (a flag the worker does not know would exit 2).
    args = steno_parser().parse_args([*int8["command"][1:], *int8["args"]])
    assert args.command == "work" and args.int8_cross_kv is True and args.dtype == "bf16"
    # Exit 2 (no CUDA device) fails the whole Job at once rather than retrying the shard.
    rules = _job(settings, int8CrossKV=True)["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [m.EXIT_BAD_SPEC]


def test_beam_size_reaches_the_worker_command() -> None:
    settings = OperatorSettings(worker=WorkerPodSettings(extra_args=("--dtype", "bf16")))
    (plain,) = _pod(_job(settings))["containers"]
    # Left out or 1 (greedy, the worker's default): no flag.
    assert m.BEAM_SIZE_FLAG not in plain["args"]
    assert _pod(_job(settings, beamSize=1))["containers"][0]["args"] == plain["args"]
    (beams,) = _pod(_job(settings, beamSize=4, int8CrossKV=True))["containers"]
    # Next to the int8 flag, before the settings' extra arguments.
    assert beams["args"] == ["--plan", PLAN.uri, "--progress-host", "$(POD_IP)", "--progress-port",
                             str(WorkerPodSettings.progress_port), "--int8-cross-kv",
                             "--beam-size", "4", "--dtype", "bf16"]
    (only,) = _pod(_job(settings, beamSize=4))["containers"]
    assert only["args"][-4:] == ["--beam-size", "4", "--dtype", "bf16"]
    # steno work's own parser takes it.
    args = steno_parser().parse_args([*beams["command"][1:], *beams["args"]])
    assert args.command == "work" and args.beam_size == 4 and args.int8_cross_kv is True
    with pytest.raises(ValueError, match="beamSize"):
        _job(settings, beamSize=17)


def test_deterministic_reaches_the_worker_command() -> None:
    settings = OperatorSettings(worker=WorkerPodSettings(extra_args=("--dtype", "bf16")))
    (plain,) = _pod(_job(settings))["containers"]
    assert m.DETERMINISTIC_FLAG not in plain["args"]
    assert _pod(_job(settings, deterministic=False))["containers"][0]["args"] == plain["args"]
    (repeatable,) = _pod(_job(settings, deterministic=True, beamSize=2))["containers"]
    # After the other engine flags, before the settings' extra arguments.
    assert repeatable["args"][-5:] == ["--beam-size", "2", "--deterministic", "--dtype", "bf16"]
    args = steno_parser().parse_args([*repeatable["command"][1:], *repeatable["args"]])
    assert args.command == "work" and args.deterministic is True and args.beam_size == 2


def test_pods_meet_the_restricted_pod_security_standard() -> None:
    pod = _pod(_job())
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False
    assert pod["volumes"] == [{"name": "scratch", "emptyDir": {"sizeLimit": WorkerPodSettings.scratch_size}}]
    assert container["volumeMounts"] == [{"name": "scratch", "mountPath": "/tmp"}]
    assert not any("hostPath" in v for v in pod["volumes"])


def test_placement_defaults_and_per_job_overrides() -> None:
    defaults = PlacementDefaults(node_selector=(("nvidia.com/gpu.present", "true"),),
                                 tolerations=(GPU_TOLERATION,), priority_class_name="batch-low",
                                 runtime_class_name="nvidia")
    settings = OperatorSettings(placement=defaults)
    pod = _pod(_job(settings))
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert (pod["priorityClassName"], pod["runtimeClassName"]) == ("batch-low", "nvidia")
    pod = _pod(_job(settings, placement={"nodeSelector": {"pool": "a100"}, "priorityClassName": "urgent",
                                          "tolerations": []}))
    assert pod["nodeSelector"] == {"pool": "a100"}
    assert pod["tolerations"] == []
    assert (pod["priorityClassName"], pod["runtimeClassName"]) == ("urgent", "nvidia")
    bare = _pod(_job(OperatorSettings(placement=PlacementDefaults(tolerations=()))))
    assert "nodeSelector" not in bare and "runtimeClassName" not in bare and "priorityClassName" not in bare


def test_no_secret_means_no_env_from() -> None:
    raw = {"input": {"prefix": "s3://audio/in/"}, "output": {"uri": "s3://results/out/"}}
    job = m.build_job(IDENTITY, parse_spec(raw), PLAN, OperatorSettings())
    assert "envFrom" not in _pod(job)["containers"][0]


def test_toleration_rendering() -> None:
    assert Toleration(key="k", operator="Equal", value="v", effect="NoExecute", toleration_seconds=30).to_kubernetes() == {
        "key": "k", "operator": "Equal", "value": "v", "effect": "NoExecute", "tolerationSeconds": 30}
