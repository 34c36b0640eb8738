"""steno_inference.audio on real recordings and on files encoded here with PyAV.

Speech comes from Debian's pocketsphinx-testdata and alsa-utils; compressed formats
are made from one of those WAVs in the test, so every expected length is known.
"""

from __future__ import annotations

import glob
import io
import json
import os
import shutil
import subprocess
import sys
import wave
import zlib
from pathlib import Path
from typing import cast

import av
import av.error
import numpy as np
import numpy.typing as npt
import pytest
from av.audio.stream import AudioStream
from steno_inference import audio
from steno_inference.audio import (
    SAMPLE_RATE,
    AudioError,
    AudioNotFoundError,
    AudioTooLongError,
    AudioUnreadableError,
    CorruptAudioError,
    DecodeLimits,
    EmptyAudioError,
    NotAudioError,
    RawPcm,
    decode_audio,
    decode_pcm,
    iter_pcm_blocks,
    probe_duration_s,
)

pytestmark = pytest.mark.integration

LIBRIVOX = sorted(glob.glob("/usr/share/pocketsphinx/test/data/librivox/*.wav"))
FRONT_CENTER = Path("/usr/share/sounds/alsa/Front_Center.wav")  # 48 kHz mono s16
GOFORWARD_RAW = Path("/usr/share/pocketsphinx/test/data/goforward.raw")  # 16 kHz mono s16le
SPEECH_WAV = Path(LIBRIVOX[0]) if LIBRIVOX else Path("/missing-librivox.wav")
SRC_DIR = Path(__file__).resolve().parents[2] / "inference" / "src"
DURATION_TOLERANCE_S = 0.050

needs_testdata = pytest.mark.skipif(
    not LIBRIVOX or not FRONT_CENTER.exists() or not GOFORWARD_RAW.exists(),
    reason="Debian pocketsphinx-testdata and alsa-utils are not installed",
)


def _wav_samples(path: Path) -> tuple[npt.NDArray[np.int16], int, int]:
    with wave.open(str(path), "rb") as wav:
        assert wav.getsampwidth() == 2
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        return data, wav.getframerate(), wav.getnchannels()


def _check_clean_error(exc: BaseException) -> None:
    assert isinstance(exc, AudioError)
    assert not isinstance(exc, av.error.FFmpegError)
    assert "\n" not in str(exc)


def _encode(src: Path, dst: Path, container: str, codec: str, rate: int) -> None:
    """Re-encode ``src`` into ``dst`` with PyAV (mono, ``rate`` Hz)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format=container) as out:
        stream = cast(AudioStream, out.add_stream(codec, rate=rate, layout="mono"))
        resampler = av.AudioResampler(format=stream.codec_context.format, layout="mono", rate=rate)
        frames = [f for fr in inp.decode(audio=0) for f in resampler.resample(fr)]
        for frame in [*frames, *resampler.resample(None)]:
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def _png_1x1() -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        return len(body).to_bytes(4, "big") + kind + body + crc

    ihdr = (1).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    idat = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# ---------------------------------------------------------------- real recordings


@needs_testdata
@pytest.mark.parametrize("path", LIBRIVOX, ids=[Path(p).name for p in LIBRIVOX])
def test_librivox_wav_is_bit_exact(path: str) -> None:
    samples, rate, channels = _wav_samples(Path(path))
    assert (rate, channels) == (SAMPLE_RATE, 1)
    decoded = decode_audio(path)
    assert decoded.dtype == np.float32 and decoded.ndim == 1
    # 16 kHz mono s16 needs only a format conversion: every sample must survive exactly.
    np.testing.assert_array_equal(decoded, samples.astype(np.float32) / 32768.0)
    assert probe_duration_s(path) == pytest.approx(samples.size / SAMPLE_RATE, abs=1e-3)


@needs_testdata
def test_48khz_wav_resampled_to_16khz() -> None:
    samples, rate, _ = _wav_samples(FRONT_CENTER)
    assert rate == 48000
    decoded = decode_audio(FRONT_CENTER)
    assert decoded.size == pytest.approx(samples.size / 3, abs=2)
    assert decoded.size / SAMPLE_RATE == pytest.approx(1.428, abs=0.001)
    # Resampling keeps the speech's energy (it lies well below the new 8 kHz Nyquist).
    source_rms = float(np.sqrt(np.mean((samples / 32768.0) ** 2)))
    decoded_rms = float(np.sqrt(np.mean(decoded.astype(np.float64) ** 2)))
    assert decoded_rms == pytest.approx(source_rms, rel=0.05)
    # And the waveform matches the source decimated by 3 (no shift, no scaling).
    reference = (samples / 32768.0)[::3][: decoded.size]
    correlation = float(np.corrcoef(reference, decoded[: reference.size])[0, 1])
    assert correlation > 0.9


@needs_testdata
def test_raw_pcm_goforward() -> None:
    data = GOFORWARD_RAW.read_bytes()
    expected = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    decoded = decode_pcm(data, sample_rate=16000)
    np.testing.assert_array_equal(decoded, expected)
    assert decoded.size / SAMPLE_RATE == pytest.approx(2.786, abs=0.001)
    # The same through every kind of source and through f32le.
    np.testing.assert_array_equal(decode_audio(RawPcm(GOFORWARD_RAW, sample_rate=16000)), expected)
    with GOFORWARD_RAW.open("rb") as handle:
        np.testing.assert_array_equal(decode_pcm(handle, sample_rate=16000), expected)
    as_f32 = expected.astype("<f4").tobytes()
    np.testing.assert_array_equal(
        decode_pcm(as_f32, sample_rate=16000, sample_format="f32le"), expected
    )
    assert probe_duration_s(RawPcm(data, sample_rate=16000)) == pytest.approx(2.786, abs=0.001)


@needs_testdata
def test_raw_pcm_stereo_8khz_is_downmixed_and_upsampled() -> None:
    mono = np.frombuffer(GOFORWARD_RAW.read_bytes(), dtype="<i2")[::2]  # 8 kHz, crudely
    stereo = np.stack([mono, mono], axis=1).reshape(-1).astype("<i2").tobytes()
    decoded = decode_pcm(stereo, sample_rate=8000, channels=2)
    assert decoded.size == pytest.approx(mono.size * 2, abs=2)
    # FFmpeg's stereo→mono matrix weighs each channel by 1/sqrt(2) (a -3 dB pan law), so
    # two identical channels come out sqrt(2) louder: what `ffmpeg -ac 1` gives Whisper.
    rms_in = float(np.sqrt(np.mean((mono / 32768.0) ** 2)))
    rms_out = float(np.sqrt(np.mean(decoded.astype(np.float64) ** 2)))
    assert rms_out == pytest.approx(rms_in * np.sqrt(2), rel=0.05)


def _ffmpeg_cli_f32(args: list[str], stdin: bytes | None = None) -> npt.NDArray[np.float32]:
    """openai-whisper's decoding command, with float output instead of s16."""
    command = ["ffmpeg", "-nostdin", "-v", "error", "-threads", "0", *args]
    command += ["-f", "f32le", "-ac", "1", "-ar", str(SAMPLE_RATE), "-"]
    output = subprocess.run(command, input=stdin, capture_output=True, check=True).stdout
    return np.frombuffer(output, dtype="<f4")


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the ffmpeg command is not installed")
@needs_testdata
def test_matches_the_ffmpeg_command_whisper_uses() -> None:
    np.testing.assert_array_equal(
        decode_audio(FRONT_CENTER), _ffmpeg_cli_f32(["-i", str(FRONT_CENTER)])
    )
    mono = np.frombuffer(GOFORWARD_RAW.read_bytes(), dtype="<i2")[::2]
    stereo = np.stack([mono, -mono // 2], axis=1).reshape(-1).astype("<i2").tobytes()
    np.testing.assert_array_equal(
        decode_pcm(stereo, sample_rate=8000, channels=2),
        _ffmpeg_cli_f32(["-f", "s16le", "-ar", "8000", "-ac", "2", "-i", "-"], stdin=stereo),
    )


def test_raw_pcm_parameters_are_checked() -> None:
    with pytest.raises(AudioError, match="sample rate"):
        RawPcm(b"\0\0", sample_rate=0)
    with pytest.raises(AudioError, match="channel count"):
        RawPcm(b"\0\0", sample_rate=16000, channels=0)
    with pytest.raises(AudioError, match="sample format"):
        RawPcm(b"\0\0", sample_rate=16000, sample_format="s24le")  # type: ignore[arg-type]


# ---------------------------------------------------------------- compressed formats

FORMATS = {  # extension: (container, codec, encoder sample rate)
    "mp3": ("mp3", "libmp3lame", 16000),
    "ogg": ("ogg", "libopus", 48000),
    "flac": ("flac", "flac", 16000),
    "m4a": ("ipod", "aac", 16000),
}


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not LIBRIVOX:
        pytest.skip("pocketsphinx-testdata is not installed")
    folder = tmp_path_factory.mktemp("encoded")
    paths = {}
    for ext, (container, codec, rate) in FORMATS.items():
        paths[ext] = folder / f"speech.{ext}"
        _encode(SPEECH_WAV, paths[ext], container, codec, rate)
    return paths


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_compressed_formats_keep_duration(encoded: dict[str, Path], ext: str) -> None:
    source_samples, _, _ = _wav_samples(SPEECH_WAV)
    source_s = source_samples.size / SAMPLE_RATE
    decoded = decode_audio(encoded[ext])
    assert decoded.size / SAMPLE_RATE == pytest.approx(source_s, abs=DURATION_TOLERANCE_S)
    probed = probe_duration_s(encoded[ext])
    assert probed is not None
    assert probed == pytest.approx(source_s, abs=DURATION_TOLERANCE_S)
    # Lossy, but recognisably the same speech at the same level.
    rms_in = float(np.sqrt(np.mean((source_samples / 32768.0) ** 2)))
    rms_out = float(np.sqrt(np.mean(decoded.astype(np.float64) ** 2)))
    assert rms_out == pytest.approx(rms_in, rel=0.2)


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_path_bytes_and_file_objects_agree(encoded: dict[str, Path], ext: str) -> None:
    from_path = decode_audio(encoded[ext])
    data = encoded[ext].read_bytes()
    np.testing.assert_array_equal(decode_audio(data), from_path)
    np.testing.assert_array_equal(decode_audio(io.BytesIO(data)), from_path)
    with encoded[ext].open("rb") as handle:
        np.testing.assert_array_equal(decode_audio(handle), from_path)


class _NonSeekable:
    """A network-like body: read() only."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._inner.read(size)


def test_non_seekable_stream(encoded: dict[str, Path]) -> None:
    data = encoded["flac"].read_bytes()
    decoded = decode_audio(_NonSeekable(data))
    np.testing.assert_array_equal(decoded, decode_audio(data))


@pytest.mark.parametrize("block_s", [0.5, 1.0, 30.0])
@pytest.mark.parametrize("ext", ["mp3", "m4a"])
def test_streamed_blocks_equal_full_decode(
    encoded: dict[str, Path], ext: str, block_s: float
) -> None:
    blocks = list(iter_pcm_blocks(encoded[ext], block_s))
    block_samples = round(block_s * SAMPLE_RATE)
    assert all(b.size == block_samples for b in blocks[:-1])
    assert 0 < blocks[-1].size <= block_samples
    assert all(b.dtype == np.float32 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), decode_audio(encoded[ext]))


def test_stopping_a_stream_early_closes_the_file(encoded: dict[str, Path]) -> None:
    fd_dir = Path("/proc/self/fd")
    before = len(list(fd_dir.iterdir()))
    for _ in range(20):
        blocks = iter_pcm_blocks(encoded["mp3"], 0.5)
        next(blocks)
        blocks.close()
    assert len(list(fd_dir.iterdir())) <= before


def test_invalid_block_size() -> None:
    with pytest.raises(ValueError, match="block_s"):
        next(iter_pcm_blocks(b"irrelevant", 0.0))


def test_max_duration(encoded: dict[str, Path]) -> None:
    with pytest.raises(AudioTooLongError, match=r"speech\.flac: audio is longer than the 2 s"):
        decode_audio(encoded["flac"], max_duration_s=2.0)
    assert decode_audio(encoded["flac"], max_duration_s=60.0).size > 2 * SAMPLE_RATE


# ---------------------------------------------------------------- what is not audio


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.wav"
    with pytest.raises(AudioNotFoundError) as info:
        decode_audio(missing)
    assert str(info.value) == f"{missing}: file not found"
    assert info.value.reason == "missing"
    _check_clean_error(info.value)
    with pytest.raises(AudioNotFoundError):
        probe_duration_s(str(missing))


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(AudioUnreadableError, match="is a directory"):
        decode_audio(tmp_path)


def test_zero_length_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(EmptyAudioError) as info:
        decode_audio(empty)
    assert str(info.value) == f"{empty}: file is empty (0 bytes)"
    assert info.value.reason == "empty"
    with pytest.raises(EmptyAudioError, match=r"^empty\.wav: file is empty \(0 bytes\)$"):
        decode_audio(empty, name="empty.wav")
    with pytest.raises(EmptyAudioError, match=r"^<bytes>: input is empty"):
        decode_audio(b"")
    with pytest.raises(EmptyAudioError, match=r"^<stream>: input is empty"):
        decode_audio(_NonSeekable(b""))
    with pytest.raises(EmptyAudioError):
        decode_pcm(b"", sample_rate=16000)


def test_text_file_is_not_audio(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("These are meeting notes, not a recording.\n" * 20)
    with pytest.raises(NotAudioError) as info:
        decode_audio(notes)
    assert str(info.value).startswith(f"{notes}: ")
    assert info.value.reason == "not_audio"
    _check_clean_error(info.value)


def test_random_bytes_are_not_audio() -> None:
    noise = np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    with pytest.raises(NotAudioError, match=r"^upload: "):
        decode_audio(noise, name="upload")


def test_png_is_not_audio(tmp_path: Path) -> None:
    image = tmp_path / "cover.png"
    image.write_bytes(_png_1x1())
    with pytest.raises(NotAudioError) as info:
        decode_audio(image)
    assert str(info.value) == f"{image}: no audio stream (video only)"


def test_video_only_file(tmp_path: Path) -> None:
    video = tmp_path / "talk.mp4"
    with av.open(str(video), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuv420p"
        for _ in range(10):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with pytest.raises(NotAudioError) as info:
        decode_audio(video, name="talk.mp4")
    assert str(info.value) == "talk.mp4: no audio stream (video only)"
    with pytest.raises(NotAudioError, match="video only"):
        probe_duration_s(video)


# ---------------------------------------------------------------- damaged data


def test_truncated_header_is_not_audio() -> None:
    head = FRONT_CENTER.read_bytes()[:30]
    with pytest.raises(NotAudioError, match=r"^clip\.wav: not a recognized"):
        decode_audio(head, name="clip.wav")


@pytest.mark.parametrize("ext", ["mp3", "flac"])
def test_truncated_body_decodes_what_is_there(
    encoded: dict[str, Path], ext: str, caplog: pytest.LogCaptureFixture
) -> None:
    data = encoded[ext].read_bytes()
    full_s = decode_audio(data).size / SAMPLE_RATE
    half_s = decode_audio(data[: len(data) // 2], name=f"cut.{ext}").size / SAMPLE_RATE
    assert 0.3 * full_s < half_s < 0.7 * full_s
    assert f"cut.{ext}: header declares" in caplog.text  # the shortfall is reported


def _with_garbage(data: bytes, garbage_bytes: int) -> bytes:
    middle = len(data) // 2
    garbage = np.random.default_rng(1).integers(0, 256, garbage_bytes, dtype=np.uint8).tobytes()
    return data[: middle - garbage_bytes // 2] + garbage + data[middle + garbage_bytes // 2 :]


def test_small_damage_is_silenced_in_place(encoded: dict[str, Path]) -> None:
    data = encoded["m4a"].read_bytes()
    clean = decode_audio(data)
    damaged = decode_audio(_with_garbage(data, 2000))
    # Lost packets come back as silence of their length: later audio keeps its time.
    assert damaged.size == clean.size
    np.testing.assert_array_equal(damaged[-SAMPLE_RATE:], clean[-SAMPLE_RATE:])
    assert not np.array_equal(damaged, clean)


def test_heavy_damage_mid_stream_is_corrupt(encoded: dict[str, Path]) -> None:
    data = _with_garbage(encoded["m4a"].read_bytes(), 30_000)
    with pytest.raises(CorruptAudioError) as info:
        decode_audio(data, name="talk.m4a")
    message = str(info.value)
    assert message.startswith("talk.m4a: corrupt audio data: more than 32 undecodable packets")
    assert info.value.reason == "corrupt"
    _check_clean_error(info.value)
    # A stricter limit turns even the small damage into an error.
    with pytest.raises(CorruptAudioError):
        decode_audio(
            _with_garbage(encoded["m4a"].read_bytes(), 2000),
            limits=DecodeLimits(max_corrupt_packets=0),
        )


def test_streamed_corruption_fails_after_good_blocks(encoded: dict[str, Path]) -> None:
    data = _with_garbage(encoded["m4a"].read_bytes(), 30_000)
    good: list[int] = []
    with pytest.raises(CorruptAudioError):
        for block in iter_pcm_blocks(data, 0.5):
            good.append(block.size)
    assert good  # the undamaged start was delivered before the error


def _id3_with_picture(picture_bytes: int) -> bytes:
    def syncsafe(n: int) -> bytes:
        return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])

    body = b"\x00image/png\x00\x03\x00" + bytes(picture_bytes)
    frame = b"APIC" + len(body).to_bytes(4, "big") + b"\x00\x00" + body
    return b"ID3\x03\x00\x00" + syncsafe(len(frame)) + frame


def test_huge_header_fails_cleanly(encoded: dict[str, Path]) -> None:
    tagged = _id3_with_picture(3 * 1024 * 1024) + encoded["mp3"].read_bytes()
    expected = decode_audio(encoded["mp3"])
    np.testing.assert_array_equal(decode_audio(tagged), expected)  # under the default limit
    small = DecodeLimits(max_header_bytes=1024 * 1024)
    for source in (tagged, io.BytesIO(tagged), _NonSeekable(tagged)):
        with pytest.raises(NotAudioError, match="header is larger than the 1 MiB limit"):
            decode_audio(source, limits=small)
    assert audio.MAX_HEADER_BYTES == 64 * 1024 * 1024


class _FailingReader:
    def __init__(self, data: bytes, fail_after: int) -> None:
        self._inner = io.BytesIO(data)
        self._fail_after = fail_after

    def read(self, size: int = -1) -> bytes:
        if self._inner.tell() >= self._fail_after:
            raise ConnectionResetError("peer went away")
        return self._inner.read(size)


def test_read_errors_of_the_callers_stream_propagate_as_they_are(
    encoded: dict[str, Path],
) -> None:
    data = encoded["flac"].read_bytes()
    with pytest.raises(ConnectionResetError, match="peer went away"):
        decode_audio(_FailingReader(data, len(data) // 2))
    with pytest.raises(ConnectionResetError):
        decode_audio(_FailingReader(data, 0))


# ---------------------------------------------------------------- a long source


def _write_hour_flac(path: Path, rate: int = 8000, hours: float = 1.0) -> int:
    """An hour of quiet tone, encoded a minute at a time (FLAC level 0: fast)."""
    minute = rate * 60
    t = np.arange(minute) / rate
    tone = (0.1 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16).reshape(1, -1)
    minutes = round(hours * 60)
    with av.open(str(path), "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout="mono")
        stream.codec_context.options = {"compression_level": "0"}
        for i in range(minutes):
            frame = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
            frame.sample_rate = rate
            frame.pts = i * minute
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return minutes * 60


STREAM_CHILD = r"""
import json, resource, sys
import numpy as np
from steno_inference.audio import iter_pcm_blocks

def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

path = sys.argv[1]
for _ in iter_pcm_blocks(path, 30.0):  # warm-up: libraries, codec tables, first buffers
    break
base = peak_mib()
total = blocks = 0
for block in iter_pcm_blocks(path, 30.0):
    total += block.size
    blocks += 1
    peak = float(np.abs(block).max())
print(json.dumps({"base_mib": base, "peak_mib": peak_mib(), "samples": total,
                  "blocks": blocks, "last_peak": peak}))
"""


def test_streaming_an_hour_keeps_memory_bounded(tmp_path: Path) -> None:
    path = tmp_path / "hour.flac"
    seconds = _write_hour_flac(path)
    env = {**os.environ, "PYTHONPATH": str(SRC_DIR)}
    # A fresh process, so the peak RSS it reports belongs to the streaming alone.
    child = subprocess.run(
        [sys.executable, "-c", STREAM_CHILD, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(child.stdout)
    assert result["samples"] == seconds * SAMPLE_RATE
    assert result["blocks"] == seconds // 30
    assert result["last_peak"] == pytest.approx(0.1, abs=0.01)
    whole_mib = seconds * SAMPLE_RATE * 4 / 2**20  # 220 MiB if it were all held at once
    growth_mib = result["peak_mib"] - result["base_mib"]
    assert growth_mib < 32, f"RSS grew {growth_mib:.1f} MiB streaming {whole_mib:.0f} MiB"


class _FailingFile(io.FileIO):
    """A local file whose disk fails after its first kilobyte."""

    def read(self, size: int | None = -1) -> bytes:
        if self.tell() >= 1024:
            raise OSError(5, "Input/output error")
        return super().read(size)


def test_read_error_on_a_path_is_an_audio_error(
    encoded: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audio, "open", lambda path, mode: _FailingFile(path, "r"), raising=False)
    with pytest.raises(AudioUnreadableError, match=r"speech\.flac: read failed \(.*Input/output"):
        decode_audio(encoded["flac"])
