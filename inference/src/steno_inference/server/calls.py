"""Plain data of a call, shared by the server's core, the protobuf conversions and the client.

Nothing here imports the engine, torch or grpc, so the Python client can use
the same types without loading a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from steno_inference.options import OutputFormat, TranscribeOptions

# The engine's steno_inference.audio.PcmFormat, spelled out so importing this needs no PyAV.
PcmEncodingName = Literal["s16le", "f32le"]


@dataclass(frozen=True)
class RawPcmSpec:
    """Headerless PCM as the caller declared it; checked by the engine's ``RawPcm``."""

    sample_rate_hz: int
    channels: int = 1
    sample_format: PcmEncodingName = "s16le"


@dataclass(frozen=True)
class AudioInput:
    """One source of a unary call: bytes or a URI."""

    name: str  # how messages and the transcript name the source
    data: bytes | None = None
    uri: str | None = None
    raw_pcm: RawPcmSpec | None = None


@dataclass(frozen=True)
class CallOptions:
    """What to do with the audio."""

    options: TranscribeOptions
    model: str = ""  # empty: the served model
    formats: tuple[OutputFormat, ...] = ()


@dataclass(frozen=True)
class CallTiming:
    """Time the server spent on a call."""

    queue_wait_s: float  # admission to the first decoded window
    processing_s: float  # admission to the last
