"""An optional pyannote.audio hub pipeline, used only when the caller names one.

``pyannote/speaker-diarization-community-1`` and its kind need pyannote.audio
(not part of ``steno[diarization]``: its torchaudio pins a torch build of its
own) and a reachable Hugging Face hub, usually with a token. pyannote.audio is
imported only here, only when a pipeline id is given, and through
``importlib`` so that nothing else in steno depends on it.

The audio is handed over as the in-memory ``{"waveform", "sample_rate"}``
mapping pyannote.audio accepts, so the recording decoded once by steno is used
as it is (pyannote's own file decoding through torchcodec is not involved).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from steno_inference.diarization.options import DiarizationOptions
from steno_inference.diarization.segmentation import SAMPLE_RATE
from steno_inference.diarization.turns import SpeakerTurn, renumber
from steno_inference.diarization.weights import DiarizationWeightsError

PYANNOTE_INSTALL = "pip install pyannote.audio (with a torchaudio matching your torch)"


def load_hub_pipeline(pipeline_id: str, token: str | None, device: torch.device) -> Any:
    """``pyannote.audio.Pipeline.from_pretrained(pipeline_id)`` moved to ``device``."""
    try:
        module = importlib.import_module("pyannote.audio")
    except ImportError as error:
        raise DiarizationWeightsError(
            f"hub pipeline {pipeline_id!r} needs pyannote.audio: {PYANNOTE_INSTALL}"
        ) from error
    pipeline = module.Pipeline.from_pretrained(pipeline_id, token=token)
    if pipeline is None:  # pyannote returns None (and logs) when the hub refuses the id
        raise DiarizationWeightsError(
            f"hub pipeline {pipeline_id!r} could not be loaded (is the id right, the hub "
            "reachable and the token allowed to read it?)"
        )
    return pipeline.to(device)


def speaker_turns_from_annotation(annotation: Any) -> list[SpeakerTurn]:
    """A pyannote ``Annotation``'s tracks as turns labelled ``SPEAKER_00..``."""
    tracks: Iterable[tuple[Any, Any, Any]] = annotation.itertracks(yield_label=True)
    turns = [
        SpeakerTurn(float(segment.start), float(segment.end), str(label))
        for segment, _, label in tracks
        if float(segment.end) > float(segment.start)
    ]
    return renumber(turns)


def diarize_with_hub(
    audio: npt.NDArray[np.float32],
    options: DiarizationOptions,
    device: torch.device,
    pipeline: Any | None = None,
) -> list[SpeakerTurn]:
    """Run the hub pipeline named in ``options`` (or an already loaded ``pipeline``)."""
    if options.hub_pipeline is None:
        raise ValueError("diarize_with_hub needs options.hub_pipeline")
    if pipeline is None:
        pipeline = load_hub_pipeline(options.hub_pipeline, options.hub_token, device)
    counts: dict[str, int] = {}
    if options.num_speakers is not None:
        counts["num_speakers"] = options.num_speakers
    if options.min_speakers is not None:
        counts["min_speakers"] = options.min_speakers
    if options.max_speakers is not None:
        counts["max_speakers"] = options.max_speakers
    waveform = torch.from_numpy(np.array(audio, dtype=np.float32, copy=True))[None, :]
    output = pipeline({"waveform": waveform, "sample_rate": SAMPLE_RATE}, **counts)
    # pyannote.audio 4 returns an object holding the annotation; 3.x the annotation itself.
    annotation = getattr(output, "speaker_diarization", output)
    return speaker_turns_from_annotation(annotation)
