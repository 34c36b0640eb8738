"""The insanely-fast-whisper recipe, called the way its CLI calls transformers.

insanely-fast-whisper's ``cli.py`` builds ``pipeline("automatic-speech-recognition",
model, torch_dtype=float16, device="cuda:0", model_kwargs={"attn_implementation":
"flash_attention_2" if --flash else "sdpa"})`` and calls it with
``chunk_length_s=30, batch_size=24, return_timestamps=True,
generate_kwargs={"task": "transcribe", "language": None}``. The pipeline cuts
30 s chunks that overlap by its default stride (5 s on each side), so 150
minutes become 450 chunks where steno decodes 300 windows.

For a fair count of work both sides decode the same fixed number of tokens per
window: here ``min_new_tokens = max_new_tokens = N`` (``<|endoftext|>`` held
back until N tokens, then stop), in steno ``fixed_new_tokens = N``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

RECIPE_BATCH = 24  # insanely-fast-whisper's default --batch-size
RECIPE_CHUNK_S = 30  # its chunk_length_s
SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class RecipeRun:
    """One timed call of the pipeline."""

    audio_s: float
    wall_s: float
    chunks: int  # windows the pipeline decoded
    encoded: int  # windows its encoder ran on
    decoder_steps_per_batch: float  # decoder forward calls per batch of chunks
    num_beams: int  # beams per chunk, read off the decoder's widest batch
    batch_size: int
    attention: str
    peak_gib: float


def load_tokenizer(directory: Path) -> Any:
    """A Whisper tokenizer from local files, with the pad token the pipeline's batching needs."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def recipe_pipeline(model: Any, tokenizer: Any, device: torch.device) -> Any:
    from transformers import WhisperFeatureExtractor, pipeline

    extractor = WhisperFeatureExtractor(  # type: ignore[no-untyped-call]
        feature_size=int(model.config.num_mel_bins)
    )
    return pipeline(
        "automatic-speech-recognition",
        model=model,
        tokenizer=tokenizer,
        feature_extractor=extractor,
        dtype=model.dtype,
        device=device,
    )


def run_recipe(asr: Any, audio: np.ndarray, new_tokens: int, device: torch.device,
               batch_size: int = RECIPE_BATCH, num_beams: int | None = None) -> RecipeRun:
    """Time one pipeline call over ``audio`` (16 kHz mono float32).

    ``num_beams`` None leaves the pipeline's default, as the CLI does (transformers
    5's ASR pipeline then searches with 5 beams unless the model's generation
    config says otherwise); a number overrides it.
    """
    generate_kwargs: dict[str, Any] = {
        "task": "transcribe",
        "language": None,
        "min_new_tokens": new_tokens,
        "max_new_tokens": new_tokens,
    }
    if num_beams is not None:
        generate_kwargs["num_beams"] = num_beams
    counter = _WorkCounter(asr.model)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    asr(
        {"raw": audio, "sampling_rate": SAMPLE_RATE},
        chunk_length_s=RECIPE_CHUNK_S,
        batch_size=batch_size,
        return_timestamps=True,
        generate_kwargs=generate_kwargs,
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - started
    counter.close()
    batches = -(-counter.chunks // batch_size)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return RecipeRun(
        audio_s=len(audio) / SAMPLE_RATE,
        wall_s=wall,
        chunks=counter.chunks,
        encoded=counter.encoded,
        decoder_steps_per_batch=counter.decoder_calls / max(1, batches),
        num_beams=max(1, counter.max_rows // min(batch_size, max(1, counter.chunks))),
        batch_size=batch_size,
        attention=str(asr.model.config._attn_implementation),
        peak_gib=peak,
    )


class _WorkCounter:
    """Counts the windows the pipeline's encoder sees and its decoder's forward calls."""

    def __init__(self, model: Any) -> None:
        self.chunks = 0  # windows handed to generate()
        self.encoded = 0  # windows through the encoder (it runs again to detect the language)
        self.decoder_calls = 0
        self.max_rows = 0
        self._model = model
        self._generate = model.generate

        def generate(*args: Any, **kwargs: Any) -> Any:
            features = kwargs.get("input_features", args[0] if args else None)
            self.chunks += int(features.shape[0]) if features is not None else 0
            return self._generate(*args, **kwargs)

        model.generate = generate
        self._handles = [
            model.model.encoder.register_forward_hook(self._encoded, with_kwargs=True),
            model.model.decoder.register_forward_hook(self._decoded, with_kwargs=True),
        ]

    def _encoded(self, module: Any, args: Any, kwargs: Any, output: Any) -> None:
        del module, output
        features = kwargs.get("input_features", args[0] if args else None)
        self.encoded += int(features.shape[0]) if features is not None else 0

    def _decoded(self, module: Any, args: Any, kwargs: Any, output: Any) -> None:
        del module, output
        self.decoder_calls += 1
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None:
            self.max_rows = max(self.max_rows, int(ids.shape[0]))

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        del self._model.generate  # back to the class's method
