"""Decoding any audio (or video) source to 16 kHz mono float32, streamed, with bounded memory.

Everything goes through PyAV, whose wheel carries FFmpeg, so a container format or
codec that FFmpeg reads works here; nothing shells out to an ``ffmpeg`` binary.

Sources (``AudioSource``): a filesystem path, ``bytes``-like data, a readable binary
file object (seekable or not), or ``RawPcm`` — headerless s16le/f32le samples with a
declared sample rate and channel count.

Design points:

* **Streaming.** ``iter_pcm_blocks`` demuxes packet by packet, decodes, and converts
  with one ``av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)``
  (flushed at the end), yielding blocks of ``block_s`` seconds. Memory is bounded by
  about two blocks plus FFmpeg's own buffers, whatever the length of the source.
  ``decode_audio`` is the same stream gathered into one array; it stops as soon as
  ``max_duration_s`` is exceeded, so a too-long source costs no more than the limit.
* **All bytes pass through ``_BoundedReader``**, also for paths (opened here, so a
  missing file is reported by Python and not guessed from an FFmpeg code). Until the
  first audio frame is decoded, reads stop at ``DecodeLimits.max_header_bytes``: a
  source whose headers (tags, cover art, index atoms) are larger than that fails
  cleanly instead of being parsed at any size. After the first frame there is no cap.
* **Errors**: only ``AudioError`` and its subclasses leave this module — never an
  ``av`` type. Each message is one line, ``"<source>: <problem>"``, and each class has
  a ``reason`` string for callers that map errors to status codes. An exception
  raised by a caller's own file object while reading (a dropped network stream, say)
  is re-raised as it is: that is a failure of the caller's storage, not of the audio
  (a read error on a path opened here becomes ``AudioUnreadableError``).
* **Damaged data.** A packet the decoder rejects is replaced by silence of the
  packet's duration, so later timestamps stay aligned with the source; more than
  ``DecodeLimits.max_corrupt_packets`` such packets raise ``CorruptAudioError``, and a
  demuxer failure mid-stream raises it at once. A source cut short (a truncated
  upload) decodes to the audio that is there, as ``ffmpeg`` would; the shortfall is
  logged when the container header declared a longer duration.
* **Same samples as ``ffmpeg -ac 1 -ar 16000``**, the command openai-whisper decodes
  with (bit-identical in float): the same swresample defaults, including its stereo
  downmix, which weighs each channel by 1/sqrt(2) rather than averaging.
* **Format changes mid-stream** (sample rate or layout, e.g. concatenated MP3s) get a
  fresh resampler after the old one is flushed, so no samples are lost.
"""

from __future__ import annotations

import io
import logging
import math
import os
import stat
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar, Literal, Protocol, TypeAlias

import av
import av.error
import numpy as np
import numpy.typing as npt
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.audio.stream import AudioStream
from av.container.input import InputContainer

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # Hz: what Whisper's feature extractor expects
DEFAULT_BLOCK_S = 30.0  # one Whisper window per block when gathering a whole source
MAX_HEADER_BYTES = 64 * 1024 * 1024  # 64 MiB read before the first audio frame, at most
PROBE_BYTES = 5_000_000  # FFmpeg's probesize for stream analysis (its default, made explicit)
MAX_CORRUPT_PACKETS = 32  # undecodable packets tolerated (as silence) before giving up
READ_BUFFER_BYTES = 64 * 1024  # size of each read FFmpeg asks of the source
TRUNCATION_WARN_S = 1.0  # decoded audio this much shorter than the header says is logged
MAX_RAW_SAMPLE_RATE = 384_000  # Hz: the highest rate of studio PCM; anything above is a mistake
MAX_RAW_CHANNELS = 64

PcmFormat = Literal["s16le", "f32le"]
PCM_FORMATS: tuple[PcmFormat, ...] = ("s16le", "f32le")
PCM_BYTES_PER_SAMPLE: dict[PcmFormat, int] = {"s16le": 2, "f32le": 4}

AudioArray: TypeAlias = npt.NDArray[np.float32]


class ReadableBinary(Protocol):
    """Any object with ``read(size) -> bytes``: open files, ``io.BytesIO``, HTTP bodies."""

    def read(self, size: int = ..., /) -> bytes: ...


# --------------------------------------------------------------------------- errors


class AudioError(ValueError):
    """A source could not be turned into audio. ``str(err)`` is ``"<source>: <problem>"``."""

    reason: ClassVar[str] = "invalid"

    def __init__(self, source_name: str, problem: str) -> None:
        super().__init__(f"{source_name}: {problem}")
        self.source_name = source_name
        self.problem = problem


class AudioNotFoundError(AudioError):
    """The path does not exist."""

    reason: ClassVar[str] = "missing"


class AudioUnreadableError(AudioError):
    """The path exists but cannot be read as a file (a directory, no permission)."""

    reason: ClassVar[str] = "unreadable"


class EmptyAudioError(AudioError):
    """The source has zero bytes."""

    reason: ClassVar[str] = "empty"


class NotAudioError(AudioError):
    """Not decodable as audio: unknown format, no audio stream, no decoder, huge header."""

    reason: ClassVar[str] = "not_audio"


class CorruptAudioError(AudioError):
    """Decoding started but the data is damaged past what can be skipped."""

    reason: ClassVar[str] = "corrupt"


class AudioTooLongError(AudioError):
    """The audio is longer than the caller's ``max_duration_s``."""

    reason: ClassVar[str] = "too_long"


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class RawPcm:
    """Headerless interleaved PCM samples and what they are; resampled to 16 kHz mono."""

    data: str | os.PathLike[str] | bytes | bytearray | memoryview | ReadableBinary
    sample_rate: int  # Hz of the samples as given
    channels: int = 1  # interleaved channels; averaged into mono
    sample_format: PcmFormat = "s16le"  # little-endian int16 or float32

    def __post_init__(self) -> None:
        name = display_name(self.data)
        if self.sample_format not in PCM_FORMATS:
            raise AudioError(
                name,
                f"raw sample format must be one of {', '.join(PCM_FORMATS)}, "
                f"not {self.sample_format!r}",
            )
        if not 1 <= self.sample_rate <= MAX_RAW_SAMPLE_RATE:
            raise AudioError(
                name, f"raw sample rate must be 1..{MAX_RAW_SAMPLE_RATE} Hz, not {self.sample_rate}"
            )
        if not 1 <= self.channels <= MAX_RAW_CHANNELS:
            raise AudioError(
                name, f"raw channel count must be 1..{MAX_RAW_CHANNELS}, not {self.channels}"
            )


AudioSource: TypeAlias = (
    str | os.PathLike[str] | bytes | bytearray | memoryview | ReadableBinary | RawPcm
)


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds on the work one source may cause; the defaults suit any real recording."""

    max_header_bytes: int = MAX_HEADER_BYTES  # bytes read before the first audio frame
    probe_bytes: int = PROBE_BYTES  # FFmpeg's stream-analysis budget
    max_corrupt_packets: int = MAX_CORRUPT_PACKETS  # skipped as silence before failing


DEFAULT_LIMITS = DecodeLimits()


def display_name(source: AudioSource) -> str:
    """How messages name a source: the path as given, a file object's name, or a tag."""
    if isinstance(source, RawPcm):
        return display_name(source.data)
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    if isinstance(source, bytes | bytearray | memoryview):
        return "<bytes>"
    name = getattr(source, "name", None)
    return name if isinstance(name, str) and name else "<stream>"


class _BoundedReader:
    """The file object FFmpeg reads through: counts bytes, caps the header phase.

    Reads past the cap return EOF (not an exception, which FFmpeg could swallow or
    misreport) and set ``header_limit_hit``. A failing ``read`` of the caller's object
    is recorded the same way and re-raised by the caller of FFmpeg.
    """

    def __init__(self, raw: ReadableBinary, header_limit_bytes: int, *, owned: bool) -> None:
        self._raw = raw
        self._owned = owned  # a file this module opened from a path
        self._header_limit_bytes = header_limit_bytes
        self.bytes_read = 0
        self.header_phase = True
        self.header_limit_hit = False
        self.read_error: BaseException | None = None
        seekable = getattr(raw, "seekable", None)
        self._seekable = bool(
            hasattr(raw, "seek") and hasattr(raw, "tell") and (seekable is None or seekable())
        )

    def read(self, size: int = -1) -> bytes:
        if self.header_phase:
            left = self._header_limit_bytes - self.bytes_read
            if left <= 0:
                self.header_limit_hit = True
                return b""
            size = left if size < 0 else min(size, left)
        try:
            data = self._raw.read(size)
        except Exception as exc:  # handed back to FFmpeg as EOF, re-raised afterwards
            self.read_error = exc
            return b""
        self.bytes_read += len(data)
        return bytes(data)

    def seekable(self) -> bool:
        return self._seekable

    def raise_if_read_failed(self, name: str) -> None:
        """Re-raise a failed read: for a path opened here as ``AudioUnreadableError``
        (only AudioError leaves for paths), for a caller's file object as it was."""
        exc = self.read_error
        if exc is None:
            return
        if self._owned:
            raise AudioUnreadableError(name, f"read failed ({exc})") from exc
        raise exc from None

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        result: int = self._raw.seek(offset, whence)  # type: ignore[attr-defined]
        return result

    def tell(self) -> int:
        result: int = self._raw.tell()  # type: ignore[attr-defined]
        return result


class _Opened:
    """An open container, its first audio stream and the reader under it."""

    def __init__(
        self,
        name: str,
        container: InputContainer,
        stream: AudioStream,
        reader: _BoundedReader,
        owned_file: io.BufferedReader | None,
    ) -> None:
        self.name = name
        self.container = container
        self.stream = stream
        self.reader = reader
        self._owned_file = owned_file

    def close(self) -> None:
        try:
            self.container.close()
        finally:
            if self._owned_file is not None:
                self._owned_file.close()


def _open_path(path: str | os.PathLike[str], name: str) -> io.BufferedReader:
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by _Opened.close
    except FileNotFoundError as exc:
        raise AudioNotFoundError(name, "file not found") from exc
    except IsADirectoryError as exc:
        raise AudioUnreadableError(name, "is a directory, not a file") from exc
    except PermissionError as exc:
        raise AudioUnreadableError(name, "permission denied") from exc
    except OSError as exc:
        raise AudioUnreadableError(name, f"cannot open ({exc.strerror or exc})") from exc
    info = os.fstat(handle.fileno())
    # Only a regular file's size is meaningful: a FIFO reports 0 and may still deliver data.
    if stat.S_ISREG(info.st_mode) and info.st_size == 0:
        handle.close()
        raise EmptyAudioError(name, "file is empty (0 bytes)")
    return handle


def _empty_problem(source: AudioSource) -> str:
    data = source.data if isinstance(source, RawPcm) else source
    return (
        "file is empty (0 bytes)"
        if isinstance(data, str | os.PathLike)
        else "input is empty (0 bytes)"
    )


def _ffmpeg_message(exc: av.error.FFmpegError) -> str:
    return str(exc.strerror or type(exc).__name__)


def _open(source: AudioSource, name: str | None, limits: DecodeLimits) -> _Opened:
    """Open ``source`` and pick its first audio stream, or raise the fitting AudioError."""
    shown = name or display_name(source)
    raw_pcm = source if isinstance(source, RawPcm) else None
    data = raw_pcm.data if raw_pcm is not None else source
    if isinstance(data, RawPcm):  # RawPcm(data=RawPcm(...)) is not a thing
        raise AudioError(shown, "raw PCM data cannot itself be a RawPcm")

    owned: io.BufferedReader | None = None
    readable: ReadableBinary
    if isinstance(data, str | os.PathLike):
        owned = _open_path(data, shown)
        readable = owned
    elif isinstance(data, bytes | bytearray | memoryview):
        if len(data) == 0:
            raise EmptyAudioError(shown, "input is empty (0 bytes)")
        readable = io.BytesIO(data)
    elif callable(getattr(data, "read", None)):
        readable = data
    else:
        raise AudioError(shown, f"unsupported source type {type(data).__name__}")

    reader = _BoundedReader(readable, limits.max_header_bytes, owned=owned is not None)
    container_options = {"probesize": str(limits.probe_bytes)}
    container_format: str | None = None
    if raw_pcm is not None:
        container_format = raw_pcm.sample_format
        container_options.update(
            sample_rate=str(raw_pcm.sample_rate), ch_layout=f"{raw_pcm.channels}c"
        )
    try:
        container = av.open(
            reader,
            mode="r",
            format=container_format,
            container_options=container_options,
            buffer_size=READ_BUFFER_BYTES,
        )
    except av.error.FFmpegError as exc:
        if owned is not None:
            owned.close()
        reader.raise_if_read_failed(shown)
        if reader.bytes_read == 0 and not reader.header_limit_hit:
            raise EmptyAudioError(shown, _empty_problem(source)) from None
        if reader.header_limit_hit:
            raise NotAudioError(
                shown, f"header is larger than the {_mib(limits.max_header_bytes)} limit"
            ) from None
        raise NotAudioError(
            shown, f"not a recognized audio or video format ({_ffmpeg_message(exc)})"
        ) from None
    except BaseException:
        if owned is not None:
            owned.close()
        raise

    audio_streams = list(container.streams.audio)
    if not audio_streams:
        kinds = sorted({stream.type for stream in container.streams})
        container.close()
        if owned is not None:
            owned.close()
        reader.raise_if_read_failed(shown)
        if not kinds:
            raise NotAudioError(shown, "no audio stream")
        detail = f"{kinds[0]} only" if len(kinds) == 1 else "only " + ", ".join(kinds)
        raise NotAudioError(shown, f"no audio stream ({detail})")
    return _Opened(shown, container, audio_streams[0], reader, owned)


def _mib(n_bytes: int) -> str:
    return f"{n_bytes / (1024 * 1024):g} MiB"


# --------------------------------------------------------------------------- decoding


def _frame_key(frame: AudioFrame) -> tuple[str, str, int]:
    return (frame.format.name, frame.layout.name, frame.sample_rate)


def _new_resampler() -> AudioResampler:
    return AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)


def _as_mono(frame: AudioFrame) -> AudioArray:
    # flt + mono is packed, one plane of shape (1, samples); copy out of FFmpeg's buffer.
    return np.asarray(frame.to_ndarray(), dtype=np.float32).reshape(-1).copy()


def _packet_samples(duration: int | None, time_base: Fraction | None) -> int:
    """Samples at 16 kHz covered by a packet, or 0 when the container does not say."""
    if not duration or time_base is None:
        return 0
    seconds = float(duration * time_base)
    return max(0, round(seconds * SAMPLE_RATE)) if math.isfinite(seconds) else 0


def _iter_mono_chunks(opened: _Opened, limits: DecodeLimits) -> Iterator[AudioArray]:
    """16 kHz mono float32 chunks of whatever size the decoder and resampler produce."""
    name, container, stream, reader = opened.name, opened.container, opened.stream, opened.reader
    resampler: AudioResampler | None = None
    resampler_key: tuple[str, str, int] | None = None
    corrupt_packets = 0
    emitted = 0  # samples at 16 kHz handed out so far, for positions in messages

    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.error.FFmpegError as exc:
            reader.raise_if_read_failed(name)
            raise CorruptAudioError(
                name, f"corrupt data at {emitted / SAMPLE_RATE:.2f} s ({_ffmpeg_message(exc)})"
            ) from None
        try:
            frames = packet.decode()
        except av.error.DecoderNotFoundError:
            raise NotAudioError(
                name, f"no decoder for codec {stream.codec_context.name!r}"
            ) from None
        except av.error.FFmpegError as exc:
            corrupt_packets += 1
            if corrupt_packets > limits.max_corrupt_packets:
                raise CorruptAudioError(
                    name,
                    f"corrupt audio data: more than {limits.max_corrupt_packets} undecodable "
                    f"packets, the last at {emitted / SAMPLE_RATE:.2f} s "
                    f"({_ffmpeg_message(exc)})",
                ) from None
            # Silence in place of the lost packet keeps later timestamps where they were.
            gap = _packet_samples(packet.duration, packet.time_base)
            if gap:
                emitted += gap
                yield np.zeros(gap, dtype=np.float32)
            continue
        for frame in frames:
            reader.header_phase = False  # real audio arrived: the header cap has done its job
            key = _frame_key(frame)
            if resampler is None or key != resampler_key:
                if resampler is not None:  # parameters changed mid-stream: drain the old one
                    for out in resampler.resample(None):
                        chunk = _as_mono(out)
                        emitted += chunk.size
                        yield chunk
                resampler, resampler_key = _new_resampler(), key
            for out in resampler.resample(frame):
                chunk = _as_mono(out)
                emitted += chunk.size
                yield chunk

    reader.raise_if_read_failed(name)
    if reader.header_limit_hit and reader.header_phase:
        raise NotAudioError(
            name, f"no audio within the first {_mib(limits.max_header_bytes)} (header limit)"
        )
    if resampler is not None:
        for out in resampler.resample(None):
            chunk = _as_mono(out)
            emitted += chunk.size
            yield chunk
    if corrupt_packets:
        logger.warning("%s: %d undecodable packets replaced by silence", name, corrupt_packets)
    declared_s = _declared_duration_s(container, stream)
    if declared_s is not None and declared_s - emitted / SAMPLE_RATE > TRUNCATION_WARN_S:
        logger.warning(
            "%s: header declares %.2f s but the data ends at %.2f s (truncated?)",
            name,
            declared_s,
            emitted / SAMPLE_RATE,
        )


def _declared_duration_s(container: InputContainer, stream: AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _block_samples(block_s: float) -> int:
    if not (math.isfinite(block_s) and block_s > 0):
        raise ValueError(f"block_s must be a positive number of seconds, not {block_s!r}")
    return max(1, round(block_s * SAMPLE_RATE))


def iter_pcm_blocks(
    source: AudioSource,
    block_s: float = DEFAULT_BLOCK_S,
    *,
    name: str | None = None,
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> Generator[AudioArray, None, None]:
    """Consecutive 16 kHz mono float32 blocks of ``block_s`` seconds; the last may be shorter.

    Memory stays near two blocks whatever the source's length. ``name`` overrides how
    messages name the source (e.g. an ``s3://`` URI for a streamed object). Raises
    ``AudioError`` subclasses, possibly after some blocks were already yielded (damage
    found mid-stream). A consumer that stops early should ``close()`` the generator
    (or let it be collected): that closes the source.
    """
    block_samples = _block_samples(block_s)
    opened = _open(source, name, limits)
    try:
        pending: list[AudioArray] = []
        pending_samples = 0
        for chunk in _iter_mono_chunks(opened, limits):
            pending.append(chunk)
            pending_samples += chunk.size
            if pending_samples < block_samples:
                continue
            joined = np.concatenate(pending)
            start = 0
            while joined.size - start >= block_samples:
                yield joined[start : start + block_samples]
                start += block_samples
            rest = joined[start:]
            pending = [rest] if rest.size else []
            pending_samples = rest.size
        if pending_samples:
            yield np.concatenate(pending)
    finally:
        opened.close()


def decode_audio(
    source: AudioSource,
    max_duration_s: float | None = None,
    *,
    name: str | None = None,
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> AudioArray:
    """The whole source as one 16 kHz mono float32 array.

    With ``max_duration_s``, decoding stops with ``AudioTooLongError`` as soon as the
    audio passes the limit, so the work is bounded by the limit, not by the source.
    For long sources prefer ``iter_pcm_blocks``: this holds the whole result.
    """
    max_samples: int | None = None
    if max_duration_s is not None:
        if not (math.isfinite(max_duration_s) and max_duration_s > 0):
            raise ValueError(
                f"max_duration_s must be a positive number of seconds, not {max_duration_s!r}"
            )
        max_samples = math.floor(max_duration_s * SAMPLE_RATE)
    blocks: list[AudioArray] = []
    total = 0
    for block in iter_pcm_blocks(source, DEFAULT_BLOCK_S, name=name, limits=limits):
        total += block.size
        if max_samples is not None and total > max_samples:
            raise AudioTooLongError(
                name or display_name(source),
                f"audio is longer than the {max_duration_s:g} s limit",
            )
        blocks.append(block)
    if not blocks:
        return np.zeros(0, dtype=np.float32)
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def decode_pcm(
    data: bytes | bytearray | memoryview | ReadableBinary | str | os.PathLike[str],
    *,
    sample_rate: int,
    channels: int = 1,
    sample_format: PcmFormat = "s16le",
    max_duration_s: float | None = None,
    name: str | None = None,
) -> AudioArray:
    """Headerless PCM (s16le or f32le, interleaved) to 16 kHz mono float32.

    A trailing partial sample frame is ignored, as FFmpeg's raw demuxers do.
    """
    raw = RawPcm(data, sample_rate=sample_rate, channels=channels, sample_format=sample_format)
    return decode_audio(raw, max_duration_s, name=name)


def probe_duration_s(
    source: AudioSource,
    *,
    name: str | None = None,
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> float | None:
    """The audio's duration from container metadata, without decoding; None when unknown.

    Some formats only estimate it (MP3 without a Xing header: from the bitrate), so
    use it for progress and scheduling, not for exact lengths. Raises ``AudioError``
    for sources that are missing, empty or hold no audio.
    """
    opened = _open(source, name, limits)
    try:
        return _declared_duration_s(opened.container, opened.stream)
    finally:
        opened.close()
