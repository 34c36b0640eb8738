"""Pure frame bookkeeping: speech runs, embedding windows inside them, votes back to frames.

All on the segmentation model's global frame grid (``segmentation.FRAME_STEP_SAMPLES``,
16.875 ms), in numpy.

* :func:`speech_runs` thresholds speech probabilities, fills short gaps and drops
  short bursts.
* :func:`plan_windows` lays embedding windows inside each run, never across a
  silence: a window spanning a pause between two people would embed both.
  A run longer than one window gets windows every ``step_s`` with the last one
  flush with the run's end; a shorter run gets a single window, widened
  symmetrically to ``min_window_s`` where the audio allows, because CAM++ needs
  some context to say anything about a voice.
* :func:`frame_speakers` gives each speech frame the speaker whose windows
  cover it with the most weight; a window's weight is triangular (largest at
  its centre), so where two windows of different speakers overlap, the one
  centred nearer the frame wins.
* :func:`runs_to_turns` reads the labelled frames back as time intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from steno_inference.diarization.segmentation import (
    FRAME_CENTER_OFFSET_SAMPLES,
    FRAME_STEP_SAMPLES,
    SAMPLE_RATE,
)

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
FRAME_S = FRAME_STEP_SAMPLES / SAMPLE_RATE  # 0.016875 s
NO_SPEAKER = -1


@dataclass(frozen=True)
class Window:
    """A stretch of audio to embed, in seconds."""

    start_s: float
    end_s: float


def frame_start_s(frame: int) -> float:
    """Where a frame's 16.875 ms slot begins (its receptive-field centre minus half a step)."""
    return (frame * FRAME_STEP_SAMPLES + FRAME_CENTER_OFFSET_SAMPLES) / SAMPLE_RATE - FRAME_S / 2


def frame_of_time(seconds: float) -> int:
    """The frame whose slot contains ``seconds`` (may be negative or past the end)."""
    return int(np.floor((seconds - frame_start_s(0)) / FRAME_S))


def _runs(mask: BoolArray) -> list[tuple[int, int]]:
    """Half-open ``[start, end)`` index runs where ``mask`` is true."""
    if mask.size == 0:
        return []
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def speech_runs(
    probabilities: npt.ArrayLike,
    *,
    threshold: float,
    min_speech_frames: int,
    min_silence_frames: int,
) -> list[tuple[int, int]]:
    """Frame runs of speech: above ``threshold``, gaps shorter than ``min_silence_frames``
    filled, runs shorter than ``min_speech_frames`` dropped."""
    speech = np.asarray(probabilities, dtype=np.float64) > threshold
    runs = _runs(speech)
    filled: list[tuple[int, int]] = []
    for start, end in runs:
        if filled and start - filled[-1][1] < min_silence_frames:
            filled[-1] = (filled[-1][0], end)
        else:
            filled.append((start, end))
    return [(start, end) for start, end in filled if end - start >= min_speech_frames]


def run_bounds_s(run: tuple[int, int], duration_s: float) -> tuple[float, float]:
    """A frame run as seconds, clipped to the audio."""
    start = max(0.0, frame_start_s(run[0]))
    end = min(duration_s, frame_start_s(run[1]))
    return start, max(start, end)


def plan_windows(
    runs_s: list[tuple[float, float]],
    *,
    window_s: float,
    step_s: float,
    min_window_s: float,
    duration_s: float,
) -> list[Window]:
    """Embedding windows inside each speech run (see the module docstring)."""
    windows: list[Window] = []
    for start, end in runs_s:
        length = end - start
        if length <= window_s:
            if length < min_window_s:
                centre = (start + end) / 2
                start = max(0.0, min(centre - min_window_s / 2, duration_s - min_window_s))
                end = min(duration_s, start + min_window_s)
            windows.append(Window(start, end))
            continue
        count = int(np.ceil((length - window_s) / step_s)) + 1
        for index in range(count):
            first = min(start + index * step_s, end - window_s)
            windows.append(Window(first, first + window_s))
    return windows


def frame_speakers(
    num_frames: int,
    speech: list[tuple[int, int]],
    windows: list[Window],
    labels: IntArray,
    num_speakers: int,
) -> IntArray:
    """Speaker index of every frame (``NO_SPEAKER`` outside speech)."""
    votes = np.zeros((max(num_speakers, 1), num_frames), dtype=np.float64)
    for window, label in zip(windows, labels, strict=True):
        first = max(0, frame_of_time(window.start_s))
        last = min(num_frames, frame_of_time(window.end_s) + 1)
        if last <= first:
            continue
        position = np.linspace(-1.0, 1.0, last - first)
        votes[int(label), first:last] += 1.0 - 0.9 * np.abs(position)  # never zero at edges
    result = np.full(num_frames, NO_SPEAKER, dtype=np.int64)
    for start, end in speech:
        span = votes[:, start:end]
        chosen = span.argmax(axis=0)
        uncovered = span.max(axis=0) <= 0.0
        if uncovered.any():  # only when a run had no window: take the nearest covered frame
            covered = np.flatnonzero(~uncovered)
            if covered.size == 0:
                continue
            nearest = covered[
                np.abs(np.arange(end - start)[:, None] - covered[None, :]).argmin(axis=1)
            ]
            chosen = chosen[nearest]
        result[start:end] = chosen
    return result


def runs_to_turns(speakers: IntArray, duration_s: float) -> list[tuple[float, float, int]]:
    """``(start_s, end_s, speaker index)`` for every run of one speaker's frames."""
    turns: list[tuple[float, float, int]] = []
    if speakers.size == 0:
        return turns
    change = np.flatnonzero(np.diff(speakers)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [speakers.size]])
    for start, end in zip(starts, ends, strict=True):
        speaker = int(speakers[start])
        if speaker == NO_SPEAKER:
            continue
        begin_s, end_s = run_bounds_s((int(start), int(end)), duration_s)
        if end_s > begin_s:
            turns.append((begin_s, end_s, speaker))
    return turns
