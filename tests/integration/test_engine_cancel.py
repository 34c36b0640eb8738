"""A call whose caller gives up ends promptly and reports every unfinished source."""

from __future__ import annotations

import threading

import pytest
from steno_inference.engine import TranscriptionCancelled
from steno_inference.options import TranscribeOptions
from support.speech import librivox_utterances

pytestmark = pytest.mark.integration


def test_cancel_mid_call_reports_the_rest_as_cancelled(tiny_engine, speech_data):
    paths = [str(u.path) for u in librivox_utterances()] * 3
    cancel = threading.Event()
    results = []
    for result in tiny_engine.transcribe_many(
        [(p, p) for p in paths], TranscribeOptions(), is_cancelled=cancel.is_set
    ):
        results.append(result)
        cancel.set()  # give up after the first file
    assert len(results) == len(paths)
    assert results[0].transcript is not None
    cancelled = [r for r in results if isinstance(r.failure, TranscriptionCancelled)]
    assert cancelled and all(r.transcript is None for r in cancelled)
    # The engine is still usable afterwards: its shared decoder was not disturbed.
    again = tiny_engine.transcribe(results[0].name, TranscribeOptions())
    assert again.text == results[0].transcript.text
