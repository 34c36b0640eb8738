"""Building, starting, warming up and draining the gRPC server around one engine.

:func:`build_server` is the factory every entry point uses: ``steno serve``
(a serving pool), the job worker (``mode="job"`` with the
:class:`~steno_inference.progress.ProgressBoard` it updates) and the tests.
It takes an already loaded :class:`~steno_inference.engine.Engine` and never
closes it: whoever loaded the engine owns it.

Lifecycle of a :class:`StenoServer`:

1. ``start()`` binds the port and starts answering. ``grpc.health.v1``
   reports NOT_SERVING for the server ("") and for
   ``steno_api.v1.TranscriptionService``.
2. ``warm_up()`` runs one window through the engine
   (:mod:`~steno_inference.server.warmup`); ``set_serving()`` flips health to
   SERVING. ``start_serving()`` does all three.
3. ``drain()`` (on SIGTERM): health goes NOT_SERVING for good, new calls get
   UNAVAILABLE, calls in flight get ``grace_s`` to finish; any still running
   then are stopped (their windows dropped; UNAVAILABLE to their clients,
   within :data:`ABORT_WAIT_S`), and the transport shuts down. A pod's
   termination grace period should exceed ``grace_s + ABORT_WAIT_S + 1`` s.

Limits (see docs/grpc.md): a request message may be ``max_audio_bytes`` plus
:data:`ENVELOPE_BYTES`; responses up to :data:`MAX_SEND_MESSAGE_BYTES`; at
most ``max_concurrent_calls`` transcription calls plus
:data:`CONTROL_CALL_HEADROOM` health/info/progress calls at once (gRPC answers
RESOURCE_EXHAUSTED beyond that, before any handler runs).
"""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, Literal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from steno_api.v1 import transcription_pb2 as pb

from steno_inference import __version__
from steno_inference.engine import Engine
from steno_inference.options import OptionsError, TranscribeOptions
from steno_inference.progress import ProgressBoard
from steno_inference.server.admission import AdmissionController, AdmissionLimits
from steno_inference.server.auth import BearerTokenInterceptor, TokenSet
from steno_inference.server.core import TranscriptionCore, UriOpener
from steno_inference.server.limits import (
    CONTROL_CALL_HEADROOM,
    DEFAULT_GRACE_S,
    DEFAULT_LONG_CALL_RESERVE_S,
    DEFAULT_MAX_AUDIO_BYTES,
    DEFAULT_MAX_CONCURRENT_CALLS,
    DEFAULT_MAX_QUEUE_AUDIO_S,
    DEFAULT_PORT,
    ENVELOPE_BYTES,
    MAX_SEND_MESSAGE_BYTES,
)
from steno_inference.server.metrics import (
    LiveSources,
    MetricsEndpoint,
    ServerMetrics,
    start_metrics_endpoint,
)
from steno_inference.server.pump import ENGINE_STOP_GRACE_S
from steno_inference.server.servicer import TranscriptionServicer, add_to_server
from steno_inference.server.tls import TlsFiles, server_credentials
from steno_inference.server.uri import open_with_storage
from steno_inference.server.warmup import warm_up

LOG = logging.getLogger(__name__)

# After the grace period, cut-off calls get this long to drop their windows and
# answer UNAVAILABLE (a stopped call's engine run gets as long: pump.ENGINE_STOP_GRACE_S).
ABORT_WAIT_S = ENGINE_STOP_GRACE_S + 1.0
STOP_GRACE_S = 1.0  # then the transport gets this long to send the last statuses
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TranscriptionService"].full_name
HEALTH_SERVICES = ("", SERVICE_NAME)  # "" is the server as a whole

Mode = Literal["pool", "job"]


@dataclass(frozen=True)
class ServerSettings:
    """How the server listens and what it accepts; fixed for the server's lifetime."""

    host: str = "127.0.0.1"  # "0.0.0.0" or "[::]" in a pod
    port: int = DEFAULT_PORT  # 0: any free port (see StenoServer.port)
    max_audio_bytes: int = DEFAULT_MAX_AUDIO_BYTES  # audio in one Transcribe request
    max_queue_audio_s: float = DEFAULT_MAX_QUEUE_AUDIO_S  # admission's budget
    long_call_reserve_s: float = DEFAULT_LONG_CALL_RESERVE_S  # what a paced call reserves
    grace_s: float = DEFAULT_GRACE_S  # drain: in-flight calls' time to finish
    max_concurrent_calls: int = DEFAULT_MAX_CONCURRENT_CALLS
    tls: TlsFiles | None = None  # TLS; with tls.ca, mutual TLS
    auth_tokens: tuple[str, ...] = field(default=(), repr=False)  # empty: no authentication
    reflection: bool = False  # gRPC server reflection (for grpcurl and friends)
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None  # None: no metrics endpoint; 0: any free port
    mode: Mode = "pool"  # pool: serve until stopped; job: a job pod (progress is watched)

    def validated(self) -> ServerSettings:
        if self.max_audio_bytes < 1:
            raise ValueError(f"max audio bytes must be positive, not {self.max_audio_bytes}")
        if self.grace_s < 0:
            raise ValueError(f"grace must be zero or more seconds, not {self.grace_s}")
        if self.max_concurrent_calls < 1:
            raise ValueError(
                f"max concurrent calls must be at least 1, not {self.max_concurrent_calls}"
            )
        AdmissionLimits(self.max_queue_audio_s, self.long_call_reserve_s).validated()
        return self

    @property
    def max_message_bytes(self) -> int:
        return self.max_audio_bytes + ENVELOPE_BYTES


class StenoServer:
    """One gRPC server on one engine; see the module docstring for its lifecycle."""

    def __init__(
        self,
        engine: Engine,
        settings: ServerSettings,
        *,
        progress: ProgressBoard | None,
        open_uri: UriOpener,
        registry: CollectorRegistry,
    ) -> None:
        self.engine = engine
        self.settings = settings.validated()
        self.registry = registry
        self.metrics = ServerMetrics(registry)
        self.admission = AdmissionController(
            AdmissionLimits(settings.max_queue_audio_s, settings.long_call_reserve_s),
            queue_probe=lambda: engine.stats().queued_audio_s,
        )
        self.core = TranscriptionCore(
            engine, self.admission,
            max_audio_bytes=settings.max_audio_bytes,
            open_uri=open_uri,
            progress=progress,
            observer=self.metrics,
        )
        self.metrics.watch(
            LiveSources(
                scheduler_stats=engine.stats,
                runner_stats=lambda: engine.runner.stats,
                reserved_audio_s=self.admission.reserved_s,
                queue_limit_audio_s=settings.max_queue_audio_s,
                in_flight=self.core.in_flight,
                device=engine.device,
            )
        )
        self.health = health.HealthServicer()
        self._grpc: Any = None
        self._metrics_endpoint: MetricsEndpoint | None = None
        self._stopped = threading.Event()
        self.port = 0
        self.metrics_port: int | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> StenoServer:
        """Bind and start answering (health NOT_SERVING until ``set_serving``)."""
        settings = self.settings
        interceptors = []
        if settings.auth_tokens:
            interceptors.append(
                BearerTokenInterceptor(
                    TokenSet(settings.auth_tokens),
                    on_reject=lambda method: self.metrics.call_finished(
                        _short_method(method), "UNAUTHENTICATED", 0.0
                    ),
                )
            )
        concurrency = settings.max_concurrent_calls + CONTROL_CALL_HEADROOM
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="steno-grpc"),
            interceptors=interceptors,
            maximum_concurrent_rpcs=concurrency,
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", MAX_SEND_MESSAGE_BYTES),
                # Two servers must never share a port by accident (grpc's default allows it).
                ("grpc.so_reuseport", 0),
            ],
        )
        for service in HEALTH_SERVICES:
            self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        add_to_server(TranscriptionServicer(self.core, self._info(), self.metrics), server)
        if settings.reflection:
            from grpc_reflection.v1alpha import reflection

            reflection.enable_server_reflection(
                (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
            )
        address = f"{settings.host}:{settings.port}"
        if settings.tls is not None:
            self.port = server.add_secure_port(address, server_credentials(settings.tls))
        else:
            self.port = server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot listen on {address}")
        server.start()
        self._grpc = server
        if settings.metrics_port is not None:
            self._metrics_endpoint = start_metrics_endpoint(
                self.registry, settings.metrics_host, settings.metrics_port
            )
            self.metrics_port = self._metrics_endpoint.port
        LOG.info("listening on %s:%d (%s mode)", settings.host, self.port, settings.mode)
        return self

    def warm_up(self) -> float:
        seconds = warm_up(self.engine)
        LOG.info("warm-up took %.2f s", seconds)
        return seconds

    def set_serving(self) -> None:
        for service in HEALTH_SERVICES:
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    def start_serving(self) -> StenoServer:
        """Start, warm up, then report SERVING."""
        self.start()
        self.warm_up()
        self.set_serving()
        return self

    def drain(self, grace_s: float | None = None) -> bool:
        """Stop taking calls, let running ones finish, shut down; True if none was cut off."""
        grace = self.settings.grace_s if grace_s is None else grace_s
        self.health.enter_graceful_shutdown()
        self.core.begin_drain()
        finished = self.core.wait_idle(grace)
        if not finished:
            LOG.warning("%d calls still running after %.1f s: stopping them",
                        self.core.in_flight(), grace)
        self.core.abort()  # cut-off calls drop their windows; progress watchers end
        self.core.wait_idle(ABORT_WAIT_S)
        self.stop(STOP_GRACE_S)
        return finished

    def stop(self, grace_s: float = 0.0) -> None:
        """Stop the transport now (no drain); idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.core.abort()
        if self._grpc is not None:
            self._grpc.stop(grace_s).wait()
        if self._metrics_endpoint is not None:
            self._metrics_endpoint.close()

    def wait_stopped(self, timeout_s: float | None = None) -> bool:
        return self._stopped.wait(timeout_s)

    # ---------------------------------------------------------------- info

    def _info(self) -> pb.GetServerInfoResponse:
        engine, settings = self.engine, self.settings
        return pb.GetServerInfoResponse(
            version=__version__,
            models=[
                pb.ModelInfo(
                    name=engine.model_name,
                    multilingual=engine.tokens.is_multilingual,
                    device=str(engine.device),
                    dtype=str(engine.dtype).removeprefix("torch."),
                    batch_size=engine.runner.max_batch,
                )
            ],
            limits=pb.ServerLimits(
                max_audio_bytes=settings.max_audio_bytes,
                max_message_bytes=settings.max_message_bytes,
                max_queue_audio_s=settings.max_queue_audio_s,
                long_call_reserve_s=settings.long_call_reserve_s,
                grace_s=settings.grace_s,
                max_concurrent_calls=settings.max_concurrent_calls,
            ),
            diarization=_diarization_available(engine),
            mode=settings.mode,
            progress=self.core.progress is not None,
        )


def build_server(
    engine: Engine,
    settings: ServerSettings | None = None,
    *,
    progress: ProgressBoard | None = None,
    open_uri: UriOpener | None = None,
    registry: CollectorRegistry | None = None,
) -> StenoServer:
    """A server around ``engine``, not yet started (``start_serving()`` does everything).

    ``progress``: the board a job worker updates (job mode); WatchProgress
    streams it. ``open_uri``: how s3:// URIs are read (default: the storage
    package). ``registry``: where metrics go (default: a fresh one).
    """
    return StenoServer(
        engine,
        settings or ServerSettings(),
        progress=progress,
        open_uri=open_uri or open_with_storage,
        registry=registry or CollectorRegistry(),
    )


def _diarization_available(engine: Engine) -> bool:
    # Asking the engine keeps this true to the build that runs, whatever it supports.
    try:
        engine.check_options(TranscribeOptions(diarize=True))
    except OptionsError:
        return False
    return True


def _short_method(method: str) -> str:
    return method.rsplit("/", 1)[-1]

