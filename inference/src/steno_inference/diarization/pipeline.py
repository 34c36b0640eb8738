"""The offline diarization pipeline: speech activity → speaker embeddings → clustering → turns.

1. **Speech activity** (``segmentation``): segmentation-3.0 over 10 s chunks
   every ~2.5 s, batched on the device, overlap-added into one speech
   probability per 16.875 ms frame; thresholded into speech runs.
2. **Embeddings** (``fbank``, ``embeddings``): the recording's Kaldi fbank is
   computed once on the device; CAM++ embeds 1.5 s windows every 0.75 s inside
   each speech run (never across a pause), batched by window length.
3. **Clustering** (``clustering``): average linkage on cosine distance, the
   speaker count from the threshold or the caller's num/min/max, small clusters
   folded into their nearest speaker.
4. **Turns** (``windows``): each speech frame takes the speaker whose windows
   cover it most; runs of one speaker become :class:`SpeakerTurn` s.

Why not pyannote's own speaker-diarization recipe end to end: with these
weights it reached 29 % DER on this project's real two-speaker recording,
because segmentation-3.0 merged the two voices inside its 10 s chunks and the
per-chunk embeddings then described a mixture. Window embeddings inside speech
runs do not depend on the local speaker split. Overlapped speech gets one
speaker per frame (the dominant one).

Device use: one host-to-device copy of the audio; everything up to the
embeddings stays on the device; only speech probabilities (~1 kB/s) and
embeddings (768 B per window) come back. On CUDA the work is queued on a
stream of its own, so it overlaps with transcription running in another
thread on the default stream. A :class:`Diarizer` holds its models and serves
one call at a time (a lock serialises callers).

Memory for one hour of audio: the audio on the device (230 MB as float32) plus
its fbank (115 MB); segmentation and embedding batches add a bounded amount
that does not grow with the length (2 to 4 GB at the CUDA batch sizes);
on the host, the dendrogram (32 MB at most) and the frame votes (~6 MB per
speaker per hour).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch

from steno_inference.diarization import clustering, windows
from steno_inference.diarization.embeddings import CamPlusPlus, embed_frame_spans
from steno_inference.diarization.fbank import (
    FRAME_LENGTH_SAMPLES,
    FRAME_SHIFT_SAMPLES,
    FRAMES_PER_S,
    KaldiFbank,
)
from steno_inference.diarization.options import DiarizationOptions
from steno_inference.diarization.segmentation import (
    DEFAULT_CHUNK_STEP_FRAMES,
    SAMPLE_RATE,
    SegmentationNet,
    SpeechActivity,
)
from steno_inference.diarization.turns import SpeakerTurn, speaker_label
from steno_inference.diarization.weights import (
    load_embedding_state,
    load_segmentation_state,
    locate_weights,
)

LOG = logging.getLogger(__name__)

MIN_AUDIO_S = 0.1  # shorter audio cannot hold a speaker turn worth reporting
# Batch sizes: chunks of 10 s and windows of 1.5 s per forward pass.
CPU_SEGMENTATION_BATCH = 8
CUDA_SEGMENTATION_BATCH = 256  # ~2 GB of SincNet activations in fp16
CPU_EMBEDDING_BATCH = 32
CUDA_EMBEDDING_BATCH = 512  # ~2 GB of CAM++ activations in fp16
# Windows shorter than the standard one are cut down to a multiple of this many fbank
# frames (at most 90 ms lost), so short windows fall into a few equal-length batches.
LENGTH_BUCKET_FRAMES = 10
MIN_WINDOW_FRAMES = 20  # 0.2 s: CAM++'s strided layers need some frames to pool over


@dataclass(frozen=True)
class PipelineConfig:
    """Tuning of the offline pipeline; the defaults were set on flite and LibriVox speech."""

    chunk_step_frames: int = DEFAULT_CHUNK_STEP_FRAMES  # segmentation chunk hop (frames)
    speech_threshold: float = 0.5  # speech probability above which a frame is speech
    min_speech_s: float = 0.1  # shorter speech bursts are dropped
    min_silence_s: float = 0.1  # shorter pauses are bridged
    window_s: float = 1.5  # embedding window length
    window_step_s: float = 0.75  # hop between embedding windows inside a speech run
    min_window_s: float = 0.5  # short runs are embedded with at least this much audio
    cluster_threshold: float = clustering.DEFAULT_THRESHOLD  # cosine distance between voices
    min_cluster_size: int = clustering.MIN_CLUSTER_SIZE  # windows a speaker needs
    max_linkage_points: int = clustering.MAX_LINKAGE_POINTS  # dendrogram size bound
    segmentation_batch: int | None = None  # None: by device
    embedding_batch: int | None = None  # None: by device
    half_precision: bool | None = None  # fp16 autocast; None: on CUDA only


@dataclass
class StageTimes:
    """Wall-clock seconds of each stage of the last call (for the benchmark)."""

    speech_s: float = 0.0
    fbank_s: float = 0.0
    embeddings_s: float = 0.0
    clustering_s: float = 0.0
    windows: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        return self.speech_s + self.fbank_s + self.embeddings_s + self.clustering_s


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


class Diarizer:
    """The offline pipeline with its two models loaded on one device."""

    def __init__(
        self,
        segmentation: SegmentationNet,
        embedding: CamPlusPlus,
        device: torch.device,
        config: PipelineConfig | None = None,
    ) -> None:
        self.device = device
        self.config = config or PipelineConfig()
        on_cuda = device.type == "cuda"
        half = self.config.half_precision
        self.half_precision = on_cuda if half is None else half
        self._segmentation_batch = self.config.segmentation_batch or (
            CUDA_SEGMENTATION_BATCH if on_cuda else CPU_SEGMENTATION_BATCH
        )
        self._embedding_batch = self.config.embedding_batch or (
            CUDA_EMBEDDING_BATCH if on_cuda else CPU_EMBEDDING_BATCH
        )
        self._embedding = embedding
        self._fbank = KaldiFbank(device)
        self._activity = SpeechActivity(
            segmentation,
            device,
            batch_size=self._segmentation_batch,
            chunk_step_frames=self.config.chunk_step_frames,
            half_precision=self.half_precision,
        )
        self._stream: torch.cuda.Stream | None = None
        if on_cuda:
            self._stream = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
        self._lock = threading.Lock()
        self.last_times = StageTimes()

    @classmethod
    def load(
        cls,
        device: torch.device | str | None = None,
        *,
        weights_dir: str | os.PathLike[str] | None = None,
        config: PipelineConfig | None = None,
    ) -> Diarizer:
        """Both models from the packaged weights (or ``weights_dir``) on ``device``."""
        target = default_device() if device is None else torch.device(device)
        paths = locate_weights(weights_dir)
        segmentation = SegmentationNet.from_state_dict(
            load_segmentation_state(paths.segmentation), target
        )
        embedding = CamPlusPlus.from_state_dict(load_embedding_state(paths.embedding), target)
        return cls(segmentation, embedding, target, config)

    def __call__(
        self, audio: npt.NDArray[np.float32], options: DiarizationOptions | None = None
    ) -> list[SpeakerTurn]:
        """Speaker turns of 16 kHz mono ``audio``, sorted by time; [] when nobody speaks."""
        chosen = (options or DiarizationOptions()).validated()
        if chosen.hub_pipeline is not None:
            raise ValueError(
                "a hub pipeline id is served by diarize(), not by the offline Diarizer"
            )
        samples = np.asarray(audio, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"expected mono audio of shape (samples,), not {samples.shape}")
        self.last_times = StageTimes()
        if samples.size < MIN_AUDIO_S * SAMPLE_RATE:
            return []
        with self._lock, self._on_own_stream():
            return self._diarize(samples, chosen)

    @contextmanager
    def _on_own_stream(self) -> Iterator[None]:
        if self._stream is None:
            yield
            return
        # Work queued on the default stream before the call (the caller's copies) comes first.
        self._stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._stream):
            yield
        self._stream.synchronize()

    def _timed(self, name: str) -> Callable[[float], None]:
        def done(started: float) -> None:
            if self.device.type == "cuda":
                torch.cuda.current_stream(self.device).synchronize()
            setattr(self.last_times, name, time.perf_counter() - started)

        return done

    def _diarize(
        self, samples: npt.NDArray[np.float32], options: DiarizationOptions
    ) -> list[SpeakerTurn]:
        cfg = self.config
        duration_s = samples.size / SAMPLE_RATE
        host = torch.from_numpy(samples if samples.flags.writeable else samples.copy())
        wave = host.to(self.device, non_blocking=False)

        started = time.perf_counter()
        probabilities = self._activity(wave).cpu().numpy()
        self._timed("speech_s")(started)
        frame_s = windows.FRAME_S
        runs = windows.speech_runs(
            probabilities,
            threshold=cfg.speech_threshold,
            min_speech_frames=max(1, round(cfg.min_speech_s / frame_s)),
            min_silence_frames=max(1, round(cfg.min_silence_s / frame_s)),
        )
        runs_s = [windows.run_bounds_s(run, duration_s) for run in runs]
        plan = windows.plan_windows(
            runs_s,
            window_s=cfg.window_s,
            step_s=cfg.window_step_s,
            min_window_s=cfg.min_window_s,
            duration_s=duration_s,
        )
        if not plan:
            return []

        started = time.perf_counter()
        features = self._fbank(wave)
        del wave
        self._timed("fbank_s")(started)
        spans = _frame_spans(plan, features.shape[0], cfg.window_s)

        started = time.perf_counter()
        embeddings = (
            embed_frame_spans(
                self._embedding,
                features,
                spans,
                batch_size=self._embedding_batch,
                half_precision=self.half_precision,
            )
            .cpu()
            .numpy()
        )
        del features
        self._timed("embeddings_s")(started)
        self.last_times.windows = len(plan)

        started = time.perf_counter()
        labels = clustering.cluster_embeddings(
            embeddings,
            options.speaker_count(),
            threshold=cfg.cluster_threshold,
            min_cluster_size=cfg.min_cluster_size,
            max_linkage_points=cfg.max_linkage_points,
        )
        speakers = int(labels.max()) + 1 if labels.size else 0
        frames = windows.frame_speakers(probabilities.size, runs, plan, labels, speakers)
        intervals = windows.runs_to_turns(frames, duration_s)
        self.last_times.clustering_s = time.perf_counter() - started
        return _named_turns(intervals)


def _frame_spans(
    plan: list[windows.Window], total_frames: int, window_s: float
) -> list[tuple[int, int]]:
    """``(first fbank frame, frame count)`` of each window, inside the recording."""
    standard = _frames_in(window_s)
    spans: list[tuple[int, int]] = []
    for window in plan:
        count = _frames_in(window.end_s - window.start_s)
        if count < standard:
            count = max(MIN_WINDOW_FRAMES, count - count % LENGTH_BUCKET_FRAMES)
        count = min(count, total_frames)
        first = min(max(0, round(window.start_s * FRAMES_PER_S)), total_frames - count)
        spans.append((first, count))
    return spans


def _frames_in(duration_s: float) -> int:
    """Whole Kaldi frames in ``duration_s`` of audio."""
    samples = round(duration_s * SAMPLE_RATE)
    return max(1, 1 + (samples - FRAME_LENGTH_SAMPLES) // FRAME_SHIFT_SAMPLES)


def _named_turns(intervals: list[tuple[float, float, int]]) -> list[SpeakerTurn]:
    """Turns labelled ``SPEAKER_00..`` in order of first appearance."""
    names: dict[int, str] = {}
    turns: list[SpeakerTurn] = []
    for start_s, end_s, index in sorted(intervals):
        name = names.setdefault(index, speaker_label(len(names)))
        turns.append(SpeakerTurn(round(start_s, 3), round(end_s, 3), name))
    return turns
