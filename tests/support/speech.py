"""Real speech and synthesized speech with known timings, for the engine's tests.

Real human speech comes from Debian's ``pocketsphinx-testdata`` (LibriVox
readings and spoken card names, with reference transcripts). Synthetic speech
comes from ``flite``, which is byte-deterministic; its ``-psdur`` output gives
phone end times, from which word times are recovered by matching each word's
own phone string in order.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

POCKETSPHINX_DATA = Path("/usr/share/pocketsphinx/test/data")
LIBRIVOX_DIR = POCKETSPHINX_DATA / "librivox"
CARDS_DIR = POCKETSPHINX_DATA / "cards"
SAMPLE_RATE = 16000
_REF_LINE = re.compile(r"<s>\s*(.*?)\s*</s>\s*\(([^)]+)\)")


@dataclass(frozen=True)
class Utterance:
    path: Path
    reference: str


def _read_references(path: Path) -> dict[str, str]:
    refs: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = _REF_LINE.search(line)
        if match:
            refs[match.group(2)] = match.group(1)
    return refs


def librivox_utterances() -> list[Utterance]:
    refs = _read_references(LIBRIVOX_DIR / "transcription")
    return [Utterance(LIBRIVOX_DIR / f"{key}.wav", text) for key, text in sorted(refs.items())]


def cards_utterances() -> list[Utterance]:
    refs = _read_references(CARDS_DIR / "cards.transcription")
    return [Utterance(CARDS_DIR / f"{key}.wav", text) for key, text in sorted(refs.items())]


ALSA_SOUNDS_DIR = Path("/usr/share/sounds/alsa")


def alsa_utterances() -> list[Utterance]:
    """alsa-utils' spoken channel names (48 kHz): "Front_Left.wav" says "front left"."""
    paths = sorted(ALSA_SOUNDS_DIR.glob("*_*.wav"))
    return [Utterance(path, path.stem.replace("_", " ").lower()) for path in paths]


def have_pocketsphinx_data() -> bool:
    return (LIBRIVOX_DIR / "transcription").is_file() and (CARDS_DIR / "001.wav").is_file()


def normalize_text(text: str) -> str:
    """Lower case, digits spelled as the references spell them, no punctuation."""
    numbers = {"1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six",
               "7": "seven", "8": "eight", "9": "nine", "10": "ten"}
    text = text.lower().replace("-", " ")
    text = re.sub(r"\b(10|[1-9])\b", lambda m: numbers[m.group(1)], text)
    text = re.sub(r"[^a-z' ]+", " ", text)
    return " ".join(text.replace("mr ", "mister ").split())


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as handle:
        frames = handle.readframes(handle.getnframes())
        rate = handle.getframerate()
    if rate != SAMPLE_RATE:
        raise ValueError(f"{path}: expected 16 kHz, got {rate}")
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0


def write_wav(path: Path, audio: np.ndarray) -> None:
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        handle.writeframes(pcm.tobytes())


# ------------------------------------------------------------------- flite


@dataclass(frozen=True)
class TimedWord:
    text: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class TimedSentence:
    text: str
    start_s: float
    end_s: float
    words: tuple[TimedWord, ...]
    voice: str


def have_flite() -> bool:
    return shutil.which("flite") is not None


def _flite(text: str, voice: str, out: Path) -> list[tuple[str, float]]:
    result = subprocess.run(
        ["flite", "-voice", voice, "-psdur", "-t", text, "-o", str(out)],
        check=True, capture_output=True, text=True, timeout=60,
    )
    phones: list[tuple[str, float]] = []
    for item in result.stdout.split():
        name, _, end = item.rpartition(":")
        phones.append((name, float(end)))
    return phones


def _word_phones(word: str, voice: str, scratch: Path) -> list[str]:
    return [name for name, _ in _flite(word, voice, scratch) if name != "pau"]


def synthesize_sentence(text: str, voice: str, scratch: Path) -> tuple[np.ndarray, list[TimedWord]]:
    """Audio (16 kHz) of one sentence and the times of its words within it."""
    wav = scratch / "sentence.wav"
    phones = _flite(text, voice, wav)
    audio = _resample_to_16k(wav)
    words: list[TimedWord] = []
    cursor = 0
    starts = [0.0] + [end for _, end in phones[:-1]]
    for raw in text.split():
        word = re.sub(r"[^A-Za-z']", "", raw)
        expected = _word_phones(word, voice, scratch / "word.wav")
        while cursor < len(phones) and phones[cursor][0] == "pau":
            cursor += 1
        first = cursor
        cursor = min(len(phones), cursor + len(expected))
        if cursor > first:
            words.append(TimedWord(raw, starts[first], phones[cursor - 1][1]))
    return audio, words


def _resample_to_16k(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as handle:
        rate = handle.getframerate()
        data = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")
    audio = data.astype(np.float32) / 32768.0
    if rate == SAMPLE_RATE:
        return audio
    duration = audio.size / rate
    target = np.linspace(0.0, duration, int(duration * SAMPLE_RATE), endpoint=False)
    return np.interp(target, np.arange(audio.size) / rate, audio).astype(np.float32)


def synthesize_timeline(
    script: list[tuple[str, str]], gaps_s: list[float], scratch: Path, lead_s: float = 1.0
) -> tuple[np.ndarray, list[TimedSentence]]:
    """Sentences (voice, text) separated by the given silences, with every time known."""
    scratch.mkdir(parents=True, exist_ok=True)
    pieces = [np.zeros(int(lead_s * SAMPLE_RATE), dtype=np.float32)]
    cursor = lead_s
    sentences: list[TimedSentence] = []
    for index, (voice, text) in enumerate(script):
        audio, words = synthesize_sentence(text, voice, scratch)
        shifted = tuple(TimedWord(w.text, w.start_s + cursor, w.end_s + cursor) for w in words)
        sentences.append(TimedSentence(text, shifted[0].start_s, shifted[-1].end_s, shifted, voice))
        pieces.append(audio)
        cursor += audio.size / SAMPLE_RATE
        gap = gaps_s[index] if index < len(gaps_s) else 1.0
        pieces.append(np.zeros(int(gap * SAMPLE_RATE), dtype=np.float32))
        cursor += int(gap * SAMPLE_RATE) / SAMPLE_RATE
    return np.concatenate(pieces), sentences


# ------------------------------------------------------------------- dialogues


@dataclass(frozen=True)
class ReferenceTurn:
    """Who speaks when, as a diarization reference."""

    start_s: float
    end_s: float
    speaker: str


SILENCE_FLOOR_DB = 35.0  # frames this far below the loudest 10 ms frame count as silence


def speech_bounds(audio: np.ndarray, floor_db: float = SILENCE_FLOOR_DB) -> tuple[int, int]:
    """First and one-past-last sample of speech: leading and trailing silence trimmed by
    10 ms frame energy relative to the loudest frame."""
    hop = SAMPLE_RATE // 100
    frames = audio[: audio.size // hop * hop].reshape(-1, hop)
    energy_db = 10.0 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(energy_db > energy_db.max() - floor_db)
    if loud.size == 0:
        return 0, 0
    return int(loud[0] * hop), int(min(audio.size, (loud[-1] + 1) * hop))


def alternate_speakers(
    turns: list[tuple[str, np.ndarray]], gap_s: float, lead_s: float = 1.0
) -> tuple[np.ndarray, list[ReferenceTurn]]:
    """Clips (speaker, audio) laid end to end with ``gap_s`` of silence between them; each
    reference turn is the clip's speech with its own leading/trailing silence trimmed."""
    pieces = [np.zeros(int(lead_s * SAMPLE_RATE), dtype=np.float32)]
    cursor = pieces[0].size
    reference: list[ReferenceTurn] = []
    gap = np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.float32)
    for speaker, clip in turns:
        first, last = speech_bounds(clip)
        reference.append(
            ReferenceTurn((cursor + first) / SAMPLE_RATE, (cursor + last) / SAMPLE_RATE, speaker)
        )
        pieces += [clip.astype(np.float32), gap]
        cursor += clip.size + gap.size
    return np.concatenate(pieces), reference


def pocketsphinx_dialogue(gap_s: float = 1.0) -> tuple[np.ndarray, list[ReferenceTurn]]:
    """Real speech of two people, alternating: LibriVox reader, card caller, reader, ...
    (five utterances each, about 35 s of speech)."""
    reader = [read_wav(u.path) for u in librivox_utterances()]
    caller = [read_wav(u.path) for u in cards_utterances()]
    clips: list[tuple[str, np.ndarray]] = []
    for first, second in zip(reader, caller, strict=True):
        clips += [("reader", first), ("caller", second)]
    return alternate_speakers(clips, gap_s)


FLITE_DIALOGUE = (
    "Good morning, did you bring the quarterly report with you today?",
    "Yes, I printed two copies and left one on your desk before the meeting.",
    "Thank you. The numbers for the northern region look much better than last year.",
    "They do, mostly because the new warehouse opened in March and cut delivery times.",
    "Should we hire more drivers before the winter season starts?",
    "I think three more drivers would be enough, but we should ask the finance team first.",
    "Fine, let us schedule a call with them on Thursday afternoon.",
    "I will send the invitation right after lunch.",
)


def flite_dialogue(
    scratch: Path, voices: tuple[str, str] = ("awb", "slt"), gap_s: float = 1.2
) -> tuple[np.ndarray, list[ReferenceTurn]]:
    """Eight alternating sentences by two flite voices; reference turns from flite's own
    phone timings (first word start to last word end)."""
    script = [(voices[index % 2], text) for index, text in enumerate(FLITE_DIALOGUE)]
    audio, sentences = synthesize_timeline(script, [gap_s] * len(script), scratch)
    reference = [ReferenceTurn(s.start_s, s.end_s, s.voice) for s in sentences]
    return audio, reference
