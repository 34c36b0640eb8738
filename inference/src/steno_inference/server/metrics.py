"""Prometheus metrics of the server, on a registry passed in and an HTTP port of their own.

Nothing lives in module globals: :class:`ServerMetrics` registers its
instruments on the ``CollectorRegistry`` it is given (one per server, so tests
can run several), and :func:`start_metrics_endpoint` serves that registry.

Counted as calls happen:

* ``steno_grpc_calls_total{method, code}``: every finished call by status code,
  including calls refused by authentication or admission;
* ``steno_grpc_call_duration_seconds{method}``: wall time of calls that ended OK;
* ``steno_queue_wait_seconds``: from admission to the call's first decoded window;
* ``steno_audio_processed_seconds_total``: audio seconds decoded for calls;
* ``steno_decoder_batch_windows``: decoder slots busy when a window finished,
  observed once per window (the batch that window shared);
* ``steno_engine_abandoned_total``: stopped calls whose engine run did not
  report in time (see :mod:`~steno_inference.server.pump`).

Read when scraped (:class:`_LiveCollector`): the runner's own counters of
decoder steps and busy rows, encoder batches and windows (so the exact mean
batch sizes over any range are ``rate(..._busy_rows_total) /
rate(..._steps_total)`` and ``rate(..._windows_total) /
rate(..._batches_total)``), the decoder's queue in windows and audio
seconds, busy decoder slots, admission's reservations and limit, calls in
flight, and GPU memory allocated/reserved by torch on CUDA devices.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

import torch
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from steno_inference.runner import RunnerStats
from steno_inference.scheduler import SchedulerStats

# Seconds: short calls finish in tens of milliseconds on a GPU, long ones take minutes.
LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 600)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # decoder slots, up to the 256 cap


@dataclass(frozen=True)
class LiveSources:
    """Callables read at scrape time."""

    scheduler_stats: Callable[[], SchedulerStats]
    runner_stats: Callable[[], RunnerStats]
    reserved_audio_s: Callable[[], float]
    queue_limit_audio_s: float
    in_flight: Callable[[], int]
    device: torch.device


class ServerMetrics:
    """The server's instruments; also the core's ``CallObserver``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._calls = Counter(
            "steno_grpc_calls", "Finished gRPC calls by method and status code.",
            ["method", "code"], registry=registry,
        )
        self._duration = Histogram(
            "steno_grpc_call_duration_seconds", "Wall time of calls that ended OK.",
            ["method"], buckets=LATENCY_BUCKETS_S, registry=registry,
        )
        self._queue_wait = Histogram(
            "steno_queue_wait_seconds", "From admission to a call's first decoded window.",
            buckets=LATENCY_BUCKETS_S, registry=registry,
        )
        self._audio = Counter(
            "steno_audio_processed_seconds", "Audio seconds decoded for calls.",
            registry=registry,
        )
        self._batch = Histogram(
            "steno_decoder_batch_windows",
            "Decoder slots busy when a window finished (the batch it shared).",
            buckets=BATCH_BUCKETS, registry=registry,
        )
        self._abandoned = Counter(
            "steno_engine_abandoned", "Stopped calls whose engine run did not report in time.",
            registry=registry,
        )
        self._busy_slots: Callable[[], int] = lambda: 0

    def watch(self, sources: LiveSources) -> None:
        """Export the live gauges of one engine and admission controller."""
        self._busy_slots = lambda: sources.scheduler_stats().busy_slots
        self.registry.register(_LiveCollector(sources))

    # ------------------------------------------------------ call outcomes

    def call_finished(self, method: str, code: str, seconds: float) -> None:
        self._calls.labels(method, code).inc()
        if code == "OK":
            self._duration.labels(method).observe(seconds)

    # --------------------------------------------------- CallObserver side

    def window_done(self, audio_s: float) -> None:
        self._audio.inc(audio_s)
        self._batch.observe(max(1, self._busy_slots()))

    def queue_wait(self, seconds: float) -> None:
        self._queue_wait.observe(seconds)

    def engine_abandoned(self) -> None:
        self._abandoned.inc()


class _LiveCollector(Collector):
    def __init__(self, sources: LiveSources) -> None:
        self._sources = sources

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        runner = self._sources.runner_stats()
        # Exact batch sizes: rate(rows) / rate(steps) is the mean decoder batch,
        # rate(windows) / rate(batches) the mean encoder batch, over any range.
        yield _counter("steno_decoder_steps", "Decoder steps run.", runner.steps)
        yield _counter(
            "steno_decoder_busy_rows", "Windows stepped, summed over steps.",
            runner.busy_rows_stepped,
        )
        yield _counter("steno_encoder_batches", "Encoder batches run.", runner.encoder_batches)
        yield _counter("steno_encoder_windows", "Windows encoded.", runner.windows_encoded)
        stats = self._sources.scheduler_stats()
        yield _gauge(
            "steno_queue_windows", "Windows waiting for the decoder.", stats.queued_windows
        )
        yield _gauge(
            "steno_queue_audio_seconds", "Audio seconds waiting for the decoder.",
            stats.queued_audio_s,
        )
        yield _gauge("steno_decoder_busy_slots", "Windows being decoded now.", stats.busy_slots)
        yield _gauge(
            "steno_admission_reserved_audio_seconds", "Audio seconds reserved by admitted calls.",
            self._sources.reserved_audio_s(),
        )
        yield _gauge(
            "steno_admission_limit_audio_seconds", "Audio seconds admission lets wait at most.",
            self._sources.queue_limit_audio_s,
        )
        yield _gauge("steno_grpc_calls_in_flight", "Calls running now.", self._sources.in_flight())
        device = self._sources.device
        if device.type == "cuda":
            family = GaugeMetricFamily(
                "steno_gpu_memory_bytes", "GPU memory held by torch.", labels=["kind"]
            )
            family.add_metric(["allocated"], float(torch.cuda.memory_allocated(device)))
            family.add_metric(["reserved"], float(torch.cuda.memory_reserved(device)))
            yield family


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=float(value))


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


class MetricsEndpoint:
    """A running ``/metrics`` HTTP server; ``close()`` stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def start_metrics_endpoint(registry: CollectorRegistry, host: str, port: int) -> MetricsEndpoint:
    """Serve ``registry`` on ``host:port`` (0: any free port; see ``.port``)."""
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsEndpoint(server, thread)
