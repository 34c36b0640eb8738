"""The one module that calls the Kubernetes API (besides Kopf's own watching).

Thin blocking calls over the ``kubernetes`` client, answering plain JSON dicts
exactly as the API server sends them (camelCase keys, no model classes:
``_preload_content=False`` and ``json.loads``), so the pure builders and the
reconciler speak one shape. The reconciler runs these calls in worker threads
(``asyncio.to_thread``), so Kopf's event loop never blocks on the network.

The client is built from an explicit kubeconfig path or the in-cluster
service account, never from ``$KUBECONFIG`` as read when ``kubernetes`` was
imported: the ``kubernetes`` package fixes its default path at import time,
so a process that sets the variable later (a test, a wrapper) would silently
talk to another cluster. :func:`credentials` hands the same connection to
Kopf's login handler.

Errors become :class:`ApiError` subclasses by what the caller should do:
:class:`NotFoundError`, :class:`AlreadyExistsError` (a create that lost: adopt
the existing object), :class:`TransientApiError` (conflicts, throttling, server
errors, timeouts, connection failures: retry with back-off) and the base
class for the rest (a rejected request: a bug or missing RBAC).

The permissions these calls (and Kopf's) need are listed, each with its
reason, in :mod:`steno_operator.rbac`.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steno_operator.spec import GROUP, PLURAL, VERSION

REQUEST_TIMEOUT_S = (5.0, 30.0)  # (connect, read) for every call
# HTTP statuses worth retrying: a conflict, throttling, server-side trouble.
TRANSIENT_STATUSES = frozenset({409, 429, 500, 502, 503, 504})
EVENT_MESSAGE_CHARS = 1024  # the API server refuses longer Event messages
COMPONENT = "steno-operator"
MERGE_PATCH = "application/merge-patch+json"


class ApiError(RuntimeError):
    """The API server refused a call; ``status`` is the HTTP code (0: no answer)."""

    def __init__(self, action: str, status: int, reason: str, message: str) -> None:
        super().__init__(f"{action}: {status} {reason}: {message}")
        self.status = status
        self.reason = reason


class NotFoundError(ApiError):
    pass


class AlreadyExistsError(ApiError):
    pass


class TransientApiError(ApiError):
    """Worth retrying: conflicts, throttling, server errors, no answer."""


@dataclass(frozen=True)
class Credentials:
    """How to reach the API server, for Kopf's login handler."""

    server: str
    ca_path: str | None
    insecure: bool
    token: str | None
    certificate_path: str | None
    private_key_path: str | None


def api_client(kubeconfig: Path | None) -> Any:
    """A ``kubernetes`` ApiClient for ``kubeconfig``, or in-cluster when None."""
    from kubernetes import client, config

    if kubeconfig is not None:
        return config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    configuration = client.Configuration()
    config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration)


def credentials(api: Any) -> Credentials:
    configuration = api.configuration
    header = (configuration.get_api_key_with_prefix("BearerToken")
              or configuration.get_api_key_with_prefix("authorization") or "")
    token = header.split(" ", 1)[-1] if header else None
    return Credentials(
        server=str(configuration.host),
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


def _translate(error: BaseException, action: str) -> ApiError:
    from kubernetes.client.exceptions import ApiException

    if isinstance(error, ApiException):
        status = int(error.status or 0)
        reason, message = str(error.reason or ""), ""
        try:
            body = json.loads(error.body or "{}")
            reason = str(body.get("reason") or reason)
            message = str(body.get("message") or "")
        except (ValueError, AttributeError):
            message = str(error.body or "")[:200]
        if status == 404:
            return NotFoundError(action, status, reason, message)
        if status == 409 and reason == "AlreadyExists":
            return AlreadyExistsError(action, status, reason, message)
        if status in TRANSIENT_STATUSES:
            return TransientApiError(action, status, reason, message)
        return ApiError(action, status, reason, message)
    # urllib3 connection errors, timeouts, resets: the server did not answer.
    return TransientApiError(action, 0, type(error).__name__, str(error))


def _json(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.data)
    return data


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeClient:
    """Blocking calls; safe to use from several threads."""

    def __init__(self, api: Any) -> None:
        from kubernetes import client

        self._core = client.CoreV1Api(api)
        self._batch = client.BatchV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._instance = f"{socket.gethostname()}-{os.getpid()}"

    def _call(self, action: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, _request_timeout=REQUEST_TIMEOUT_S, **kwargs)
        except Exception as error:  # every failure becomes an ApiError subclass
            raise _translate(error, action) from error

    # --- Jobs ---------------------------------------------------------------------

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _json(self._call(f"get job {namespace}/{name}",
                                    self._batch.read_namespaced_job, name, namespace,
                                    _preload_content=False))
        except NotFoundError:
            return None

    def create_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        namespace = manifest["metadata"]["namespace"]
        return _json(self._call(f"create job {namespace}/{manifest['metadata']['name']}",
                                self._batch.create_namespaced_job, namespace, manifest,
                                _preload_content=False))

    def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return _json(self._call(f"patch job {namespace}/{name}",
                                self._batch.patch_namespaced_job, name, namespace, patch,
                                _content_type=MERGE_PATCH, _preload_content=False))

    # --- pods and secrets -------------------------------------------------------

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        answer = _json(self._call(f"list pods in {namespace}",
                                  self._core.list_namespaced_pod, namespace,
                                  label_selector=label_selector, _preload_content=False))
        items: list[dict[str, Any]] = answer.get("items", [])
        return items

    def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Secret (``data`` still base64), or None when it does not exist."""
        try:
            return _json(self._call(f"get secret {namespace}/{name}",
                                    self._core.read_namespaced_secret, name, namespace,
                                    _preload_content=False))
        except NotFoundError:
            return None

    # --- TranscriptionJobs ------------------------------------------------------

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """JSON merge patch of ``status`` (the status subresource); returns the object."""
        answer: dict[str, Any] = self._call(
            f"patch status of {namespace}/{name}",
            self._custom.patch_namespaced_custom_object_status,
            GROUP, VERSION, namespace, PLURAL, name, {"status": status},
            _content_type=MERGE_PATCH,
        )
        return answer

    # --- Events -----------------------------------------------------------------

    def post_event(self, involved: dict[str, Any], event_type: str, reason: str,
                   message: str) -> None:
        """A core/v1 Event about ``involved`` (apiVersion, kind, namespace, name, uid)."""
        now = now_rfc3339()
        namespace = involved["namespace"]
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{involved['name']}.", "namespace": namespace},
            "involvedObject": involved,
            "type": event_type,
            "reason": reason,
            "message": message[:EVENT_MESSAGE_CHARS],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._call(f"post event {reason} in {namespace}", self._core.create_namespaced_event,
                   namespace, body, _preload_content=False)
