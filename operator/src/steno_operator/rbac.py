"""The Kubernetes permissions the operator needs, each with the reason: for the chart's ClusterRole.

This list is the source of truth: the chart's ClusterRole should grant exactly
these rules, and the operator's cluster tests run the operator under a
ServiceAccount bound to a ClusterRole built from :data:`RULES` (not as
cluster admin), so a permission missing here fails those tests.

Nothing in the list writes pods or Secrets: the Job controller creates the
pods, and the operator only reads the storage Secret a job names (the pods get
it through ``envFrom``). Kopf needs no more: its run-time scanning of CRDs and
namespaces is turned off (``handlers.configure``), so neither needs a rule,
and API discovery is open to every authenticated user.
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
    Rule(("steno.dev",), ("transcriptionjobs",), ("list", "watch", "patch"),
         "Kopf lists and watches TranscriptionJobs and adds/removes its finalizer "
         "(a daemon per job needs one)"),
    Rule(("steno.dev",), ("transcriptionjobs/status",), ("patch",),
         "the reconciler writes phase, conditions, progress and results (merge patches)"),
    Rule(("steno.dev",), ("transcriptionjobs/finalizers",), ("update",),
         "Jobs carry an owner reference with blockOwnerDeletion to their TranscriptionJob "
         "(checked where OwnerReferencesPermissionEnforcement is on)"),
    Rule(("batch",), ("jobs",), ("get", "list", "watch", "create", "patch"),
         "create the Indexed Job, get it to adopt it after a restart, watch it to react "
         "at once, suspend and resume it (never delete: garbage collection does)"),
    Rule(("",), ("pods",), ("list",),
         "unschedulable pods become a condition; running pods' IPs feed WatchProgress"),
    Rule(("",), ("secrets",), ("get",),
         "the job's storage Secret, by name, to list inputs, write the plan and read "
         "manifests (never list or watch)"),
    Rule(("",), ("events",), ("create",),
         "Kubernetes Events for milestones and errors"),
)


def cluster_role(name: str) -> dict[str, Any]:
    """A ClusterRole granting :data:`RULES`."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [rule.to_kubernetes() for rule in RULES],
    }
