"""Whisper's special tokens and decoding rules, read once from a model's configs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TIME_PER_TIMESTAMP_S = 0.02  # one timestamp token step: 2 encoder frames of 10 ms
MAX_INITIAL_TIMESTAMP_INDEX = 50  # the first segment starts within 1.0 s of the window


@dataclass(frozen=True)
class WhisperTokens:
    """Token ids and suppression lists that steer decoding."""

    eot: int  # <|endoftext|>
    sot: int  # <|startoftranscript|>
    no_timestamps: int  # <|notimestamps|>
    no_speech: int  # <|nospeech|> (multilingual) or <|nocaptions|> (.en)
    timestamp_begin: int  # <|0.00|>
    transcribe: int | None
    translate: int | None
    language_ids: dict[str, int]  # "en" -> id of <|en|>
    suppress: tuple[int, ...]  # never generated
    begin_suppress: tuple[int, ...]  # not generated as the first text token
    max_initial_timestamp_index: int
    is_multilingual: bool
    alignment_heads: tuple[tuple[int, int], ...]  # (layer, head) pairs that track time
    max_target_positions: int  # 448: the decoder's learned positions

    @classmethod
    def from_generation_config(cls, config: Any, max_target_positions: int) -> WhisperTokens:
        lang_to_id: dict[str, int] = dict(getattr(config, "lang_to_id", None) or {})
        task_to_id: dict[str, int] = dict(getattr(config, "task_to_id", None) or {})
        no_timestamps = int(config.no_timestamps_token_id)
        languages = {token.strip("<|>"): int(i) for token, i in lang_to_id.items()}
        heads = getattr(config, "alignment_heads", None) or []
        eos = config.eos_token_id
        eot = int(eos[0] if isinstance(eos, list) else eos)
        max_initial = getattr(config, "max_initial_timestamp_index", None)
        return cls(
            eot=eot,
            sot=int(config.decoder_start_token_id),
            no_timestamps=no_timestamps,
            no_speech=no_timestamps - 1,
            timestamp_begin=no_timestamps + 1,
            transcribe=task_to_id.get("transcribe"),
            translate=task_to_id.get("translate"),
            language_ids=languages,
            suppress=tuple(int(t) for t in (config.suppress_tokens or [])),
            begin_suppress=tuple(int(t) for t in (config.begin_suppress_tokens or [])),
            max_initial_timestamp_index=int(
                MAX_INITIAL_TIMESTAMP_INDEX if max_initial is None else max_initial
            ),
            is_multilingual=bool(getattr(config, "is_multilingual", bool(languages))),
            alignment_heads=tuple((int(layer), int(head)) for layer, head in heads),
            max_target_positions=max_target_positions,
        )

    def language_code(self, token_id: int) -> str | None:
        for code, value in self.language_ids.items():
            if value == token_id:
                return code
        return None
