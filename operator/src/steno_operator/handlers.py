"""Kopf wiring, kept thin: which events reach which part of the operator.

* One **daemon** per TranscriptionJob runs its reconcile loop
  (:class:`~steno_operator.reconciler.Reconciler`). Kopf starts it for every
  object it finds — at creation and, after an operator restart, for every
  existing job — and stops it when the object is deleted or the operator
  exits. The loop ends by itself once the job is finished, and Kopf then
  removes the finalizer it had added (a daemon needs one, so that a deletion
  waits for the daemon to stop).
* **Event handlers** wake the right loop early: a change of the job's spec
  (``suspend``), or any change of a child Job (found by its owner-UID label).
  Waking is only an optimization — each loop also re-checks on its own timer.
* **Login** uses the same connection as :mod:`~steno_operator.kube`, built
  from explicit settings (see that module on ``$KUBECONFIG``).

Handlers are registered into an explicit registry with the operator's
context passed in: no module-level state, no settings read at import.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from steno_operator import kube
from steno_operator.manifests import LABEL_JOB_UID, LABEL_MANAGED_BY, MANAGED_BY, JobIdentity
from steno_operator.metrics import OperatorMetrics
from steno_operator.reconciler import Reconciler
from steno_operator.spec import GROUP, PLURAL, VERSION

FINALIZER = "steno.dev/operator"
# After the stop flag (deletion, operator exit), the loop is cancelled right
# away (it is safe to cancel anywhere) and given this long to clean up.
DAEMON_CANCELLATION_TIMEOUT_S = 10.0
# Kopf's watch requests: the server ends each after this long (then Kopf
# re-watches), and the client gives up on a silent connection a bit later.
WATCH_SERVER_TIMEOUT_S = 300
WATCH_CLIENT_TIMEOUT_S = 330
CONNECT_TIMEOUT_S = 10
REQUEST_TIMEOUT_S = 60


@dataclass
class Wakeups:
    """The wake-up event of each running job loop, by the job's UID."""

    events: dict[str, asyncio.Event] = field(default_factory=dict)
    generations: dict[str, int] = field(default_factory=dict)

    def register(self, uid: str) -> asyncio.Event:
        return self.events.setdefault(uid, asyncio.Event())

    def unregister(self, uid: str) -> None:
        self.events.pop(uid, None)
        self.generations.pop(uid, None)

    def wake(self, uid: str | None) -> None:
        if uid is not None and uid in self.events:
            self.events[uid].set()

    def wake_on_new_generation(self, uid: str, generation: int) -> None:
        """Wake for spec changes only: status patches (ours) do not bump the generation."""
        if self.generations.get(uid) != generation:
            self.generations[uid] = generation
            self.wake(uid)


@dataclass
class OperatorContext:
    """What the handlers share; built once in ``main``."""

    api: Any  # the kubernetes ApiClient (for login)
    reconciler: Reconciler
    metrics: OperatorMetrics
    wakeups: Wakeups = field(default_factory=Wakeups)


def configure(settings: kopf.OperatorSettings) -> None:
    """Kopf's own settings: our finalizer name, bounded watches and requests."""
    settings.persistence.finalizer = FINALIZER
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT_S
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT_S
    settings.watching.connect_timeout = CONNECT_TIMEOUT_S
    settings.networking.request_timeout = REQUEST_TIMEOUT_S
    # No watching of CRDs and namespaces at run time: the CRD is installed with the
    # chart before the operator starts, and namespaces are given by exact name. This
    # keeps RBAC to the job's own objects (see steno_operator.rbac).
    settings.scanning.disabled = True
    # Kopf logs its own handling; Events are ours (see reconciler), not log lines.
    settings.posting.enabled = False


def register(registry: kopf.OperatorRegistry, context: OperatorContext) -> None:
    """Register every handler into ``registry``."""

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        found = kube.credentials(context.api)
        return kopf.ConnectionInfo(
            server=found.server,
            ca_path=found.ca_path,
            insecure=found.insecure,
            scheme="Bearer" if found.token else None,
            token=found.token,
            certificate_path=found.certificate_path,
            private_key_path=found.private_key_path,
        )

    @kopf.daemon(GROUP, VERSION, PLURAL, registry=registry, id="reconcile",
                 cancellation_timeout=DAEMON_CANCELLATION_TIMEOUT_S)
    async def reconcile(body: kopf.Body, name: str, namespace: str | None, uid: str,
                        stopped: kopf.DaemonStopped, **_: Any) -> None:
        if namespace is None:  # the CRD is namespaced: Kopf always gives one
            raise kopf.PermanentError("a TranscriptionJob without a namespace")
        identity = JobIdentity(namespace=namespace, name=name, uid=uid)
        wake = context.wakeups.register(uid)
        try:
            await context.reconciler.run(identity, lambda: body, wake, lambda: bool(stopped))
        finally:
            context.wakeups.unregister(uid)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="job-event")
    def job_event(event: Mapping[str, Any], body: kopf.Body, uid: str, **_: Any) -> None:
        if event.get("type") == "DELETED":
            context.metrics.forget(uid)
            return
        context.metrics.set_phase(uid, (body.get("status") or {}).get("phase"))
        metadata = body.get("metadata") or {}
        if metadata.get("deletionTimestamp"):
            context.wakeups.wake(uid)
        else:
            context.wakeups.wake_on_new_generation(uid, int(metadata.get("generation") or 0))

    @kopf.on.event("batch", "v1", "jobs", registry=registry, id="child-job-event",
                   labels={LABEL_MANAGED_BY: MANAGED_BY})
    def child_job_event(labels: Mapping[str, str], **_: Any) -> None:
        context.wakeups.wake(labels.get(LABEL_JOB_UID))
