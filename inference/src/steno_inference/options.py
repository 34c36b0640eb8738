"""Options of one transcription request, validated once where they enter the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Task = Literal["transcribe", "translate"]
TimestampMode = Literal["segment", "word"]
OutputFormat = Literal["json", "srt", "vtt", "txt", "tsv"]

TASKS: tuple[Task, ...] = ("transcribe", "translate")
TIMESTAMP_MODES: tuple[TimestampMode, ...] = ("segment", "word")
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("json", "srt", "vtt", "txt", "tsv")
MAX_SPEAKERS = 32  # a stated cap: clustering beyond this many voices is not meaningful here


class OptionsError(ValueError):
    """An option has a value the engine cannot honour; the message names it and the limit."""


@dataclass(frozen=True)
class TranscribeOptions:
    """What to do with one source. Every field has a safe default."""

    task: Task = "transcribe"  # translate: Whisper's X→English task
    language: str = "auto"  # "auto" detects per source; else an ISO 639-1 code such as "en"
    timestamps: TimestampMode = "segment"  # "word" adds a cross-attention alignment pass
    diarize: bool = False  # label speakers (pyannote segmentation + speaker embeddings)
    num_speakers: int | None = None  # exact count; excludes min/max
    min_speakers: int | None = None
    max_speakers: int | None = None

    def validated(self) -> TranscribeOptions:
        """Return self if every field is usable, else raise OptionsError naming the field."""
        if self.task not in TASKS:
            raise OptionsError(f"task must be one of {', '.join(TASKS)}, not {self.task!r}")
        if self.timestamps not in TIMESTAMP_MODES:
            raise OptionsError(
                f"timestamps must be one of {', '.join(TIMESTAMP_MODES)}, not {self.timestamps!r}"
            )
        if self.num_speakers is not None and (
            self.min_speakers is not None or self.max_speakers is not None
        ):
            raise OptionsError("num_speakers excludes min_speakers and max_speakers")
        for name in ("num_speakers", "min_speakers", "max_speakers"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= MAX_SPEAKERS:
                raise OptionsError(f"{name} must be between 1 and {MAX_SPEAKERS}, not {value}")
        if (
            self.min_speakers is not None
            and self.max_speakers is not None
            and self.min_speakers > self.max_speakers
        ):
            raise OptionsError(
                f"min_speakers ({self.min_speakers}) exceeds max_speakers ({self.max_speakers})"
            )
        return self


def parse_formats(text: str) -> tuple[OutputFormat, ...]:
    """Parse a comma-separated list such as ``json,srt``; unknown names raise OptionsError."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not names:
        raise OptionsError(f"no output format given; choose from {', '.join(OUTPUT_FORMATS)}")
    chosen: list[OutputFormat] = []
    for name in names:
        matches = [fmt for fmt in OUTPUT_FORMATS if fmt == name]
        if not matches:
            raise OptionsError(
                f"unknown output format {name!r}; choose from {', '.join(OUTPUT_FORMATS)}"
            )
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return tuple(chosen)
