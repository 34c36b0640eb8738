import itertools

import numpy as np
import pytest
from steno_inference.silero_net import FRAME_SAMPLES
from steno_inference.vad import RegionTracker, VadOptions, speech_regions

pytestmark = pytest.mark.unit


def _probs(pattern: list[tuple[float, int]]) -> np.ndarray:
    return np.concatenate([np.full(n, p, dtype=np.float32) for p, n in pattern])


def test_hysteresis_and_padding():
    options = VadOptions(threshold=0.5, min_speech_duration_ms=100, min_silence_duration_ms=320,
                         speech_pad_ms=64)
    probs = _probs([(0.0, 20), (0.9, 30), (0.4, 5), (0.9, 10), (0.0, 40)])
    total = probs.size * FRAME_SAMPLES
    regions = speech_regions(probs, options, total)
    # 0.4 is above threshold - 0.15, so the dip does not end the region.
    assert len(regions) == 1
    assert regions[0].start_sample == (20 - 2) * FRAME_SAMPLES
    assert regions[0].end_sample == (65 + 2) * FRAME_SAMPLES


def test_short_bursts_are_dropped():
    options = VadOptions(min_speech_duration_ms=250)
    probs = _probs([(0.0, 10), (0.9, 3), (0.0, 40)])
    assert speech_regions(probs, options, probs.size * FRAME_SAMPLES) == []


def test_long_speech_is_split_at_its_quietest_frame():
    probs = _probs([(0.9, 500), (0.55, 1), (0.9, 800)])
    tracker = RegionTracker(VadOptions(speech_pad_ms=0), max_region_s=29.0)
    regions = list(tracker.feed(probs.tolist()))
    regions += list(tracker.finish(probs.size * FRAME_SAMPLES))
    assert len(regions) >= 2
    assert all(r.end_s - r.start_s <= 29.0 + 1e-6 for r in regions)
    assert regions[0].end_sample == 500 * FRAME_SAMPLES  # the dip
    for a, b in itertools.pairwise(regions):
        assert a.end_sample <= b.start_sample
