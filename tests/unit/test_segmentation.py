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


class _LoudnessDetector:
    """Stands in for Silero at the edge of this unit: speech is any loud frame."""

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=np.float32)

    def probabilities(self, pcm: np.ndarray) -> np.ndarray:
        data = np.concatenate([self._pending, pcm])
        n = data.size // 512
        self._pending = data[n * 512 :]
        frames = data[: n * 512].reshape(n, 512)
        return (np.abs(frames).max(axis=1) > 0.5).astype(np.float32)

    def flush(self) -> np.ndarray:
        return np.zeros(0, dtype=np.float32)


def test_sparse_speech_keeps_memory_bounded():
    from steno_inference.segmentation import MAX_BUFFERED_S, WindowBuilder

    builder = WindowBuilder(_LoudnessDetector())  # type: ignore[arg-type]
    minute = np.zeros(60 * SR, dtype=np.float32)
    minute[:3 * SR] = 0.9  # 3 s of "speech" each minute
    windows = []
    peak = 0
    for _ in range(20):
        for block in np.split(minute, 6):
            windows += builder.feed(block)
            peak = max(peak, builder.buffered_samples)
    windows += builder.finish()
    assert peak <= MAX_BUFFERED_S * SR + 10 * SR  # one read block of slack
    assert sum(len(w.pieces) for w in windows) == 20
    assert all(w.n_samples <= N_SAMPLES for w in windows)
    # Each window's audio is the speech itself, copied when its span was added.
    assert all(np.all(w.audio[SR : 2 * SR] == np.float32(0.9)) for w in windows)
