"""Speakers onto a transcript: largest time overlap, per word where there are words.

Pure functions on the engine's frozen types; no model, no device.

* **Per word** (when the segment has word timings): each word takes the speaker
  whose turns overlap it longest; a segment whose words change speaker is split
  at each change into segments of one speaker each. This is the point of
  working per word: a Whisper segment often runs across a turn boundary, and
  labelling the whole segment by one rule (insanely-fast-whisper takes the turn
  nearest its end time) puts the first speaker's words in the second one's
  mouth.
* **Per segment** (no word timings): the segment takes the speaker with the
  largest overlap and is not split, since without word times nothing says
  where in its text the change falls. Callers that want split segments run
  the word-timestamp pass when diarizing.
* **No overlap at all** (a word in a pause between turns, as Whisper's word
  times can be): the nearest turn in time. With no turns at all the
  transcript is returned without speakers.

Split pieces keep the segment's ``avg_logprob`` and ``no_speech_prob``; their
``tokens`` are left empty, because words do not record which tokens they came
from. The first piece starts where the segment started and the last ends
where it ended, so the pieces cover the original span.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, replace

from steno_inference.diarization.turns import SpeakerTurn
from steno_inference.transcript import Segment, Transcript, Word, join_segment_text


@dataclass(frozen=True)
class _TurnIndex:
    """Turns sorted by start, with prefix maxima of their ends for interval queries."""

    starts: list[float]
    ends: list[float]
    speakers: list[str]
    max_end: list[float]  # max(ends[: i + 1])
    max_end_at: list[int]  # index of the turn holding max_end[i]

    @classmethod
    def build(cls, turns: Sequence[SpeakerTurn]) -> _TurnIndex:
        ordered = sorted(turns, key=lambda t: (t.start_s, t.end_s))
        max_end: list[float] = []
        max_end_at: list[int] = []
        for index, turn in enumerate(ordered):
            if not max_end or turn.end_s > max_end[-1]:
                max_end.append(turn.end_s)
                max_end_at.append(index)
            else:
                max_end.append(max_end[-1])
                max_end_at.append(max_end_at[-1])
        return cls(
            starts=[t.start_s for t in ordered],
            ends=[t.end_s for t in ordered],
            speakers=[t.speaker for t in ordered],
            max_end=max_end,
            max_end_at=max_end_at,
        )

    def speaker_of(self, start_s: float, end_s: float) -> str:
        """The speaker overlapping ``[start_s, end_s]`` longest, else the nearest one."""
        # Turns starting before end_s, whose end may reach past start_s.
        upper = bisect.bisect_left(self.starts, end_s)
        lower = bisect.bisect_right(self.max_end, start_s)
        overlap: dict[str, float] = {}
        for index in range(lower, upper):
            shared = min(end_s, self.ends[index]) - max(start_s, self.starts[index])
            if shared > 0.0:
                overlap[self.speakers[index]] = overlap.get(self.speakers[index], 0.0) + shared
        if overlap:
            # Ties go to the speaker met first, which keeps the choice deterministic.
            return max(overlap, key=lambda speaker: overlap[speaker])
        return self._nearest(start_s, end_s, upper)

    def _nearest(self, start_s: float, end_s: float, upper: int) -> str:
        best_speaker = self.speakers[min(upper, len(self.speakers) - 1)]
        best_gap = float("inf")
        if upper > 0:  # the turn ending last among those that start before end_s
            before = self.max_end_at[upper - 1]
            best_gap = max(0.0, start_s - self.ends[before])
            best_speaker = self.speakers[before]
        if upper < len(self.starts):  # the first turn starting at or after end_s
            gap = max(0.0, self.starts[upper] - end_s)
            if gap < best_gap:
                best_speaker = self.speakers[upper]
        return best_speaker


def _split_by_speaker(segment: Segment, words: list[Word]) -> list[Segment]:
    groups: list[list[Word]] = []
    for word in words:
        if groups and groups[-1][-1].speaker == word.speaker:
            groups[-1].append(word)
        else:
            groups.append([word])
    if len(groups) == 1:
        return [replace(segment, words=tuple(words), speaker=words[0].speaker)]
    pieces: list[Segment] = []
    for index, group in enumerate(groups):
        start = segment.start_s if index == 0 else group[0].start_s
        end = segment.end_s if index == len(groups) - 1 else group[-1].end_s
        pieces.append(
            Segment(
                start_s=start,
                end_s=max(start, end),
                text="".join(word.text for word in group),
                tokens=(),
                avg_logprob=segment.avg_logprob,
                no_speech_prob=segment.no_speech_prob,
                words=tuple(group),
                speaker=group[0].speaker,
            )
        )
    return pieces


def assign_speakers(transcript: Transcript, turns: Sequence[SpeakerTurn]) -> Transcript:
    """A new transcript with ``speaker`` on segments and words, and ``speakers`` filled."""
    if not turns:
        return replace(transcript, speakers=())
    index = _TurnIndex.build(turns)
    segments: list[Segment] = []
    for segment in transcript.segments:
        if segment.words:
            words = [
                replace(word, speaker=index.speaker_of(word.start_s, word.end_s))
                for word in segment.words
            ]
            segments.extend(_split_by_speaker(segment, words))
        else:
            segments.append(
                replace(segment, speaker=index.speaker_of(segment.start_s, segment.end_s))
            )
    speakers = tuple(dict.fromkeys(s.speaker for s in segments if s.speaker is not None))
    return replace(
        transcript,
        segments=tuple(segments),
        speakers=speakers,
        text=join_segment_text(segments),
    )
