import numpy as np
import pytest
from steno_inference.segmentation import N_SAMPLES, PcmBuffer, WindowPacker
from steno_inference.vad import SpeechRegion

pytestmark = pytest.mark.unit
SR = 16000


def _buffer(seconds: float) -> PcmBuffer:
    buffer = PcmBuffer()
    # Each sample holds its own index, so copies can be traced back to the source.
    buffer.append(np.arange(int(seconds * SR), dtype=np.float32))
    return buffer


def _pack(regions: list[tuple[float, float]], total_s: float, gap_s: float = 1.0):
    buffer = _buffer(total_s)
    packer = WindowPacker(max_kept_gap_s=gap_s)
    windows = []
    for start, end in regions:
        windows.extend(packer.add(SpeechRegion(int(start * SR), int(end * SR)), buffer))
    windows.extend(packer.finish(buffer))
    return windows


def test_short_pauses_stay_and_long_pauses_are_cut():
    windows = _pack([(1, 5), (5.5, 9), (20, 25)], 30)
    assert len(windows) == 1
    pieces = windows[0].pieces
    assert [(p.source_start_sample / SR, p.n_samples / SR) for p in pieces] == [(1, 8), (20, 5)]
    audio = windows[0].audio
    assert audio.size == 13 * SR
    assert audio[0] == 1 * SR and audio[8 * SR] == 20 * SR  # the 11 s pause is gone


def test_windows_never_exceed_30_s_and_keep_order():
    regions = [(i * 10.0, i * 10.0 + 8.0) for i in range(10)]
    windows = _pack(regions, 100)
    assert all(w.n_samples <= N_SAMPLES for w in windows)
    assert [w.index for w in windows] == list(range(len(windows)))
    starts = [p.source_start_sample for w in windows for p in w.pieces]
    assert starts == sorted(starts)
    assert sum(w.n_samples for w in windows) == 10 * 8 * SR


def test_time_map_returns_source_time():
    window = _pack([(2, 4), (10, 12)], 15)[0]
    assert window.to_source_s(0.0) == pytest.approx(2.0)
    assert window.to_source_s(1.5) == pytest.approx(3.5)
    assert window.to_source_s(2.5) == pytest.approx(10.5)
    assert window.to_source_s(99.0) == pytest.approx(12.0)  # clamped to the window's end


def test_buffer_reads_dropped_samples_as_silence():
    buffer = _buffer(3)
    buffer.discard_before(SR)
    data = buffer.slice(SR - 2, SR + 2)
    assert data.tolist() == [0.0, 0.0, float(SR), float(SR + 1)]
