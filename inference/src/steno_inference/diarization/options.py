"""Per-request diarization options, validated by the same rules as ``TranscribeOptions``."""

from __future__ import annotations

from dataclasses import dataclass, field

from steno_inference.diarization.clustering import SpeakerCount
from steno_inference.options import MAX_SPEAKERS, OptionsError, TranscribeOptions


@dataclass(frozen=True)
class DiarizationOptions:
    """How many speakers to look for, and optionally a hub pipeline to use instead."""

    num_speakers: int | None = None  # exact count; excludes min/max
    min_speakers: int | None = None  # at least this many (1 when unset)
    max_speakers: int | None = None  # at most this many (MAX_SPEAKERS when unset)
    # A pyannote.audio pipeline id such as "pyannote/speaker-diarization-community-1",
    # used only when given (it needs pyannote.audio and a reachable hub); None: the
    # offline pipeline on the packaged weights.
    hub_pipeline: str | None = None
    hub_token: str | None = field(default=None, repr=False)  # never printed or logged

    def validated(self) -> DiarizationOptions:
        """Return self if the counts are usable, else raise ``OptionsError`` naming the field."""
        if self.num_speakers is not None and (
            self.min_speakers is not None or self.max_speakers is not None
        ):
            raise OptionsError("num_speakers excludes min_speakers and max_speakers")
        for name in ("num_speakers", "min_speakers", "max_speakers"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise OptionsError(f"{name} must be a whole number, not {value!r}")
            if not 1 <= value <= MAX_SPEAKERS:
                raise OptionsError(f"{name} must be between 1 and {MAX_SPEAKERS}, not {value}")
        if (
            self.min_speakers is not None
            and self.max_speakers is not None
            and self.min_speakers > self.max_speakers
        ):
            raise OptionsError(
                f"min_speakers ({self.min_speakers}) exceeds max_speakers ({self.max_speakers})"
            )
        if self.hub_pipeline is not None and not self.hub_pipeline.strip():
            raise OptionsError("hub_pipeline must be a pipeline id, not an empty string")
        return self

    @classmethod
    def from_transcribe(
        cls,
        options: TranscribeOptions,
        *,
        hub_pipeline: str | None = None,
        hub_token: str | None = None,
    ) -> DiarizationOptions:
        """The speaker counts of a transcription request, validated."""
        return cls(
            num_speakers=options.num_speakers,
            min_speakers=options.min_speakers,
            max_speakers=options.max_speakers,
            hub_pipeline=hub_pipeline,
            hub_token=hub_token,
        ).validated()

    def speaker_count(self) -> SpeakerCount:
        """The counts as the clustering takes them."""
        return SpeakerCount(
            exact=self.num_speakers,
            minimum=self.min_speakers or 1,
            maximum=self.max_speakers if self.max_speakers is not None else MAX_SPEAKERS,
        )
