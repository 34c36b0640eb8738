"""Batch planning, graph buckets, int8 cross-attention and replicas, on the CPU."""

from __future__ import annotations

import pytest
import torch
from steno_inference import int8_cross_attention
from steno_inference.batching import CPU_SLOTS, plan_batch
from steno_inference.benchmarking.shapes import SHAPES, model_tokens, random_model
from steno_inference.cuda_graphs import batch_buckets, round_up
from steno_inference.decoder_pass import DecoderPass
from steno_inference.replicas import ReplicaPool
from steno_inference.runner import DecodeRequest, WhisperRunner

pytestmark = pytest.mark.unit


def test_batch_buckets_cover_every_size_and_end_at_the_slot_count() -> None:
    for slots in (1, 7, 32, 218, 512):
        buckets = batch_buckets(slots)
        assert buckets[-1] == slots
        assert list(buckets) == sorted(set(buckets))
        for busy in range(1, slots + 1):
            assert busy <= round_up(busy, buckets) <= slots


def test_int8_cross_kv_halves_the_bytes_of_a_large_v3_slot() -> None:
    fp16 = DecoderPass.bytes_per_slot(32, 20, 64, 448, 2)
    int8 = DecoderPass.bytes_per_slot(32, 20, 64, 448, 2, int8_cross_kv=True)
    self_cache = 2 * 32 * 20 * 64 * 448 * 2
    assert (int8 - self_cache) / (fp16 - self_cache) == pytest.approx(66 / 128)


def test_beams_share_a_windows_cross_attention_bytes() -> None:
    self_cache = 2 * 32 * 20 * 64 * 448 * 2
    cross = DecoderPass.bytes_per_slot(32, 20, 64, 448, 2) - self_cache
    beam_row = DecoderPass.bytes_per_slot(32, 20, 64, 448, 2, beam=5)
    assert beam_row == self_cache + cross // 5
    # int8 keys and values are kept per beam: the int8 kernel reads one query per row.
    int8_row = DecoderPass.bytes_per_slot(32, 20, 64, 448, 2, int8_cross_kv=True, beam=5)
    assert int8_row == DecoderPass.bytes_per_slot(32, 20, 64, 448, 2, int8_cross_kv=True)


def test_int8_attention_is_close_to_fp32_attention() -> None:
    torch.manual_seed(0)
    q = torch.randn(3, 4, 64) * 0.2
    k, v = torch.randn(3, 4, 1500, 64), torch.randn(3, 4, 1500, 64)
    k8, ks = int8_cross_attention.quantize(k)
    v8, vs = int8_cross_attention.quantize(v)
    exact = torch.softmax(torch.einsum("bhd,bhtd->bht", q, k), -1)
    exact = torch.einsum("bht,bhtd->bhd", exact, v)
    approx = int8_cross_attention.attention(q, k8, ks, v8, vs)
    assert ((approx - exact).norm() / exact.norm()).item() < 0.02


def test_cpu_plan_is_a_small_fixed_batch() -> None:
    model = random_model(SHAPES["toy"], torch.device("cpu"), torch.float32)
    plan = plan_batch(model, torch.float32, torch.device("cpu"), 448)
    assert plan.slots == CPU_SLOTS


def test_replicas_share_windows_and_give_single_runner_tokens() -> None:
    device = torch.device("cpu")
    model = random_model(SHAPES["toy"], device, torch.float32)
    tokens = model_tokens(model)
    features = torch.randn(10, 128, 3000)
    requests = [DecodeRequest(i, features[i], None, fixed_new_tokens=6) for i in range(10)]
    pool = ReplicaPool([WhisperRunner(model, tokens, device, torch.float32, 4) for _ in range(2)])
    shared = {r.key: r.tokens for r in pool.decode(requests)}
    single = {r.key: r.tokens for r in WhisperRunner(model, tokens, device, torch.float32, 4)
              .decode(requests)}
    assert shared == single
    assert all(len(t) == 6 for t in shared.values())
    assert sum(pool.windows_per_replica) == 10
