"""Windows encoded ahead of the decoder, in batches, on the decode stream.

The runner hands windows to this pipeline as it takes them from its feed;
the pipeline launches one encoder batch at a time and records an event after
it; the runner admits a batch's windows into free decoder slots once that
event has fired (or waits for it when enough slots are free). Encoding one
batch ahead means windows are ready the moment slots free up.

One stream, not two. A first version ran the encoder on a low-priority stream
of its own beside the decode steps, since the encoder is bound by arithmetic
and the decoder by memory bandwidth. Measured on an H100 (large-v3, 300
windows) it saved nothing (6.80 s against 6.74 s serial): the decoder's
attention and the encoder's matrix products each fill every SM and do not
share them. And on an H200 the continuous-batching check then gave tokens
that changed from run to run in one window of twenty, which points at a race
between the streams (a shared library workspace is the suspect; not
established). Encoding on the decode stream keeps results repeatable at no
measured cost.

The stream is a dedicated one rather than the default stream, so that
callers' own GPU work (features, word alignment) is never queued behind
decode steps; before each batch it waits for the callers' stream, where the
requests' features were computed.

Out of memory while encoding: the batch is halved and the windows go back to
the front of the queue, so none is lost; a single window that does not fit
is an error.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from steno_inference.batching import is_out_of_memory

LOG = logging.getLogger(__name__)



@dataclass
class EncodedBatch:
    """Encoder states of consecutive windows, and the event that says they are written."""

    requests: list[Any]
    states: torch.Tensor  # (n, 1500, d_model)
    event: Any  # torch.cuda.Event, or None on the CPU
    offset: int = 0  # windows of this batch already handed out

    @property
    def remaining(self) -> int:
        return len(self.requests) - self.offset


class EncoderPipeline:
    """A queue of windows to encode and of encoded batches not yet admitted."""

    def __init__(self, encode: Callable[[list[Any]], torch.Tensor], device: torch.device,
                 batch: int) -> None:
        self._encode = encode
        self.device = device
        self.batch = batch
        self.oom_splits = 0
        self.windows_encoded = 0
        self.batches_encoded = 0
        self._pending: deque[Any] = deque()
        self._ready: deque[EncodedBatch] = deque()
        self.decode_stream: Any = None
        self._caller_stream: Any = None
        if device.type == "cuda":
            self.decode_stream = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
            self._caller_stream = torch.cuda.default_stream(device)

    # ------------------------------------------------------------- counting

    def waiting(self) -> int:
        """Windows taken but not yet handed to the decoder (queued or encoded)."""
        return len(self._pending) + sum(b.remaining for b in self._ready)

    def has_pending(self) -> bool:
        return bool(self._pending)

    def encoded(self) -> int:
        """Windows encoded (or being encoded) and not yet handed out."""
        return sum(b.remaining for b in self._ready)

    # ------------------------------------------------------------- encoding

    def add(self, requests: list[Any]) -> None:
        self._pending.extend(requests)

    def launch(self) -> bool:
        """Start encoding the next batch of queued windows; False when none is queued."""
        if not self._pending:
            return False
        while True:
            chunk = [self._pending.popleft() for _ in range(min(self.batch, len(self._pending)))]
            try:
                self._ready.append(self._run(chunk))
            except (torch.OutOfMemoryError, RuntimeError) as error:
                self._pending.extendleft(reversed(chunk))
                if not is_out_of_memory(error) or self.batch == 1:
                    raise
                self.batch //= 2
                self.oom_splits += 1
                torch.cuda.empty_cache()
                LOG.warning("encoder ran out of memory: batch now %d", self.batch)
                continue
            self.windows_encoded += len(chunk)
            self.batches_encoded += 1
            return True

    def _run(self, chunk: list[Any]) -> EncodedBatch:
        if self.decode_stream is None:
            return EncodedBatch(chunk, self._encode(chunk), None)
        # The callers computed the features on their stream, before handing
        # the requests over: wait for what that stream has queued so far.
        ready = torch.cuda.Event()  # type: ignore[no-untyped-call]
        ready.record(self._caller_stream)
        stream = self.decode_stream
        stream.wait_event(ready)
        with torch.cuda.stream(stream):
            for request in chunk:
                features = getattr(request, "features", None)
                if isinstance(features, torch.Tensor) and features.is_cuda:
                    features.record_stream(stream)
            states = self._encode(chunk)
            done = torch.cuda.Event()  # type: ignore[no-untyped-call]
            done.record(stream)
        return EncodedBatch(chunk, states, done)

    # ------------------------------------------------------------ admitting

    def ready(self, wait: bool) -> bool:
        """Whether the oldest encoded batch can be admitted now (``wait``: make it so)."""
        if not self._ready:
            return False
        event = self._ready[0].event
        if event is None or event.query():
            return True
        if wait:
            event.synchronize()
            return True
        return False

    def take(self, limit: int) -> tuple[list[Any], torch.Tensor]:
        """Up to ``limit`` windows of the oldest encoded batch, with their states.

        The caller uses the states on the current stream, which is made to
        wait for the encoder's event first (a no-op on the decode stream).
        """
        head = self._ready[0]
        count = min(limit, head.remaining)
        requests = head.requests[head.offset : head.offset + count]
        states = head.states[head.offset : head.offset + count]
        if head.event is not None:
            current = torch.cuda.current_stream(self.device)
            if current != self.decode_stream:
                current.wait_event(head.event)
                head.states.record_stream(current)
        head.offset += count
        if head.remaining == 0:
            self._ready.popleft()
        return requests, states
