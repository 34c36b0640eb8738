"""Beam search on the device: each window decodes as a group of ``beam`` rows.

The search is transformers' ``generate(num_beams=K)`` (its defaults:
``length_penalty=1.0``, ``early_stopping=False``) with Whisper's rules, so
on the CPU the tokens equal ``generate()``'s; the engine's tests pin that.
Per window and step:

1. Each beam's log-probabilities (``log_softmax`` of the logits, then the
   rules' masks, not renormalized) plus the beam's running score give
   ``K × vocab`` candidates; the best ``2K`` are kept.
2. A candidate that ends the window (``<|endoftext|>``, the last position,
   or the fixed token count reached) goes to the window's pool of finished
   hypotheses if it ranks among the first ``K``; its score there is divided
   by its length (``length_penalty``). The pool keeps the best ``K``.
3. The best ``K`` candidates that do not end become the next beams: every
   per-row state column and the rows' self-attention caches are copied from
   each new beam's parent row.
4. The window is done once its pool is full and the best running beam,
   length-normalized, cannot beat the pool's worst, or when every candidate
   ends; its answer is the pool's best hypothesis.

All of it is fixed-shape tensor work over rows ``[:batch]`` (a multiple of
``beam``), so a beam step is one CUDA-graph replay like a greedy one. The
prompt is fed to every beam of a window alike; the running scores start at
0 for the first beam and -1e9 for the others, so the first choice comes from
one beam rather than ``K`` copies of it.

A window's beams share one copy of its cross-attention keys and values
(:mod:`decoder_pass`), so ``K`` beams cost ``K`` rows of self-attention cache
but read the window's keys and values once per step (with int8 keys and
values, once per beam).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from steno_inference.slot_state import Admission, Harvest, SlotState
from steno_inference.tokens import WhisperTokens

MAX_BEAM_SIZE = 16  # beams per window; memory and step time grow linearly with it
LENGTH_PENALTY = 1.0  # finished hypotheses' scores are divided by length ** this
UNREACHABLE = -1.0e9  # the score of an empty pool entry or of a candidate left out


class BeamSlotState(SlotState):
    """Device state of ``units`` windows decoded with ``beam`` rows each."""

    def __init__(self, units: int, beam: int, tokens: WhisperTokens, vocab: int,
                 device: torch.device) -> None:
        if not 1 <= beam <= MAX_BEAM_SIZE:
            raise ValueError(f"beam size must be 1 to {MAX_BEAM_SIZE}, not {beam}")
        super().__init__(units * beam, tokens, vocab, device)
        self.beam = beam
        self.units = units
        self.rows_per_unit = beam
        width = self.n_ctx + 1
        self.beam_score = torch.zeros(units * beam, dtype=torch.float32, device=device)
        # The pool of finished hypotheses, best first.
        self.pool_tokens = torch.zeros((units, beam, width), dtype=torch.long, device=device)
        self.pool_len = torch.zeros((units, beam), dtype=torch.long, device=device)
        self.pool_score = torch.full((units, beam), UNREACHABLE, device=device)
        self.pool_raw = torch.zeros((units, beam), dtype=torch.float32, device=device)
        self.pool_filled = torch.zeros((units, beam), dtype=torch.bool, device=device)
        self.improvable = torch.ones(units, dtype=torch.bool, device=device)
        self.unit_finished = torch.zeros(units, dtype=torch.bool, device=device)
        self._offsets = torch.arange(beam, device=device)
        self._first_k = torch.arange(2 * beam, device=device) < beam

    # ------------------------------------------------------------- host side

    def unit_rows(self, units: torch.Tensor) -> torch.Tensor:
        """The rows of ``units``, each unit's ``beam`` rows in order."""
        return (units[:, None] * self.beam + self._offsets[None, :]).flatten()

    def admit(self, rows: list[int], admissions: list[Admission]) -> None:
        """Start windows in units ``rows``; every beam gets the window's prompt."""
        units = torch.tensor(rows, dtype=torch.long, device=self.device)
        beam_rows = self.unit_rows(units)
        super().admit(beam_rows.tolist(), [a for a in admissions for _ in range(self.beam)])
        first = (self._offsets == 0).repeat(len(rows))
        self.beam_score[beam_rows] = torch.where(first, 0.0, UNREACHABLE)
        self.pool_score[units] = UNREACHABLE
        self.pool_len[units] = 0
        self.pool_raw[units] = 0.0
        self.pool_filled[units] = False
        self.improvable[units] = True
        self.unit_finished[units] = False

    def deactivate(self, rows: list[int]) -> None:
        units = torch.tensor(rows, dtype=torch.long, device=self.device)
        super().deactivate(self.unit_rows(units).tolist())

    def move(self, source: torch.Tensor, target: torch.Tensor) -> None:
        super().move(self.unit_rows(source), self.unit_rows(target))
        for column in (*self._unit_columns(), self.unit_finished):
            column[target] = column[source]
        self.unit_finished[source] = False

    def finished_units(self, batch: int) -> torch.Tensor:
        return self.unit_finished[: batch // self.beam]

    def harvest(self, rows: list[int]) -> list[Harvest]:
        """Each finished unit's best hypothesis (waits for the device once)."""
        units = torch.tensor(rows, dtype=torch.long, device=self.device)
        return self._harvests(units * self.beam, self.pool_tokens[units, 0],
                              self.pool_len[units, 0], self.pool_raw[units, 0])

    def _row_columns(self) -> tuple[torch.Tensor, ...]:
        return (*super()._row_columns(), self.beam_score)

    def _columns(self) -> tuple[torch.Tensor, ...]:
        return (*self._row_columns(), *self._unit_columns(), self.unit_finished)

    def _unit_columns(self) -> tuple[torch.Tensor, ...]:
        return (self.pool_tokens, self.pool_len, self.pool_score, self.pool_raw,
                self.pool_filled, self.improvable)

    # ------------------------------------------------------------ device step

    def advance(self, logits: torch.Tensor) -> torch.Tensor | None:
        """One beam step over rows ``[:batch]``; returns each row's parent row.

        The caller copies the rows' self-attention caches from their parents
        (identity for rows still in their prompt).
        """
        t = self.tokens
        k = self.beam
        b, vocab = logits.shape
        g = b // k
        active = self.active[:b]
        position = self.position[:b]
        generating = active & (position + 1 >= self.prompt_len[:b])
        self._observe_start(logits, active & (position == 0))

        # 1. Candidates: the best 2K of K × vocab.
        scores = self._rules(F.log_softmax(logits, dim=-1), b)
        total = (scores + self.beam_score[:b, None]).view(g, k * vocab)
        top_scores, top_index = total.topk(2 * k, dim=1)
        parent = torch.div(top_index, vocab, rounding_mode="floor")
        token = top_index % vocab
        group_gen = generating.view(g, k)[:, 0]
        gen = self.gen_count[:b].view(g, k)[:, 0]
        fed_at = position.view(g, k)[:, 0]
        fixed = self.fixed_new_tokens[:b].view(g, k)[:, 0]
        new_len = gen + 1
        ends = (
            (token == t.eot)
            | (fed_at + 2 >= self.n_ctx)[:, None]  # the sequence reaches n_ctx tokens
            | ((fixed > 0) & (new_len >= fixed))[:, None]
        )

        # 3 (chosen first, applied below). The next beams: the best K that go on.
        running = top_scores + ends.float() * UNREACHABLE
        keep = running.topk(k, dim=1).indices
        next_parent = parent.gather(1, keep)
        next_token = token.gather(1, keep)
        next_score = running.gather(1, keep)

        # 2. The pool of finished hypotheses.
        lengths = new_len.float()
        finished_scores = top_scores / (lengths ** LENGTH_PENALTY)[:, None]
        finished_scores = finished_scores + (~self.improvable[:g]).float()[:, None] * UNREACHABLE
        just_ended = ends & self._first_k[None, :]
        finished_scores = finished_scores + (~just_ended).float() * UNREACHABLE
        group_base = torch.arange(g, device=self.device)[:, None] * k
        width = self.generated.shape[1]
        candidates = self.generated[:b][(group_base + parent).flatten()].view(g, 2 * k, width)
        column = gen[:, None, None].expand(g, 2 * k, 1)
        candidates = candidates.scatter(2, column, token[:, :, None])
        merged_score = torch.cat([self.pool_score[:g], finished_scores], dim=1)
        pick = merged_score.topk(k, dim=1).indices
        pool_score = merged_score.gather(1, pick)
        pool_tokens = torch.cat([self.pool_tokens[:g], candidates], dim=1).gather(
            1, pick[:, :, None].expand(g, k, width))
        pool_len = torch.cat([self.pool_len[:g], new_len[:, None].expand(g, 2 * k)], dim=1)
        pool_raw = torch.cat([self.pool_raw[:g], top_scores], dim=1)
        pool_filled = torch.cat([self.pool_filled[:g], just_ended], dim=1)
        self.pool_score[:g] = torch.where(group_gen[:, None], pool_score, self.pool_score[:g])
        self.pool_tokens[:g] = torch.where(group_gen[:, None, None], pool_tokens,
                                           self.pool_tokens[:g])
        self.pool_len[:g] = torch.where(group_gen[:, None], pool_len.gather(1, pick),
                                        self.pool_len[:g])
        self.pool_raw[:g] = torch.where(group_gen[:, None], pool_raw.gather(1, pick),
                                        self.pool_raw[:g])
        self.pool_filled[:g] = torch.where(group_gen[:, None], pool_filled.gather(1, pick),
                                           self.pool_filled[:g])

        # 4. Can the running beams still beat the pool?
        best_running = next_score[:, 0] / lengths ** LENGTH_PENALTY
        worst = torch.where(self.pool_filled[:g],
                            self.pool_score[:g].min(dim=1, keepdim=True).values, UNREACHABLE)
        improvable = self.improvable[:g] & (best_running[:, None] > worst).any(dim=1)
        self.improvable[:g] = torch.where(group_gen, improvable, self.improvable[:g])
        done = group_gen & (~improvable | ends.all(dim=1))

        # 3. Rows take their parents' state, then the chosen token.
        rows = self.rows[:b]
        source = torch.where(generating, (group_base + next_parent).flatten(), rows)
        for column_state in (self.generated, self.last_token, self.prev_token, self.last_stamp):
            column_state[:b] = column_state[:b][source]
        self.beam_score[:b] = torch.where(generating, next_score.flatten(), self.beam_score[:b])
        self._take(next_token.flatten(), generating, active)

        done_rows = done[:, None].expand(g, k).flatten()
        self.active[:b] = active & ~done_rows
        self.finished[:b] |= done_rows
        self.unit_finished[:g] |= done
        return source
