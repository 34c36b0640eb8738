"""The fused greedy choice kernel against the PyTorch rules, in Triton's interpreter on the CPU.

The kernel runs only on GPUs in the engine; ``TRITON_INTERPRET=1`` executes
the same kernel source on CPU tensors, so its rules, tie-breaking and
log-probabilities are checked here against :meth:`SlotState._rules` for rows
in every state the rules distinguish: first token, after text, after a lone
timestamp and after a pair, a held end-of-text, and timestamps forced by
their total probability.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.unit

SCRIPT = textwrap.dedent("""
    import json
    import torch
    from steno_inference import greedy_choice
    from steno_inference.benchmarking.shapes import SHAPES, generation_config
    from steno_inference.slot_state import SlotState
    from steno_inference.tokens import WhisperTokens

    shape = SHAPES["tiny"]
    tokens = WhisperTokens.from_generation_config(generation_config(shape), 448)
    tb = tokens.timestamp_begin
    b = 12
    out = []
    for seed in (0, 1):
        state = SlotState(b, tokens, shape.vocab, torch.device("cpu"))
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(b, shape.vocab, generator=g) * 3
        logits[3:7, tb:] += 6.0  # timestamps carry most of the mass: forced
        logits[8, 500] = logits[8, 501] = 40.0  # an exact tie: the lower id wins
        logits[[2, 9], tokens.eot] = 50.0  # row 2 holds end-of-text back, row 9 may end
        state.gen_count[:] = torch.tensor([0, 1, 2, 5, 0, 3, 7, 2, 9, 1, 4, 6])
        state.last_token[:] = torch.tensor(
            [-1, tb + 3, 100, tb + 9, -1, 200, tb + 20, tb + 5, 300, 400, tb + 40, 500])
        state.prev_token[:] = torch.tensor(
            [-1, -1, tb + 2, tb + 8, -1, tb + 4, 300, 150, tb + 30, 60, 70, tb + 50])
        state.last_stamp[:] = torch.tensor(
            [-1, tb + 3, tb + 2, tb + 9, -1, tb + 4, tb + 20, tb + 5, tb + 30, -1, tb + 40,
             tb + 50])
        state.fixed_new_tokens[:] = torch.tensor([0, 0, 10, 0, 3, 0, 0, 5, 0, 0, 0, 100])
        scores = state._rules(logits, b)
        best = scores.argmax(dim=-1)
        logprob = torch.log_softmax(scores, dim=-1).gather(1, best[:, None])[:, 0]
        fused = greedy_choice.choose(logits, state._row_state(b), state._static_suppress,
                                     state._begin_suppress, tokens)
        forced = [bool(torch.isinf(scores[i, :tb]).all()) for i in range(b)]
        out.append({"best": best.tolist(), "fused_best": fused[0].tolist(),
                    "logprob": logprob.tolist(), "fused_logprob": fused[1].tolist(),
                    "normalizer": torch.logsumexp(logits, dim=-1).tolist(),
                    "fused_normalizer": fused[2].tolist(), "forced": forced, "tb": tb,
                    "eot": tokens.eot})
    print(json.dumps(out))
""")


def test_fused_choice_equals_the_pytorch_rules() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    for case in json.loads(done.stdout.strip().splitlines()[-1]):
        assert case["fused_best"] == case["best"]
        assert case["fused_logprob"] == pytest.approx(case["logprob"], abs=1e-5)
        assert case["fused_normalizer"] == pytest.approx(case["normalizer"], abs=1e-5)
        assert any(case["forced"])  # the timestamp-forcing rule was exercised
        assert any(t >= case["tb"] for t in case["best"])
        assert any(t < case["tb"] for t in case["best"])
        assert case["best"][8] == 500
        assert case["best"][9] == case["eot"]
        assert case["best"][2] != case["eot"]
