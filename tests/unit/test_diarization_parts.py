"""Diarization's pure parts: clustering, frame bookkeeping, options, weights, hub turns."""

from __future__ import annotations

import numpy as np
import pytest
from steno_inference.diarization import DiarizationOptions, DiarizationWeightsError, locate_weights
from steno_inference.diarization.clustering import (
    SpeakerCount,
    average_linkage,
    cluster_embeddings,
    cosine_distances,
    cut,
    normalise_rows,
)
from steno_inference.diarization.hub import speaker_turns_from_annotation
from steno_inference.diarization.turns import SpeakerTurn
from steno_inference.diarization.windows import (
    FRAME_S,
    Window,
    frame_speakers,
    plan_windows,
    runs_to_turns,
    speech_runs,
)
from steno_inference.options import MAX_SPEAKERS, OptionsError, TranscribeOptions

pytestmark = pytest.mark.unit


def _voices(rng: np.random.Generator, sizes: list[int], dim: int = 16, spread: float = 0.3):
    centres = normalise_rows(rng.normal(size=(len(sizes), dim)))
    points = [centres[i] + spread * rng.normal(size=(n, dim)) / np.sqrt(dim) for i, n in enumerate(sizes)]
    truth = np.concatenate([np.full(n, i) for i, n in enumerate(sizes)])
    return np.concatenate(points), truth


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    groups = lambda x: {frozenset(np.flatnonzero(x == v)) for v in np.unique(x)}  # noqa: E731
    return groups(a) == groups(b)


def test_average_linkage_matches_scipy() -> None:
    hierarchy = pytest.importorskip("scipy.cluster.hierarchy")
    distance = pytest.importorskip("scipy.spatial.distance")
    rng = np.random.default_rng(7)
    points, _ = _voices(rng, [30, 25, 20, 5], spread=1.0)
    distances = cosine_distances(normalise_rows(points))
    ours = average_linkage(distances)
    theirs = hierarchy.linkage(distance.squareform(distances, checks=False), method="average")
    np.testing.assert_allclose(ours[:, 2], np.sort(theirs[:, 2]), atol=1e-12)
    for k in (1, 2, 3, 4, 9):
        assert _same_partition(cut(ours, len(points), clusters=k),
                               hierarchy.fcluster(theirs, k, "maxclust"))


def test_threshold_finds_the_voices_and_outliers_do_not_become_speakers() -> None:
    rng = np.random.default_rng(1)
    points, truth = _voices(rng, [40, 30, 20])
    outlier = normalise_rows(rng.normal(size=(1, 16)))  # one odd window
    labels = cluster_embeddings(np.concatenate([points, outlier]), SpeakerCount())
    assert _same_partition(labels[:-1], truth)
    assert labels.max() == 2  # the outlier joined a voice instead of becoming a fourth


def test_counts_are_honoured() -> None:
    rng = np.random.default_rng(2)
    points, _ = _voices(rng, [40, 30, 20])
    assert cluster_embeddings(points, SpeakerCount(exact=2)).max() == 1
    assert cluster_embeddings(points, SpeakerCount(maximum=2)).max() == 1
    assert cluster_embeddings(points, SpeakerCount(minimum=4)).max() == 3
    single, _ = _voices(rng, [50])
    assert cluster_embeddings(single, SpeakerCount()).max() == 0
    assert cluster_embeddings(single, SpeakerCount(exact=2)).max() == 1


def test_labels_follow_first_appearance_and_subsampling_keeps_voices() -> None:
    rng = np.random.default_rng(3)
    points, truth = _voices(rng, [300, 300])
    order = rng.permutation(600)
    labels = cluster_embeddings(points[order], SpeakerCount(), max_linkage_points=100)
    assert labels[0] == 0
    assert _same_partition(labels, truth[order])


def test_speech_runs_bridge_short_gaps_and_drop_short_bursts() -> None:
    p = np.zeros(100)
    p[10:30] = p[32:50] = 0.9  # a 2-frame gap: bridged
    p[70:72] = 0.9  # a 2-frame burst: dropped
    assert speech_runs(p, threshold=0.5, min_speech_frames=5, min_silence_frames=4) == [(10, 50)]


def test_windows_stay_inside_runs_and_cover_them() -> None:
    plan = plan_windows([(1.0, 4.2), (6.0, 6.2)], window_s=1.5, step_s=0.75,
                        min_window_s=0.5, duration_s=10.0)
    long_run = [w for w in plan if w.start_s < 5]
    assert long_run[0].start_s == 1.0 and long_run[-1].end_s == pytest.approx(4.2)
    assert all(w.start_s >= 1.0 and w.end_s <= 4.2 + 1e-9 for w in long_run)
    assert plan[-1] == Window(pytest.approx(5.85), pytest.approx(6.35))  # widened to 0.5 s


def test_frames_take_the_speaker_whose_windows_cover_them_most() -> None:
    frames = 400
    windows = [Window(0.0, 1.5), Window(0.75, 2.25), Window(1.5, 3.0), Window(2.25, 3.75)]
    labels = np.array([0, 0, 1, 1])
    speakers = frame_speakers(frames, [(0, 220)], windows, labels, 2)
    turns = runs_to_turns(speakers, duration_s=frames * FRAME_S)
    assert [t[2] for t in turns] == [0, 1]
    assert turns[0][1] == pytest.approx(1.875, abs=0.1)  # between the windows' centres
    assert (speakers[220:] == -1).all()


def test_options_validate_counts_like_transcribe_options() -> None:
    for bad in (
        DiarizationOptions(num_speakers=0),
        DiarizationOptions(num_speakers=MAX_SPEAKERS + 1),
        DiarizationOptions(num_speakers=2, min_speakers=1),
        DiarizationOptions(num_speakers=2, max_speakers=3),
        DiarizationOptions(min_speakers=3, max_speakers=2),
        DiarizationOptions(min_speakers=-1),
        DiarizationOptions(hub_pipeline=" "),
    ):
        with pytest.raises(OptionsError):
            bad.validated()
    with pytest.raises(OptionsError, match="exceeds"):
        DiarizationOptions.from_transcribe(TranscribeOptions(min_speakers=4, max_speakers=2))
    ok = DiarizationOptions.from_transcribe(TranscribeOptions(diarize=True, min_speakers=2))
    assert ok.speaker_count().minimum == 2 and ok.speaker_count().maximum == MAX_SPEAKERS
    assert "secret" not in repr(DiarizationOptions(hub_pipeline="x/y", hub_token="secret"))


def test_missing_weights_name_the_extra(tmp_path) -> None:
    with pytest.raises(DiarizationWeightsError, match=r"steno\[diarization\]"):
        locate_weights(tmp_path)


def test_hub_annotation_becomes_numbered_turns() -> None:
    core = pytest.importorskip("pyannote.core")
    annotation = core.Annotation()
    annotation[core.Segment(5.0, 6.0)] = "bob"
    annotation[core.Segment(0.5, 2.0)] = "alice"
    annotation[core.Segment(2.5, 4.0)] = "bob"
    assert speaker_turns_from_annotation(annotation) == [
        SpeakerTurn(0.5, 2.0, "SPEAKER_00"),
        SpeakerTurn(2.5, 4.0, "SPEAKER_01"),
        SpeakerTurn(5.0, 6.0, "SPEAKER_01"),
    ]


class _FakeHubPipeline:
    """Stands in for pyannote.audio's Pipeline: records its call, returns an annotation."""

    def __init__(self, annotation) -> None:
        self.annotation = annotation
        self.calls: list[tuple[dict, dict]] = []

    def __call__(self, file: dict, **counts):
        self.calls.append((file, counts))
        return type("DiarizeOutput", (), {"speaker_diarization": self.annotation})()


def test_hub_pipeline_gets_the_decoded_audio_and_the_counts() -> None:
    import torch
    from steno_inference.diarization.hub import diarize_with_hub

    core = pytest.importorskip("pyannote.core")
    annotation = core.Annotation()
    annotation[core.Segment(0.0, 1.0)] = "A"
    fake = _FakeHubPipeline(annotation)
    audio = np.zeros(16000, dtype=np.float32)
    options = DiarizationOptions(min_speakers=1, max_speakers=3, hub_pipeline="org/pipeline")
    turns = diarize_with_hub(audio, options, torch.device("cpu"), pipeline=fake)
    assert turns == [SpeakerTurn(0.0, 1.0, "SPEAKER_00")]
    (file, counts), = fake.calls
    assert counts == {"min_speakers": 1, "max_speakers": 3}
    assert file["sample_rate"] == 16000 and tuple(file["waveform"].shape) == (1, 16000)
