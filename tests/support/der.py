"""Diarization error rate with pyannote.metrics, for tests and benchmarks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol


class Turn(Protocol):
    @property
    def start_s(self) -> float: ...

    @property
    def end_s(self) -> float: ...

    @property
    def speaker(self) -> str: ...


def annotation(turns: Iterable[Turn], uri: str = "audio") -> Any:
    from pyannote.core import Annotation, Segment

    result = Annotation(uri=uri)
    for index, turn in enumerate(turns):
        result[Segment(turn.start_s, turn.end_s), index] = turn.speaker
    return result


def diarization_error_rate(reference: Iterable[Turn], hypothesis: Iterable[Turn]) -> float:
    """DER with no collar and overlap scored, over the reference's whole extent."""
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    ref, hyp = annotation(reference), annotation(hypothesis)
    spans = [seg for seg in (ref.get_timeline().extent(), hyp.get_timeline().extent()) if seg]
    if not spans:
        return 0.0
    # Scored from the first to the last second either side marks as speech.
    uem = Timeline([Segment(min(s.start for s in spans), max(s.end for s in spans))])
    metric = DiarizationErrorRate(collar=0.0, skip_overlap=False)
    return float(metric(ref, hyp, uem=uem))
