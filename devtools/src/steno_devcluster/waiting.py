"""Bounded polling, so every wait in tests says what it waited for and how long."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_INTERVAL_S = 0.1


class WaitTimeoutError(AssertionError):
    """The condition did not hold in time (an AssertionError, so pytest shows it as a failure)."""


def wait_for(
    probe: Callable[[], T | None],
    timeout_s: float,
    what: str,
    interval_s: float = DEFAULT_INTERVAL_S,
    describe: Callable[[], str] | None = None,
) -> T:
    """Call *probe* until it returns something truthy; return that, or raise after *timeout_s*.

    *describe*, when given, is called on timeout and its text added to the
    error: the state that the wait was stuck in.
    """
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            detail = f"\n{describe()}" if describe is not None else ""
            raise WaitTimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}{detail}")
        time.sleep(interval_s)
