"""Every default limit of the server and client in one place, with its unit (docs/grpc.md).

Kept free of heavy imports so ``steno --help`` and the client read them
without loading grpc's server side, torch or the engine.
"""

from __future__ import annotations

MIB = 1024 * 1024

DEFAULT_PORT = 50051
DEFAULT_MAX_AUDIO_BYTES = 25 * MIB  # one Transcribe request's audio (~13 min of 16 kHz s16 WAV)
ENVELOPE_BYTES = 64 * 1024  # options, names and protobuf framing around the audio
MAX_SEND_MESSAGE_BYTES = 64 * MIB  # a long transcript rendered in every format
DEFAULT_MAX_QUEUE_AUDIO_S = 600.0  # ten minutes of audio accepted and not yet decoded
DEFAULT_LONG_CALL_RESERVE_S = 60.0  # two Whisper windows: longer calls are paced
DEFAULT_GRACE_S = 30.0  # in-flight calls' time to finish on SIGTERM (a pod's default grace)
DEFAULT_MAX_CONCURRENT_CALLS = 64  # transcription calls at once
CONTROL_CALL_HEADROOM = 16  # health, info and progress calls beyond the transcription cap
DEFAULT_METRICS_PORT = 9090
