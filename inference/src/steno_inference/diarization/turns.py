"""Speaker turns: the diarization's result, and how its labels are named."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

LABEL_PREFIX = "SPEAKER_"  # the label style pyannote and insanely-fast-whisper print


@dataclass(frozen=True)
class SpeakerTurn:
    """One speaker talking from ``start_s`` to ``end_s`` (seconds of the source audio)."""

    start_s: float
    end_s: float
    speaker: str  # "SPEAKER_00", "SPEAKER_01", ... numbered in order of first appearance

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def speaker_label(index: int) -> str:
    """``SPEAKER_00`` for 0; at least two digits, more past 99."""
    return f"{LABEL_PREFIX}{index:02d}"


def renumber(turns: Iterable[SpeakerTurn]) -> list[SpeakerTurn]:
    """Turns sorted by time with labels renamed ``SPEAKER_00..`` by first appearance."""
    ordered = sorted(turns, key=lambda turn: (turn.start_s, turn.end_s, turn.speaker))
    names: dict[str, str] = {}
    result: list[SpeakerTurn] = []
    for turn in ordered:
        name = names.setdefault(turn.speaker, speaker_label(len(names)))
        result.append(SpeakerTurn(turn.start_s, turn.end_s, name))
    return result


def speakers_of(turns: Sequence[SpeakerTurn]) -> tuple[str, ...]:
    """Distinct labels in order of first appearance."""
    return tuple(dict.fromkeys(turn.speaker for turn in sorted(turns, key=lambda t: t.start_s)))
