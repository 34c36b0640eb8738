"""A small, dependency-free Kubernetes REST client that speaks plain dicts.

The development cluster's own pieces (node registration, the process
kubelet, readiness checks, the harness's tests) need a handful of calls:
get, list, create, patch, delete and watch. Doing them over ``http.client``
keeps this package independent of the ``kubernetes`` Python client, whose
generated API changes shape between major versions, and gives JSON dicts
exactly as the API server sends them (camelCase keys, no model classes).

Each request opens its own HTTPS connection, so one :class:`KubeApi` can be
shared between threads. Authentication is a TLS client certificate (through
the SSL context) or a bearer token.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import Any

JsonObject = dict[str, Any]

# Bound on one ordinary request (the API server answers in milliseconds).
REQUEST_TIMEOUT_S = 30.0
# Extra socket slack on top of a watch's server-side timeoutSeconds.
WATCH_SOCKET_SLACK_S = 10.0

PATCH_CONTENT_TYPES = {
    "strategic": "application/strategic-merge-patch+json",
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
}


class ApiError(RuntimeError):
    """A non-2xx answer; ``status`` is the HTTP code, ``body`` the Status object."""

    def __init__(self, method: str, path: str, status: int, body: JsonObject) -> None:
        self.status = status
        self.body = body
        self.reason = str(body.get("reason", ""))
        super().__init__(f"{method} {path}: {status} {body.get('message', body)}")


class KubeApi:
    """Blocking JSON calls against one API server."""

    def __init__(
        self,
        server: str,
        ssl_context: ssl.SSLContext,
        token: str | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        parsed = urllib.parse.urlsplit(server)
        if parsed.scheme != "https" or parsed.hostname is None:
            raise ValueError(f"expected an https:// server URL, got {server!r}")
        self.server = server
        self._host = parsed.hostname
        self._port = parsed.port or 443
        self._ssl_context = ssl_context
        self._token = token
        self.timeout_s = timeout_s

    def _connection(self, timeout_s: float) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            self._host, self._port, context=self._ssl_context, timeout=timeout_s
        )

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "steno-devcluster"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    @staticmethod
    def _url(path: str, query: Mapping[str, str | int | bool] | None) -> str:
        if not query:
            return path
        encoded = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in query.items()}
        return f"{path}?{urllib.parse.urlencode(encoded)}"

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, str | int | bool] | None = None,
        content_type: str = "application/json",
    ) -> JsonObject:
        """One call; returns the decoded JSON answer, raises :class:`ApiError`."""
        url = self._url(path, query)
        payload = None if body is None else json.dumps(body).encode()
        connection = self._connection(self.timeout_s)
        try:
            connection.request(
                method,
                url,
                body=payload,
                headers=self._headers(content_type if payload is not None else None),
            )
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        try:
            decoded: Any = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            decoded = {"message": raw.decode(errors="replace")}
        if not isinstance(decoded, dict):
            decoded = {"items": decoded}
        if response.status >= 300:
            raise ApiError(method, url, response.status, decoded)
        answer: JsonObject = decoded
        return answer

    def get(self, path: str, **query: str | int | bool) -> JsonObject:
        return self.request("GET", path, query=query)

    def get_or_none(self, path: str) -> JsonObject | None:
        try:
            return self.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, path: str, body: JsonObject) -> JsonObject:
        return self.request("POST", path, body)

    def replace(self, path: str, body: JsonObject) -> JsonObject:
        return self.request("PUT", path, body)

    def patch(self, path: str, body: Any, patch_type: str = "merge") -> JsonObject:
        return self.request("PATCH", path, body, content_type=PATCH_CONTENT_TYPES[patch_type])

    def delete(self, path: str, body: JsonObject | None = None) -> JsonObject:
        return self.request("DELETE", path, body)

    def watch(
        self,
        path: str,
        resource_version: str,
        timeout_s: int,
        on_connect: Callable[[http.client.HTTPSConnection], None] | None = None,
        **query: str | int | bool,
    ) -> Iterator[JsonObject]:
        """Stream watch events (``{"type": ..., "object": ...}``) for up to *timeout_s*.

        The server closes the stream after ``timeoutSeconds``; callers loop,
        passing the last seen resourceVersion, and re-list on a 410 (Gone).
        *on_connect* receives the connection, so another thread can shut its
        socket down to end the watch at once.
        """
        full_query: dict[str, str | int | bool] = {
            **query,
            "watch": True,
            "resourceVersion": resource_version,
            "timeoutSeconds": timeout_s,
            "allowWatchBookmarks": True,
        }
        url = self._url(path, full_query)
        connection = self._connection(timeout_s + WATCH_SOCKET_SLACK_S)
        try:
            connection.connect()
            if on_connect is not None:
                on_connect(connection)
            connection.request("GET", url, headers=self._headers(None))
            response = connection.getresponse()
            if response.status >= 300:
                raw = response.read()
                try:
                    decoded = json.loads(raw)
                except json.JSONDecodeError:
                    decoded = {"message": raw.decode(errors="replace")}
                raise ApiError("WATCH", url, response.status, decoded)
            while True:
                line = response.readline()
                if not line:
                    return
                if line.strip():
                    event: JsonObject = json.loads(line)
                    yield event
        finally:
            connection.close()


def api_path(
    api_version: str, plural: str, namespace: str | None = None, name: str | None = None
) -> str:
    """REST path of a collection or object: ``/api/v1/namespaces/ns/pods/name``."""
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    parts = [prefix]
    if namespace is not None:
        parts.append(f"namespaces/{namespace}")
    parts.append(plural)
    if name is not None:
        parts.append(name)
    return "/".join(parts)
