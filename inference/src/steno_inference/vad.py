"""Voice activity: Silero VAD probabilities per 32 ms frame, turned into speech regions.

Silero's weights ship inside the ``silero-vad`` wheel, so this works
offline; :mod:`steno_inference.silero_net` runs them a block of frames at a
time. The network carries state from frame to frame, so frames of one source
are fed in order; :class:`SpeechDetector` keeps that state and accepts PCM in
blocks of any size, which lets the engine run voice activity while it streams
a long file through the decoder without ever holding the whole file.

:func:`speech_regions` is the pure part: frame probabilities in, speech
regions out, with hysteresis (a region starts at ``threshold`` and ends only
after ``min_silence_duration_ms`` below ``threshold - 0.15``), a minimum
speech length and padding, as Silero's own ``get_speech_timestamps`` does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from steno_inference.audio import SAMPLE_RATE
from steno_inference.silero_net import FRAME_SAMPLES, SileroNet, SileroState

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE  # 0.032 s
NEGATIVE_THRESHOLD_MARGIN = 0.15  # hysteresis: a region ends below threshold - margin


@dataclass(frozen=True)
class VadOptions:
    """How speech is found. Defaults follow faster-whisper's VAD filter, tuned for packing."""

    threshold: float = 0.5  # speech probability that starts a region
    min_speech_duration_ms: int = 250  # shorter bursts are dropped as clicks or noise
    min_silence_duration_ms: int = 500  # a region ends only after this much silence
    speech_pad_ms: int = 200  # kept on each side of a region so word edges are not clipped


@dataclass(frozen=True)
class SpeechRegion:
    """Speech between two sample offsets of the source (padding included)."""

    start_sample: int
    end_sample: int

    @property
    def start_s(self) -> float:
        return self.start_sample / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.end_sample / SAMPLE_RATE


def silero_model_path() -> Path:
    """The TorchScript weights inside the installed ``silero-vad`` wheel."""
    try:
        path = Path(str(resources.files("silero_vad.data") / "silero_vad.jit"))
    except ModuleNotFoundError as error:
        raise RuntimeError(
            "voice activity needs the silero-vad package: pip install 'steno[inference]'"
        ) from error
    if not path.is_file():
        raise RuntimeError(f"silero-vad is installed but its weights are missing at {path}")
    return path


class SpeechDetector:
    """Streams one source's PCM through Silero VAD: one speech probability per frame."""

    def __init__(self, net: SileroNet) -> None:
        self.net = net
        self._state = SileroState.initial()
        self._pending = np.zeros(0, dtype=np.float32)

    @staticmethod
    def load_model() -> SileroNet:
        """Silero's network; stateless, so every detector and thread may share one."""
        return SileroNet.from_torchscript(silero_model_path())

    @classmethod
    def load(cls) -> SpeechDetector:
        return cls(cls.load_model())

    def reset(self) -> None:
        """Forget the previous source: its state must not bleed into the next one."""
        self._pending = np.zeros(0, dtype=np.float32)
        self._state = SileroState.initial()

    def probabilities(self, pcm: np.ndarray) -> np.ndarray:
        """Probabilities of the whole frames completed by ``pcm`` (a partial frame waits)."""
        data = np.concatenate([self._pending, pcm]) if self._pending.size else pcm
        n_frames = data.size // FRAME_SAMPLES
        self._pending = data[n_frames * FRAME_SAMPLES :].astype(np.float32, copy=True)
        if n_frames == 0:
            return np.zeros(0, dtype=np.float32)
        frames = torch.from_numpy(
            np.ascontiguousarray(data[: n_frames * FRAME_SAMPLES], dtype=np.float32)
        )
        probabilities, self._state = self.net(frames, self._state)
        result: np.ndarray = probabilities.numpy()
        return result

    def flush(self) -> np.ndarray:
        """The probability of a final partial frame, zero-padded; empty if none is pending."""
        if self._pending.size == 0:
            return np.zeros(0, dtype=np.float32)
        frame = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        frame[: self._pending.size] = self._pending
        self._pending = np.zeros(0, dtype=np.float32)
        return self.probabilities(frame)


class RegionTracker:
    """Incremental :func:`speech_regions`: feed probabilities, get regions once they are final.

    A region is final when ``min_silence_duration_ms`` of silence followed it
    (or the stream ended), so its padded end is known; the caller may then
    drop audio before it.
    """

    def __init__(
        self,
        options: VadOptions,
        total_samples: int | None = None,
        max_region_s: float = 29.0,
    ) -> None:
        self._options = options
        # A region never grows past this: it is split at its quietest frame so
        # that every region fits one Whisper window with its padding.
        self._max_region_frames = max(2, int(max_region_s / FRAME_S))
        self._region_probs: list[float] = []
        self._frame_index = 0
        self._in_speech = False
        self._start_frame = 0
        self._silence_start: int | None = None
        self._pad_frames = int(options.speech_pad_ms / 1000 / FRAME_S)
        self._min_silence_frames = max(1, round(options.min_silence_duration_ms / 1000 / FRAME_S))
        self._min_speech_frames = max(1, round(options.min_speech_duration_ms / 1000 / FRAME_S))
        self._last_end_sample = 0
        self._total_samples = total_samples

    def feed(self, probs: Iterable[float]) -> Iterator[SpeechRegion]:
        negative = self._options.threshold - NEGATIVE_THRESHOLD_MARGIN
        for prob in probs:
            index = self._frame_index
            self._frame_index += 1
            if self._in_speech:
                self._region_probs.append(prob)
                if len(self._region_probs) >= self._max_region_frames:
                    yield from self._split_long_region()
            if prob >= self._options.threshold:
                self._silence_start = None
                if not self._in_speech:
                    self._in_speech = True
                    self._start_frame = index
                    self._region_probs = [prob]
                continue
            if not self._in_speech or prob >= negative:
                continue
            if self._silence_start is None:
                self._silence_start = index
            if index + 1 - self._silence_start >= self._min_silence_frames:
                region = self._close(self._silence_start)
                if region is not None:
                    yield region

    def _split_long_region(self) -> Iterator[SpeechRegion]:
        """Cut an over-long region at its quietest frame in the second half; speech goes on."""
        half = len(self._region_probs) // 2
        split_offset = half + int(np.argmin(np.asarray(self._region_probs[half:])))
        split_frame = self._start_frame + split_offset
        start = max(0, (self._start_frame - self._pad_frames) * FRAME_SAMPLES)
        start = max(start, self._last_end_sample)
        end = split_frame * FRAME_SAMPLES
        if end > start:
            self._last_end_sample = end
            yield SpeechRegion(start, end)
        self._start_frame = split_frame
        self._region_probs = self._region_probs[split_offset:]
        # The continuation starts exactly at the cut: no padding back into the previous region.

    def finish(self, total_samples: int) -> Iterator[SpeechRegion]:
        """Close a region still open at the end of the stream."""
        self._total_samples = total_samples
        if self._in_speech:
            end = self._silence_start if self._silence_start is not None else self._frame_index
            region = self._close(end)
            if region is not None:
                yield region

    def _close(self, end_frame: int) -> SpeechRegion | None:
        self._in_speech = False
        self._silence_start = None
        if end_frame - self._start_frame < self._min_speech_frames:
            return None
        pad_samples = self._pad_frames * FRAME_SAMPLES
        start = max(0, (self._start_frame - self._pad_frames) * FRAME_SAMPLES)
        if start <= pad_samples and self._last_end_sample == 0:
            start = 0  # speech right at the start: keep the source's own first samples
        start = max(start, self._last_end_sample)  # never overlap the previous region
        end = (end_frame + self._pad_frames) * FRAME_SAMPLES
        self._region_probs = []
        if self._total_samples is not None:
            if self._total_samples - end <= pad_samples:
                end = self._total_samples  # likewise at the end
            end = min(end, self._total_samples)
        if end <= start:
            return None
        self._last_end_sample = end
        return SpeechRegion(start, end)


def speech_regions(
    probs: np.ndarray, options: VadOptions, total_samples: int
) -> list[SpeechRegion]:
    """All speech regions of a source from its frame probabilities."""
    tracker = RegionTracker(options, total_samples)
    regions = list(tracker.feed(float(p) for p in probs))
    regions.extend(tracker.finish(total_samples))
    return regions
