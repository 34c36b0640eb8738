"""Bearer-token authentication: a server interceptor, constant-time, tokens never logged.

Callers send ``authorization: Bearer <token>`` metadata (the client class and
``steno client --token-file`` do). The server accepts any of the tokens in its
token file (one per line, so a new token can be added before the old one is
removed). Comparison uses ``hmac.compare_digest`` against every accepted
token, without stopping at the first match, so timing reveals nothing about
which token, or how much of one, matched.

``grpc.health.v1.Health`` is exempt: Kubernetes' gRPC probes send no
metadata, and health says nothing private. Everything else, reflection
included, needs a token. Rejections are UNAUTHENTICATED; neither the token
nor the metadata it came in is ever logged or put in a message.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

AUTHORIZATION_KEY = "authorization"
BEARER_SCHEME = "bearer"
EXEMPT_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)
MISSING_TOKEN = "missing bearer token: send metadata 'authorization: Bearer <token>'"
WRONG_TOKEN = "invalid bearer token"


def load_tokens(path: Path) -> tuple[str, ...]:
    """Tokens from a file: one per line; blank lines and lines starting with # are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ValueError(f"cannot read token file {path}: {error.strerror or error}") from None
    tokens = tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))
    if not tokens:
        raise ValueError(f"token file {path} holds no token")
    for token in tokens:
        if any(char.isspace() for char in token):
            raise ValueError(f"token file {path}: a token contains whitespace")
    return tokens


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The token of an ``authorization: Bearer`` header, or None."""
    for key, value in metadata or ():
        if key.lower() != AUTHORIZATION_KEY or not isinstance(value, str):
            continue
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == BEARER_SCHEME and token.strip():
            return token.strip()
    return None


class TokenSet:
    """The accepted tokens; ``matches`` takes the same time whichever one matches."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if not tokens:
            raise ValueError("at least one token is needed")
        self._tokens = tuple(token.encode("utf-8") for token in tokens)

    def __repr__(self) -> str:  # never print the tokens
        return f"TokenSet({len(self._tokens)} tokens)"

    def matches(self, token: str) -> bool:
        candidate = token.encode("utf-8")
        matched = False
        for expected in self._tokens:
            matched |= hmac.compare_digest(expected, candidate)
        return matched


class BearerTokenInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Rejects calls without an accepted token with UNAUTHENTICATED."""

    def __init__(
        self, tokens: TokenSet, on_reject: Callable[[str], None] | None = None
    ) -> None:
        self._tokens = tokens
        self._on_reject = on_reject  # gets the method name, for metrics

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        if method.startswith(EXEMPT_METHOD_PREFIXES):
            return continuation(handler_call_details)
        token = bearer_token(handler_call_details.invocation_metadata)
        if token is not None and self._tokens.matches(token):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:  # an unknown method stays UNIMPLEMENTED
            return None
        if self._on_reject is not None:
            self._on_reject(method)
        return _denied(handler, MISSING_TOKEN if token is None else WRONG_TOKEN)


def _denied(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that only rejects."""

    def deny(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny, **codecs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny, **codecs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny, **codecs)
    return grpc.unary_unary_rpc_method_handler(deny, **codecs)
