"""The Kubernetes permissions the operator needs, each with the reason: for the chart's ClusterRole.

This list is the source of truth: the chart's ClusterRole should grant exactly
these rules, and the operator's cluster tests run the operator under a
ServiceAccount bound to a ClusterRole built from :data:`RULES` (not as
cluster admin), so a permission missing here fails those tests.

Nothing in the list writes pods or Secrets: the Job controller creates the
pods, and the operator only reads the storage Secret a job names (the pods get
it through ``envFrom``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str

    def to_kubernetes(self) -> dict[str, Any]:
        return {"apiGroups": list(self.api_groups), "resources": list(self.resources),
                "verbs": list(self.verbs)}


RULES: tuple[Rule, ...] = (
    Rule(("steno.dev",), ("transcriptionjobs",), ("get", "list", "watch", "patch"),
         "Kopf lists and watches TranscriptionJobs and adds/removes its finalizer "
         "(a daemon per job needs one)"),
    Rule(("steno.dev",), ("transcriptionjobs/status",), ("get", "patch", "update"),
         "the reconciler writes phase, conditions, progress and results"),
    Rule(("steno.dev",), ("transcriptionjobs/finalizers",), ("update",),
         "Jobs carry an owner reference with blockOwnerDeletion to their TranscriptionJob "
         "(checked where OwnerReferencesPermissionEnforcement is on)"),
    Rule(("batch",), ("jobs",), ("get", "list", "watch", "create", "patch"),
         "create the Indexed Job, adopt it after a restart, watch it to react at once, "
         "suspend and resume it"),
    Rule(("",), ("pods",), ("get", "list"),
         "unschedulable pods become a condition; running pods' IPs feed WatchProgress"),
    Rule(("",), ("secrets",), ("get",),
         "the job's storage Secret, to list inputs, write the plan and read manifests"),
    Rule(("",), ("events",), ("create", "patch"),
         "Kubernetes Events for milestones and errors"),
    Rule(("apiextensions.k8s.io",), ("customresourcedefinitions",), ("get", "list", "watch"),
         "Kopf's discovery of the TranscriptionJob resource"),
    Rule(("",), ("namespaces",), ("list", "watch"),
         "Kopf follows the namespaces it serves when given some (--namespace, "
         "STENO_NAMESPACES); without this it retries for about a minute before it starts"),
)


def cluster_role(name: str) -> dict[str, Any]:
    """A ClusterRole granting :data:`RULES`."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [rule.to_kubernetes() for rule in RULES],
    }
