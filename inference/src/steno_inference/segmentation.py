"""Packing speech into Whisper windows of at most 30 s, streamed, with no overlaps.

Whisper reads 30 s at a time. The transformers pipeline cuts audio into 30 s
chunks with 5 s strides on each side, decodes every second of audio up to
twice and stitches the overlaps (where duplicated or dropped words at seams
come from). steno instead cuts at silences found by voice activity:

* Speech regions (padded) are packed in order into a window while it stays
  at most :data:`N_SAMPLES` long.
* A pause between two regions shorter than ``max_kept_gap_s`` stays in the
  window as it is; a longer pause is cut out, so a window never spends its
  30 s (or Whisper's attention) on silence and no text can be placed there.
* Each window keeps a piecewise map from its own time axis to the source's,
  so timestamps come back in source time.

Everything works on a stream: :class:`WindowBuilder` takes PCM blocks and
emits each window as soon as it is complete, holding at most one window's
speech (30 s) plus the last :data:`MAX_BUFFERED_S` of the stream, so memory
does not grow with the length of the file or of its silences.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from steno_inference.audio import SAMPLE_RATE
from steno_inference.vad import RegionTracker, SpeechDetector, SpeechRegion, VadOptions

CHUNK_LENGTH_S = 30  # Whisper's window
N_SAMPLES = CHUNK_LENGTH_S * SAMPLE_RATE  # 480000 samples in a window
MAX_KEPT_GAP_S = 1.0  # pauses up to this long stay in the window; longer ones are cut
# The buffer keeps what a region still to be found could need: a kept gap and
# padding before the speech that starts it. Longer silences are dropped as read.
MAX_BUFFERED_S = CHUNK_LENGTH_S + MAX_KEPT_GAP_S + 2.0
# Whisper places a segment's end a little after the speech, which at a cut can
# land in the next piece: an end (or start) this close across a cut snaps back.
SNAP_ACROSS_CUT_S = 0.6


@dataclass(frozen=True)
class Piece:
    """A run of source samples copied into a window."""

    source_start_sample: int
    window_start_sample: int
    n_samples: int


@dataclass(frozen=True)
class Window:
    """Up to 30 s of speech from one source and the map back to source time."""

    index: int  # position among its source's windows
    pieces: tuple[Piece, ...]
    audio: np.ndarray = field(repr=False)  # float32 mono 16 kHz, at most N_SAMPLES

    @property
    def n_samples(self) -> int:
        return int(self.audio.shape[0])

    @property
    def duration_s(self) -> float:
        return self.n_samples / SAMPLE_RATE

    @property
    def source_start_s(self) -> float:
        return self.pieces[0].source_start_sample / SAMPLE_RATE

    @property
    def source_end_s(self) -> float:
        last = self.pieces[-1]
        return (last.source_start_sample + last.n_samples) / SAMPLE_RATE

    def piece_index(self, window_s: float, *, at_end: bool = False) -> int:
        """The piece holding a window time; a time on a boundary belongs to the
        following piece, or with ``at_end`` to the preceding one."""
        sample = window_s * SAMPLE_RATE
        for index, piece in enumerate(self.pieces):
            limit = piece.window_start_sample + piece.n_samples
            if sample < limit or (at_end and sample == limit):
                return index
        return len(self.pieces) - 1

    def _in_piece(self, window_s: float, index: int) -> float:
        piece = self.pieces[index]
        offset = min(max(0.0, window_s * SAMPLE_RATE - piece.window_start_sample), piece.n_samples)
        return (piece.source_start_sample + offset) / SAMPLE_RATE

    def to_source_span(self, start_s: float, end_s: float) -> tuple[float, float]:
        """Map a span of the window to the source, keeping it off the audio that was cut.

        A span whose end lies just past a cut (within SNAP_ACROSS_CUT_S) ends where
        the piece before the cut ends; a start just before a cut moves to the next
        piece's start.
        """
        first = self.piece_index(start_s)
        last = max(first, self.piece_index(end_s, at_end=True))
        if last > first:
            piece = self.pieces[last]
            if end_s - piece.window_start_sample / SAMPLE_RATE <= SNAP_ACROSS_CUT_S:
                last -= 1
                before = self.pieces[last]
                end_s = (before.window_start_sample + before.n_samples) / SAMPLE_RATE
        if last > first:
            piece = self.pieces[first]
            if (piece.window_start_sample + piece.n_samples) / SAMPLE_RATE - start_s <= (
                SNAP_ACROSS_CUT_S
            ):
                first += 1
                start_s = self.pieces[first].window_start_sample / SAMPLE_RATE
        source_start = self._in_piece(start_s, first)
        return source_start, max(source_start, self._in_piece(end_s, last))

    def to_source_s(self, window_s: float) -> float:
        """Map a time in the window to the source; times in a cut land on the cut's edge."""
        sample = max(0.0, min(window_s * SAMPLE_RATE, float(self.n_samples)))
        for piece in self.pieces:
            if sample <= piece.window_start_sample + piece.n_samples:
                offset = max(0.0, sample - piece.window_start_sample)
                return (piece.source_start_sample + offset) / SAMPLE_RATE
        return self.source_end_s


class PcmBuffer:
    """Samples of a stream addressed by absolute offset, with the old ones dropped."""

    def __init__(self) -> None:
        self._blocks: list[np.ndarray] = []
        self._start = 0  # absolute offset of the first kept sample
        self._end = 0  # absolute offset one past the last sample

    @property
    def end(self) -> int:
        return self._end

    @property
    def start(self) -> int:
        return self._start

    def append(self, pcm: np.ndarray) -> None:
        if pcm.size:
            self._blocks.append(pcm)
            self._end += int(pcm.size)

    def slice(self, start: int, end: int) -> np.ndarray:
        """Copy samples [start, end); the part before the kept range reads as silence."""
        if end <= start:
            return np.zeros(0, dtype=np.float32)
        data = np.concatenate(self._blocks) if len(self._blocks) > 1 else self._joined()
        self._blocks = [data] if data.size else []
        out = np.zeros(end - start, dtype=np.float32)
        lo = max(start, self._start)
        hi = min(end, self._end)
        if hi > lo:
            out[lo - start : hi - start] = data[lo - self._start : hi - self._start]
        return out

    def discard_before(self, offset: int) -> None:
        offset = min(offset, self._end)
        if offset <= self._start:
            return
        data = self._joined()
        self._blocks = [data[offset - self._start :].copy()]
        self._start = offset

    def _joined(self) -> np.ndarray:
        if not self._blocks:
            return np.zeros(0, dtype=np.float32)
        if len(self._blocks) == 1:
            return self._blocks[0]
        return np.concatenate(self._blocks)


class WindowPacker:
    """Greedy, in-order packing of speech regions into windows of at most N_SAMPLES.

    Each span's audio is copied out of the stream buffer when the span is
    added, so the buffer never has to hold the (possibly long) silences of a
    window in progress: with sparse speech a window can take minutes of
    source to fill, and only its 30 s of speech stay in memory.
    """

    def __init__(self, max_kept_gap_s: float = MAX_KEPT_GAP_S) -> None:
        self._max_gap = int(max_kept_gap_s * SAMPLE_RATE)
        self._spans: list[tuple[int, int]] = []  # source [start, end) of each piece
        self._audio: list[list[np.ndarray]] = []  # each piece's samples, in chunks
        self._next_index = 0

    def add(self, region: SpeechRegion, buffer: PcmBuffer) -> Iterator[Window]:
        start, end = region.start_sample, min(region.end_sample, region.start_sample + N_SAMPLES)
        if self._spans:
            last_start, last_end = self._spans[-1]
            keep_gap = start - last_end <= self._max_gap
            grown = self._packed_samples() + (end - (last_end if keep_gap else start))
            if grown > N_SAMPLES:
                yield self._emit()
            elif keep_gap:
                # The pause stays: the piece grows over it, with its real audio.
                self._spans[-1] = (last_start, end)
                self._audio[-1].append(buffer.slice(last_end, end))
                return
        self._spans.append((start, end))
        self._audio.append([buffer.slice(start, end)])

    def finish(self, buffer: PcmBuffer) -> Iterator[Window]:
        del buffer  # every span's audio was copied when it was added
        if self._spans:
            yield self._emit()

    def _packed_samples(self) -> int:
        return sum(end - start for start, end in self._spans)

    def _emit(self) -> Window:
        pieces: list[Piece] = []
        cursor = 0
        for start, end in self._spans:
            pieces.append(Piece(start, cursor, end - start))
            cursor += end - start
        audio = np.concatenate([chunk for chunks in self._audio for chunk in chunks])
        window = Window(self._next_index, tuple(pieces), audio)
        self._next_index += 1
        self._spans = []
        self._audio = []
        return window


def fixed_windows(total_samples: int) -> list[tuple[int, int]]:
    """Back-to-back 30 s spans covering a source, for when voice activity is off."""
    return [(s, min(s + N_SAMPLES, total_samples)) for s in range(0, total_samples, N_SAMPLES)]


class WindowBuilder:
    """PCM blocks in, windows out: voice activity, region tracking and packing, streamed."""

    def __init__(
        self,
        detector: SpeechDetector | None,
        vad_options: VadOptions | None = None,
        max_kept_gap_s: float = MAX_KEPT_GAP_S,
    ) -> None:
        self._detector = detector
        if detector is not None:
            detector.reset()
        self._options = vad_options or VadOptions()
        self._tracker = RegionTracker(self._options)
        self._packer = WindowPacker(max_kept_gap_s)
        self._buffer = PcmBuffer()
        self._keep_s = MAX_BUFFERED_S

    @property
    def samples_read(self) -> int:
        return self._buffer.end

    @property
    def buffered_samples(self) -> int:
        """Samples held for the stream itself (not counting the window in progress)."""
        return self._buffer.end - self._buffer.start

    def feed(self, pcm: np.ndarray) -> list[Window]:
        self._buffer.append(pcm)
        if self._detector is None:
            return self._fixed(final=False)
        windows: list[Window] = []
        for region in self._tracker.feed(float(p) for p in self._detector.probabilities(pcm)):
            windows.extend(self._packer.add(region, self._buffer))
        self._trim()
        return windows

    def finish(self) -> list[Window]:
        if self._detector is None:
            return self._fixed(final=True)
        windows: list[Window] = []
        tail = self._detector.flush()
        for region in self._tracker.feed(float(p) for p in tail):
            windows.extend(self._packer.add(region, self._buffer))
        for region in self._tracker.finish(self._buffer.end):
            windows.extend(self._packer.add(region, self._buffer))
        windows.extend(self._packer.finish(self._buffer))
        return windows

    def _trim(self) -> None:
        # A region still to be reported starts at most a region's length plus its
        # padding and closing silence ago, and a kept pause is shorter than that:
        # older audio can never be asked for again.
        self._buffer.discard_before(self._buffer.end - int(self._keep_s * SAMPLE_RATE))

    def _fixed(self, final: bool) -> list[Window]:
        windows: list[Window] = []
        while self._buffer.end - self._buffer.start >= N_SAMPLES or (
            final and self._buffer.end > self._buffer.start
        ):
            start = self._buffer.start
            end = min(start + N_SAMPLES, self._buffer.end)
            region = SpeechRegion(start, end)
            windows.extend(self._packer.add(region, self._buffer))
            windows.extend(self._packer.finish(self._buffer))
            self._buffer.discard_before(end)
        return windows
