"""Admission control: the audio-seconds budget, pacing of long calls, the retry hint."""

from __future__ import annotations

import threading

import pytest
from steno_inference.server.admission import (
    DEFAULT_RETRY_AFTER_S,
    MAX_RETRY_AFTER_S,
    MIN_RETRY_AFTER_S,
    AdmissionController,
    AdmissionLimits,
)
from steno_inference.server.failures import Overloaded

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Queue:
    """The decoder's queue as the controller probes it."""

    def __init__(self) -> None:
        self.audio_s = 0.0

    def __call__(self) -> float:
        return self.audio_s


def controller(limit_s=100.0, reserve_s=30.0):
    clock, queue = Clock(), Queue()
    return AdmissionController(AdmissionLimits(limit_s, reserve_s), queue, clock), clock, queue


def test_short_calls_reserve_their_duration_until_the_budget_is_full():
    admission, _clock, _queue = controller()
    tickets = [admission.admit(25.0) for _ in range(4)]
    assert admission.reserved_s() == 100.0
    assert all(not t.paced for t in tickets)
    with pytest.raises(Overloaded) as refused:
        admission.admit(0.5)
    assert "100 s of audio queued" in str(refused.value)
    tickets[0].close()
    assert admission.reserved_s() == 75.0
    admission.admit(25.0)


def test_decoded_windows_give_their_seconds_back():
    admission, _clock, _queue = controller()
    ticket = admission.admit(20.0)
    ticket.done(12.0)
    assert admission.reserved_s() == pytest.approx(8.0)
    ticket.done(30.0)  # more than reserved (a header that understated the duration)
    assert admission.reserved_s() == 0.0
    ticket.close()
    ticket.close()  # closing twice releases nothing twice
    assert admission.reserved_s() == 0.0


def test_long_and_unknown_calls_reserve_a_fixed_share_and_are_paced():
    admission, _clock, _queue = controller(limit_s=100.0, reserve_s=30.0)
    stream = admission.admit(None)
    long_file = admission.admit(3600.0)
    assert (stream.paced, long_file.paced) == (True, True)
    assert admission.reserved_s() == 60.0
    stream.done(10.0)  # a paced call keeps its share while it runs
    assert admission.reserved_s() == 60.0
    stream.close()
    assert admission.reserved_s() == 30.0


def test_the_real_queue_counts_when_it_is_larger_than_the_reservations():
    admission, _clock, queue = controller()
    queue.audio_s = 95.0  # e.g. a job worker in the same process fills the decoder
    with pytest.raises(Overloaded):
        admission.admit(10.0)
    queue.audio_s = 85.0
    admission.admit(10.0)
    assert admission.load_s() == 85.0


def test_an_empty_server_admits_a_call_of_any_size():
    admission, _clock, _queue = controller(limit_s=10.0, reserve_s=10.0)
    ticket = admission.admit(9.5)
    assert ticket.reserved_s == 9.5


def test_retry_hint_is_the_time_to_drain_the_excess_at_the_measured_throughput():
    admission, clock, _queue = controller(limit_s=100.0, reserve_s=30.0)
    measured = admission.admit(None)
    for _ in range(10):  # a window of 5 s finishes every second
        clock.now += 1.0
        measured.done(5.0)
    measured.close()
    rate = 50.0 / 9.0  # ten windows over the nine seconds between the first and the last
    assert admission.throughput_audio_s_per_s() == pytest.approx(rate)
    held = [admission.admit(25.0) for _ in range(4)]
    with pytest.raises(Overloaded) as refused:
        admission.admit(30.0)  # 30 s over the limit, drained at that rate
    assert refused.value.retry_after_s == pytest.approx(30.0 / rate)
    clock.now += 60.0  # nothing decoded for a minute: no throughput to go by
    with pytest.raises(Overloaded) as cold:
        admission.admit(30.0)
    assert cold.value.retry_after_s == DEFAULT_RETRY_AFTER_S
    held[0].done(0.01)  # a crawl: the hint is capped
    with pytest.raises(Overloaded) as slow:
        admission.admit(30.0)
    assert slow.value.retry_after_s == MAX_RETRY_AFTER_S


def test_retry_hint_has_a_floor():
    admission, clock, _queue = controller(limit_s=100.0, reserve_s=30.0)
    fast = admission.admit(None)
    clock.now += 1.0
    fast.done(10_000.0)
    fast.close()
    held = admission.admit(30.0), admission.admit(30.0), admission.admit(30.0)
    with pytest.raises(Overloaded) as refused:
        admission.admit(20.0)
    assert refused.value.retry_after_s == MIN_RETRY_AFTER_S
    assert len(held) == 3


def test_paced_calls_wait_for_room_in_the_real_queue_and_stop_when_told():
    admission, _clock, queue = controller(limit_s=100.0, reserve_s=30.0)
    ticket = admission.admit(None)
    queue.audio_s = 150.0
    proceeded = threading.Event()
    stop = threading.Event()

    def feed() -> None:
        if ticket.wait_for_room(stop.is_set):
            proceeded.set()

    waiter = threading.Thread(target=feed)
    waiter.start()
    assert not proceeded.wait(0.3)  # the queue is over the limit: held back
    queue.audio_s = 40.0
    other = admission.admit(5.0)
    other.done(5.0)  # a finished window wakes paced callers at once
    assert proceeded.wait(5.0)
    waiter.join()

    queue.audio_s = 150.0
    stopped = threading.Thread(target=lambda: ticket.wait_for_room(stop.is_set))
    stopped.start()
    stop.set()
    stopped.join(5.0)
    assert not stopped.is_alive()
    assert ticket.wait_for_room(lambda: True) is False


@pytest.mark.parametrize(("limit", "reserve"), [(0.0, 1.0), (10.0, 0.0), (10.0, 11.0)])
def test_limits_are_validated(limit, reserve):
    with pytest.raises(ValueError):
        AdmissionLimits(limit, reserve).validated()


def test_a_full_queue_refuses_before_the_call_is_even_looked_at():
    admission, _clock, queue = controller(limit_s=100.0, reserve_s=30.0)
    admission.check_room()
    tickets = [admission.admit(25.0) for _ in range(4)]
    with pytest.raises(Overloaded) as refused:
        admission.check_room()
    assert str(refused.value) == (
        "server busy: 100 s of audio queued, the limit is 100 s; retry in 1.0 s")
    tickets[0].close()
    admission.check_room()
    queue.audio_s = 120.0  # the real queue counts as well
    with pytest.raises(Overloaded):
        admission.check_room()
