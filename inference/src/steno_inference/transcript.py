"""The engine's result types: frozen dataclasses, times in seconds of the source audio.

The JSON form (see ``formats.to_json_dict``) stays readable by users of
insanely-fast-whisper: ``text`` and ``chunks[{timestamp: [start, end], text}]``
are kept, and steno adds ``language``, ``duration_s``, ``segments`` with
``words``, and ``speakers`` when diarization ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Word:
    """One word placed in time by cross-attention alignment."""

    start_s: float
    end_s: float
    text: str  # with its leading space, as Whisper's tokenizer produces it
    probability: float  # mean token probability of the word, 0..1
    speaker: str | None = None


@dataclass(frozen=True)
class Segment:
    """A stretch of text between two of Whisper's timestamp tokens."""

    start_s: float
    end_s: float
    text: str
    tokens: tuple[int, ...] = ()  # text tokens of the segment (no timestamps)
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    words: tuple[Word, ...] = ()
    speaker: str | None = None


@dataclass(frozen=True)
class Transcript:
    """Everything the engine knows about one source."""

    text: str
    segments: tuple[Segment, ...]
    language: str
    duration_s: float  # length of the decoded source audio
    speakers: tuple[str, ...] = ()
    model: str = ""
    source: str = ""  # a display name (file path or URI); never used as a storage key
    extra: dict[str, str] = field(default_factory=dict)


def join_segment_text(segments: tuple[Segment, ...] | list[Segment]) -> str:
    """The transcript's text: segment texts joined as Whisper spaced them, trimmed."""
    return "".join(segment.text for segment in segments).strip()
