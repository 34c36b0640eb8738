"""Whisper model shapes and random-weight models of them, built without downloads.

Token ids follow the released checkpoints: multilingual models put
``<|endoftext|>`` at 50257, the language tokens after ``<|startoftranscript|>``
(99 of them, 100 from large-v3 on, which added Cantonese), then translate,
transcribe, start-of-LM, start-of-previous, no-speech, no-timestamps, and
1501 timestamp tokens (0.00 s to 30.00 s in 0.02 s steps) ending the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from steno_inference.tokens import WhisperTokens

N_TIMESTAMPS = 1501  # <|0.00|> … <|30.00|>
MULTILINGUAL_EOT = 50257
MAX_TARGET_POSITIONS = 448
MAX_SOURCE_POSITIONS = 1500
# Whisper's non-speech suppress list has about 90 ids; on random weights only
# its presence matters (a step applies it as one precomputed mask).
SUPPRESS_TOKENS = (
    1, 2, 7, 8, 9, 10, 14, 25, 26, 27, 28, 29, 31, 58, 59, 60, 61, 62, 63, 90, 91, 92, 93,
    359, 503, 522, 542, 873, 893, 902, 918, 922, 931, 1350, 1853, 1982, 2460, 2627, 3246,
    3253, 3268, 3536, 3846, 3961, 4183, 4667, 6585, 6647, 7273, 9061, 9383, 10428, 10929,
    11938, 12033, 12331, 12562, 13793, 14157, 14635, 15265, 15618, 16553, 16604, 18362,
    18956, 20075, 21675, 22520, 26130, 26161, 26435, 28279, 29464, 31650, 32302, 32470,
    36865, 42863, 47425, 49870, 50254,
)
BEGIN_SUPPRESS_TOKENS = (220, MULTILINGUAL_EOT)  # " " and <|endoftext|>


@dataclass(frozen=True)
class WhisperShape:
    """The sizes that set a Whisper model's cost."""

    name: str
    d_model: int
    encoder_layers: int
    decoder_layers: int
    heads: int
    n_mels: int
    n_languages: int  # 99 before large-v3, 100 from it

    @property
    def vocab(self) -> int:
        # 50257 text tokens + <|endoftext|>, <|startoftranscript|>, languages,
        # 6 task/control tokens, then the timestamps.
        return MULTILINGUAL_EOT + 2 + self.n_languages + 6 + N_TIMESTAMPS


SHAPES = {
    shape.name: shape
    for shape in (
        WhisperShape("tiny", 384, 4, 4, 6, 80, 99),
        WhisperShape("base", 512, 6, 6, 8, 80, 99),
        WhisperShape("small", 768, 12, 12, 12, 80, 99),
        WhisperShape("medium", 1024, 24, 24, 16, 80, 99),
        WhisperShape("large-v3", 1280, 32, 32, 20, 128, 100),
        WhisperShape("large-v3-turbo", 1280, 32, 4, 20, 128, 100),
        WhisperShape("distil-large-v3", 1280, 32, 2, 20, 128, 100),
        # A toy of the large-v3 layout for CPU smoke tests of the benchmark itself.
        WhisperShape("toy", 64, 2, 2, 2, 128, 100),
    )
}


def language_codes(n_languages: int) -> list[str]:
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return list(LANGUAGES)[:n_languages]


def generation_config(shape: WhisperShape) -> Any:
    """A GenerationConfig with the released checkpoints' token ids for this shape."""
    from transformers import GenerationConfig

    eot = MULTILINGUAL_EOT
    sot = eot + 1
    codes = language_codes(shape.n_languages)
    lang_to_id = {f"<|{code}|>": sot + 1 + i for i, code in enumerate(codes)}
    translate = sot + 1 + shape.n_languages
    no_timestamps = translate + 5  # translate, transcribe, startoflm, startofprev, nospeech
    return GenerationConfig(  # type: ignore[no-untyped-call]
        decoder_start_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        bos_token_id=eot,
        no_timestamps_token_id=no_timestamps,
        prev_sot_token_id=translate + 3,
        lang_to_id=lang_to_id,
        task_to_id={"translate": translate, "transcribe": translate + 1},
        is_multilingual=True,
        # The task and control tokens are never generated either.
        suppress_tokens=[*SUPPRESS_TOKENS, *range(translate, no_timestamps)],
        begin_suppress_tokens=list(BEGIN_SUPPRESS_TOKENS),
        max_initial_timestamp_index=50,
        max_length=MAX_TARGET_POSITIONS,
        alignment_heads=[[shape.decoder_layers - 1, 0]],
    )


def random_model(shape: WhisperShape, device: torch.device, dtype: torch.dtype,
                 attention: str = "sdpa", seed: int = 0) -> Any:
    """A WhisperForConditionalGeneration of ``shape`` with random weights, on ``device``."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    gen = generation_config(shape)
    config = WhisperConfig(
        vocab_size=shape.vocab,
        num_mel_bins=shape.n_mels,
        d_model=shape.d_model,
        encoder_layers=shape.encoder_layers,
        decoder_layers=shape.decoder_layers,
        encoder_attention_heads=shape.heads,
        decoder_attention_heads=shape.heads,
        encoder_ffn_dim=4 * shape.d_model,
        decoder_ffn_dim=4 * shape.d_model,
        max_source_positions=MAX_SOURCE_POSITIONS,
        max_target_positions=MAX_TARGET_POSITIONS,
        decoder_start_token_id=gen.decoder_start_token_id,
        eos_token_id=gen.eos_token_id,
        pad_token_id=gen.pad_token_id,
        bos_token_id=gen.bos_token_id,
        suppress_tokens=gen.suppress_tokens,
        begin_suppress_tokens=gen.begin_suppress_tokens,
    )
    config._attn_implementation = attention
    torch.manual_seed(seed)
    with torch.device(device):
        model: Any = WhisperForConditionalGeneration(config)
    model = model.to(dtype=dtype).eval()
    model.generation_config = gen
    return model


def model_tokens(model: Any) -> WhisperTokens:
    return WhisperTokens.from_generation_config(
        model.generation_config, int(model.config.max_target_positions)
    )
