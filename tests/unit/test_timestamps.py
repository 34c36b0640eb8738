import pytest
from steno_inference.engine import split_timestamped

pytestmark = pytest.mark.unit
TB = 50363


def ts(seconds: float) -> int:
    return TB + round(seconds / 0.02)


def test_pairs_make_segments():
    tokens = [ts(0), 10, 11, ts(2.5), ts(2.5), 12, ts(4.0)]
    assert split_timestamped(tokens, TB, 10.0) == [(0.0, 2.5, (10, 11)), (2.5, 4.0, (12,))]


def test_open_segment_runs_to_window_end():
    assert split_timestamped([ts(1.0), 10, 11], TB, 7.5) == [(1.0, 7.5, (10, 11))]


def test_timestamps_past_the_audio_are_clamped():
    assert split_timestamped([ts(0), 10, ts(29.0)], TB, 6.0) == [(0.0, 6.0, (10,))]


def test_no_text_no_segment():
    assert split_timestamped([ts(0), ts(1.0)], TB, 5.0) == []
