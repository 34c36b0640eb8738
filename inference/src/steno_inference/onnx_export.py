"""Export a Whisper model to two ONNX graphs, once, into the cache; optionally int8.

The ONNX backend (:mod:`steno_inference.onnx_runner`) runs steno's own
decode loop, so it needs graphs shaped for that loop rather than the
``generate()``-shaped graphs optimum exports:

* ``encoder.onnx``: log-mel ``features (batch, n_mels, 3000)`` →
  ``encoded (batch, 1500, d_model)`` and, for every decoder layer ``i``, the
  cross-attention keys ``cross_k_i (batch, heads, head_dim, 1500)`` (already
  transposed for the product with the query) and values ``cross_v_i (batch,
  heads, 1500, head_dim)``, computed once per window.
* ``decoder.onnx``: one step for ``batch`` windows, each at its own
  position: ``tokens (batch,)``, ``positions (batch,)``, per layer the
  self-attention cache ``self_k_i``/``self_v_i (batch, heads, past,
  head_dim)`` and the cross-attention keys and values → float32 ``logits
  (batch, vocab)`` and the new token's ``new_k``/``new_v (batch, layers,
  heads, head_dim)``, which the host writes into its cache. One input per
  layer, not one stacked tensor: slicing a layer out of a stacked input is a
  copy in ONNX Runtime, and the cross-attention keys and values are most of
  a step's bytes (147 MB per step for 8 tiny.en windows). Cache entries at
  or past a row's position are masked, so rows at different positions share one call (continuous
  batching), and ``past`` is at least 1 (ONNX Runtime and zero-length axes do
  not mix well).

Why not optimum: ``optimum-onnx`` 0.1 pins ``transformers<4.58`` and would
replace the transformers 5 that the rest of steno runs on, and its
decoder-with-past graph takes one position for the whole batch. The graphs
here are written with ``torch.onnx.export`` from the model's own modules,
with the same arithmetic as :mod:`steno_inference.decoder_pass` (pre-norm,
query scaled before the product), so fp32 tokens equal the torch backend's.

int8 quantizes the decoder's weights of every ``MatMul`` (its linear layers
and the output projection) to int8 in blocks of :data:`INT8_BLOCK_SIZE` along the
input axis, one scale per block, as ONNX Runtime's ``MatMulNBits``;
activations are quantized to int8 on the fly, per row and block
(``accuracy_level`` 4), so the products run on int8 units. Convolutions,
embeddings, norms and attention stay float32. Not ONNX Runtime's
``quantize_dynamic``: it quantizes each activation tensor with one scale for
the whole batch, so a window's tokens would depend on which other windows
shared its decoder step (seen: different transcripts of the same file from
run to run under continuous batching). Here a row's result never depends on
the other rows. The encoder stays fp32: its products have 1500 rows per
window, where ONNX Runtime's fp32 GEMM beat the int8 path on 2 cores (0.32
against 0.43 s per tiny.en window), while a decoder step of a few rows ran
in half the time with int8 weights (3.8 against 7.1 ms for 2 windows).

Cache layout: an export lands next to the converted model when the model
lives in steno's cache (``<cache>/models/<name>-<digest>.onnx-v<N>/``), else
in ``<cache>/onnx/<name>-<digest>/``, with ``fp32/`` and ``int8/`` inside.
Each precision is published atomically: written into a hidden temporary
directory and renamed into place, so readers see all of it or nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

LOG = logging.getLogger(__name__)

Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "int8")
EXPORT_VERSION = 4  # bump when the graphs' inputs, outputs or arithmetic change
OPSET = 17  # LayerNormalization is a single op from opset 17 on
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
GRAPH_FILES = (ENCODER_FILE, DECODER_FILE)
MODELS_SUBDIR = "models"  # where steno's converter puts models (models/conversion_cache)
ONNX_SUBDIR = "onnx"  # exports of models that live outside steno's cache
DIGEST_PREFIX_LENGTH = 16
INT8_BITS = 8
# Weights per scale: 32 kept the fixtures' WER equal to fp32's (tiny.en, base).
INT8_BLOCK_SIZE = 32
# MatMulNBits accuracy level 4: activations quantized to int8 per block, int8 products.
INT8_ACCURACY_LEVEL = 4
QUANTIZED_GRAPHS = (DECODER_FILE,)  # the encoder is faster in fp32 (see the module docstring)
TEMP_PREFIX = ".onnx-export-"
# A masked attention logit: large enough to vanish in softmax, finite so that
# no row ever computes inf - inf.
MASKED_LOGIT = -1e9
# Example sizes for tracing; every axis named in _DYNAMIC_* is symbolic.
_EXAMPLE_BATCH = 2
_EXAMPLE_PAST = 3


class ExportError(RuntimeError):
    """The model could not be exported or quantized."""


class EncoderGraph(nn.Module):
    """Features → encoder states and every decoder layer's cross-attention keys/values."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.encoder = model.model.encoder
        self.cross = nn.ModuleList(layer.encoder_attn for layer in model.model.decoder.layers)
        first = model.model.decoder.layers[0].encoder_attn
        self.n_heads = int(first.num_heads)
        self.head_dim = int(first.head_dim)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        encoded = self.encoder(features).last_hidden_state
        batch, frames = encoded.shape[0], encoded.shape[1]
        shape = (batch, frames, self.n_heads, self.head_dim)
        out = [encoded]
        attn: Any
        for attn in self.cross:
            out.append(attn.k_proj(encoded).view(shape).permute(0, 2, 3, 1).contiguous())
            out.append(attn.v_proj(encoded).view(shape).transpose(1, 2).contiguous())
        return tuple(out)


class DecoderStepGraph(nn.Module):
    """One decoder step for rows at their own positions (the arithmetic of DecoderPass)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.decoder = model.model.decoder
        first = self.decoder.layers[0].self_attn
        self.n_heads = int(first.num_heads)
        self.head_dim = int(first.head_dim)

    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor, *caches: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``caches``: per layer self_k, self_v, cross_k (transposed), cross_v."""
        decoder = self.decoder
        batch = tokens.shape[0]
        heads, head_dim = self.n_heads, self.head_dim
        # (batch, 1, d): a sequence axis of one keeps every Linear a MatMul, which
        # ONNX Runtime's dynamic quantization handles (it leaves Gemm alone).
        x = (decoder.embed_tokens(tokens) + decoder.embed_positions.weight[positions])[:, None]
        past = caches[0].shape[2]
        keys = torch.arange(past, device=tokens.device)
        visible = keys[None, :] < positions[:, None]  # cache entries before the new token
        bias = torch.where(visible, 0.0, MASKED_LOGIT).to(x.dtype)
        # The new token always sees itself: one more key, never masked.
        bias = torch.cat([bias, torch.zeros_like(bias[:, :1])], dim=1)[:, None, None, :]
        new_keys, new_values = [], []
        for index, layer in enumerate(decoder.layers):
            self_k, self_v, cross_k, cross_v = caches[4 * index : 4 * index + 4]
            attn = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            q = (attn.q_proj(h) * attn.scaling).view(batch, 1, heads, head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(batch, 1, heads, head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(batch, 1, heads, head_dim).transpose(1, 2)
            new_keys.append(k[:, :, 0])
            new_values.append(v[:, :, 0])
            all_k = torch.cat([self_k, k], dim=2)
            all_v = torch.cat([self_v, v], dim=2)
            weights = torch.softmax(q @ all_k.transpose(-1, -2) + bias, dim=-1)
            out = (weights @ all_v).transpose(1, 2).reshape(batch, 1, heads * head_dim)
            x = x + attn.out_proj(out)
            cross = layer.encoder_attn
            h = layer.encoder_attn_layer_norm(x)
            q = (cross.q_proj(h) * cross.scaling).view(batch, 1, heads, head_dim).transpose(1, 2)
            weights = torch.softmax(q @ cross_k, dim=-1)
            out = (weights @ cross_v).transpose(1, 2).reshape(batch, 1, heads * head_dim)
            x = x + cross.out_proj(out)
            h = layer.final_layer_norm(x)
            x = x + layer.fc2(layer.activation_fn(layer.fc1(h)))
        x = decoder.layer_norm(x)
        logits = (x @ decoder.embed_tokens.weight.T)[:, 0]
        return logits.float(), torch.stack(new_keys, dim=1), torch.stack(new_values, dim=1)


DECODER_OUTPUTS = ("logits", "new_k", "new_v")


def cache_names(n_layers: int) -> list[str]:
    """The decoder's per-layer cache inputs, in order (the encoder's outputs after the first)."""
    return [f"{kind}_{i}" for i in range(n_layers)
            for kind in ("self_k", "self_v", "cross_k", "cross_v")]


def cross_names(n_layers: int) -> list[str]:
    return [name for name in cache_names(n_layers) if name.startswith("cross_")]


def export_dir(model_path: Path, cache_dir: Path, precision: Precision) -> Path:
    """Where the graphs of ``model_path`` at ``precision`` live (whether or not exported yet)."""
    model_path = model_path.resolve()
    models_dir = (cache_dir / MODELS_SUBDIR).resolve()
    if model_path.parent == models_dir:
        # steno's converter names its entries by content digest: the name is the key.
        return model_path.parent / f"{model_path.name}.onnx-v{EXPORT_VERSION}" / precision
    digest = hashlib.sha256(f"v{EXPORT_VERSION}\0{model_path}".encode())
    for path in sorted(p for p in model_path.iterdir() if p.is_file()):
        stat = path.stat()  # size and mtime: a changed model gets a fresh export
        digest.update(f"\0{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    name = f"{model_path.name}-{digest.hexdigest()[:DIGEST_PREFIX_LENGTH]}"
    return cache_dir / ONNX_SUBDIR / name / precision


def ensure_exported(model_path: Path, cache_dir: Path, precision: Precision) -> Path:
    """The directory holding ``encoder.onnx`` and ``decoder.onnx``; exports them on first use."""
    if precision not in PRECISIONS:
        raise ExportError(f"unknown ONNX precision {precision!r}: use fp32 or int8")
    target = export_dir(model_path, cache_dir, precision)
    if _complete(target):
        return target
    if precision == "int8":
        source = ensure_exported(model_path, cache_dir, "fp32")
        _publish(target, lambda tmp: quantize_graphs(source, tmp))
    else:
        _publish(target, lambda tmp: export_graphs(model_path, tmp))
    return target


def export_graphs(model_path: Path, out_dir: Path) -> None:
    """Write fp32 ``encoder.onnx`` and ``decoder.onnx`` for the model in ``model_path``."""
    from transformers import WhisperForConditionalGeneration

    # Eager attention: the exported encoder is plain MatMul/Softmax, which every
    # ONNX Runtime build runs and its quantizer understands.
    model: Any = WhisperForConditionalGeneration.from_pretrained(
        str(model_path), dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    config = model.config
    encoder = EncoderGraph(model).eval()
    step = DecoderStepGraph(model).eval()
    n_mels, n_frames = int(config.num_mel_bins), 2 * int(config.max_source_positions)
    layers = len(model.model.decoder.layers)
    heads, head_dim = step.n_heads, step.head_dim
    frames = int(config.max_source_positions)
    b = _EXAMPLE_BATCH
    features = torch.zeros(b, n_mels, n_frames)
    self_kv = torch.zeros(b, heads, _EXAMPLE_PAST, head_dim)
    cross_k = torch.zeros(b, heads, head_dim, frames)
    cross_v = torch.zeros(b, heads, frames, head_dim)
    caches = [self_kv, self_kv, cross_k, cross_v] * layers
    tokens = torch.zeros(b, dtype=torch.long)
    positions = torch.tensor([_EXAMPLE_PAST - 1, 0][:b], dtype=torch.long)
    batch = {0: "batch"}
    crosses = cross_names(layers)
    encoder_dynamic = {name: batch for name in ["features", "encoded", *crosses]}
    decoder_dynamic = {name: batch for name in ["tokens", "positions", *crosses,
                                                *DECODER_OUTPUTS]}
    for name in cache_names(layers):
        if name.startswith("self_"):
            decoder_dynamic[name] = {0: "batch", 2: "past"}
    LOG.info("exporting %s to ONNX in %s", model_path, out_dir)
    with torch.inference_mode():
        _export(encoder, (features,), out_dir / ENCODER_FILE, ["features"],
                ["encoded", *crosses], encoder_dynamic)
        _export(step, (tokens, positions, *caches), out_dir / DECODER_FILE,
                ["tokens", "positions", *cache_names(layers)], list(DECODER_OUTPUTS),
                decoder_dynamic)


def _export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    dynamic: dict[str, dict[int, str]],
) -> None:
    # The TorchScript exporter: it traces these plain modules in seconds and
    # needs no onnxscript; the weights go into the graph file itself (< 2 GB).
    torch.onnx.export(
        module, args, str(path), input_names=inputs, output_names=outputs,
        dynamic_axes=dynamic, opset_version=OPSET, do_constant_folding=True, dynamo=False,
    )


def quantize_graphs(fp32_dir: Path, out_dir: Path) -> None:
    """Blockwise int8 weights (MatMulNBits) for the decoder's MatMuls; the encoder as it is."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (  # type: ignore[import-untyped]
        MatMulNBitsQuantizer,
    )

    for name in GRAPH_FILES:
        if name not in QUANTIZED_GRAPHS:
            shutil.copyfile(fp32_dir / name, out_dir / name)
            continue
        quantizer = MatMulNBitsQuantizer(
            onnx.load(str(fp32_dir / name)), bits=INT8_BITS, block_size=INT8_BLOCK_SIZE,
            is_symmetric=True, accuracy_level=INT8_ACCURACY_LEVEL,
        )
        quantizer.process()
        quantizer.model.save_model_to_file(str(out_dir / name), use_external_data_format=False)


def _complete(directory: Path) -> bool:
    return all((directory / name).is_file() for name in GRAPH_FILES)


def _publish(target: Path, build: Any) -> None:
    """Build into a temporary sibling, then rename it into place (the loser of a race discards)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f"{TEMP_PREFIX}{target.name}-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        build(tmp)
        if not _complete(tmp):
            raise ExportError(f"export into {tmp} left no {' and '.join(GRAPH_FILES)}")
        try:
            tmp.rename(target)
        except OSError:
            if not _complete(target):
                raise
            LOG.info("another process exported %s first", target)
    except Exception as error:
        if isinstance(error, ExportError):
            raise
        raise ExportError(f"ONNX export to {target} failed: {error}") from error
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
