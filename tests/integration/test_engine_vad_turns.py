"""Concurrent sources take turns at voice activity, a bounded number at a time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from steno_inference.engine import Engine, EngineConfig
from steno_inference.options import OptionsError, TranscribeOptions
from steno_inference.segmentation import WindowBuilder
from support.speech import librivox_utterances

pytestmark = pytest.mark.integration

CALLERS = 4


def test_voice_activity_runs_at_most_vad_threads_at_once(
    monkeypatch: pytest.MonkeyPatch, speech_data: None
) -> None:
    engine = Engine.load(EngineConfig(model="tiny.en", device="cpu", batch_size=8,
                                      backend="torch", vad_threads=1))
    paths = [str(u.path) for u in librivox_utterances()[:CALLERS]]
    expected = [engine.transcribe(p, TranscribeOptions()).text for p in paths]

    lock = threading.Lock()
    running = [0]
    most = [0]
    feed, finish = WindowBuilder.feed, WindowBuilder.finish

    def counted(method: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self: WindowBuilder, *args: Any) -> Any:
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            try:
                time.sleep(0.02)  # widen the window in which an overlap would show
                return method(self, *args)
            finally:
                with lock:
                    running[0] -= 1
        return wrapper

    monkeypatch.setattr(WindowBuilder, "feed", counted(feed))
    monkeypatch.setattr(WindowBuilder, "finish", counted(finish))
    texts: dict[int, str] = {}

    def call(index: int) -> None:
        texts[index] = engine.transcribe(paths[index], TranscribeOptions()).text

    threads = [threading.Thread(target=call, args=(i,)) for i in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    engine.close()
    assert most[0] == 1
    assert [texts[i] for i in range(CALLERS)] == expected


def test_vad_threads_below_one_is_refused() -> None:
    with pytest.raises(OptionsError, match="vad threads must be at least 1, not 0"):
        Engine.load(EngineConfig(model="tiny.en", device="cpu", backend="torch", vad_threads=0))
