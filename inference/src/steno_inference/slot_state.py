"""Per-slot decoding state on the device, and one greedy step's rules, choice and update.

Everything a decode step needs to pick each slot's next token lives in
tensors of ``slots`` rows that are updated in place: the token fed next, its
position, the prompt, Whisper's timestamp-rule state (last and penultimate
token, last timestamp), the generated tokens, the summed log-probability and
the no-speech probability. A whole step — decoder pass, rules, greedy choice,
state update — is therefore one fixed sequence of kernels with no host round
trip, which is what lets :mod:`steno_inference.cuda_graphs` capture it. The
host learns only which slots finished (one small copy per step) and reads a
finished slot's tokens once.

Rows are updated only where ``active`` is set, so padding rows (a step runs on
a bucketed batch larger than the busy count) and finished rows that the host
has not collected yet stay frozen.

The rules are those of transformers' ``generate(return_timestamps=True)``,
which the engine's CPU tests pin token for token: suppressed tokens, no blank
first token, timestamps in pairs and never decreasing, the first timestamp
within ``max_initial_timestamp_index``, and "pick a timestamp when their
summed probability beats every text token". Fewer than two generated tokens
counts as "the penultimate token was a timestamp", as there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from steno_inference import greedy_choice
from steno_inference.tokens import WhisperTokens

PROMPT_WIDTH = 3  # <|startoftranscript|>, language, task: the longest prompt
NO_TOKEN = -1  # "none yet" in the last/penultimate token and last timestamp columns


@dataclass(frozen=True)
class Admission:
    """What a slot starts from: its prompt and how it must stop."""

    prompt: tuple[int, ...]  # NO_TOKEN in the language position: detect it at position 0
    fixed_new_tokens: int  # 0: stop at <|endoftext|>; N: suppress it and stop after N tokens


@dataclass(frozen=True)
class Harvest:
    """A finished slot's outcome, read back to the host once."""

    tokens: tuple[int, ...]  # generated tokens, <|endoftext|> excluded
    prompt: tuple[int, ...]
    sum_logprob: float
    no_speech_prob: float
    ended_by_eot: bool
    reached_fixed: bool  # stopped after its fixed number of tokens, as asked


class SlotState:
    """Device tensors for ``slots`` decoding windows, and the step that advances them."""

    def __init__(self, slots: int, tokens: WhisperTokens, vocab: int, device: torch.device) -> None:
        self.slots = slots
        self.rows_per_unit = 1  # rows a window decodes on (beam search: its beams)
        self.tokens = tokens
        self.n_ctx = tokens.max_target_positions
        self.device = device
        self.vocab = vocab

        def longs(fill: int, *extra: int) -> torch.Tensor:
            return torch.full((slots, *extra), fill, dtype=torch.long, device=device)

        self.next_token = longs(0)
        self.position = longs(0)
        self.prompt = longs(0, PROMPT_WIDTH)
        self.prompt_len = longs(1)
        self.gen_count = longs(0)
        self.last_token = longs(NO_TOKEN)
        self.prev_token = longs(NO_TOKEN)
        self.last_stamp = longs(NO_TOKEN)
        self.fixed_new_tokens = longs(0)
        # Column n_ctx is a sink: rows that generate nothing this step write there.
        self.generated = longs(0, self.n_ctx + 1)
        # float64, as the host used to add each step's float32 log-probability to a Python float.
        self.sum_logprob = torch.zeros(slots, dtype=torch.float64, device=device)
        self.no_speech_prob = torch.zeros(slots, dtype=torch.float32, device=device)
        self.detect_language = torch.zeros(slots, dtype=torch.bool, device=device)
        self.active = torch.zeros(slots, dtype=torch.bool, device=device)
        self.finished = torch.zeros(slots, dtype=torch.bool, device=device)
        self.rows = torch.arange(slots, device=device)

        # On a GPU the rules, the choice and its log-probability are one kernel.
        self._fused_choice = greedy_choice.available(device)
        self._vocab_ids = torch.arange(vocab, device=device)
        self._static_suppress = torch.zeros(vocab, dtype=torch.bool, device=device)
        ids = [t for t in tokens.suppress if t < vocab] + [tokens.no_timestamps]
        self._static_suppress[torch.tensor(ids, device=device, dtype=torch.long)] = True
        self._begin_suppress = torch.zeros(vocab, dtype=torch.bool, device=device)
        if tokens.begin_suppress:
            begin = torch.tensor(tokens.begin_suppress, device=device, dtype=torch.long)
            self._begin_suppress[begin] = True
        # Ascending, so a tie goes to the lower id as an argmax over the vocabulary would.
        self._language_ids: torch.Tensor | None = None
        if tokens.language_ids:
            self._language_ids = torch.tensor(sorted(tokens.language_ids.values()), device=device)

    # ------------------------------------------------------------- host side

    def admit(self, rows: list[int], admissions: list[Admission]) -> None:
        """Start new windows in ``rows`` (a few small host-to-device copies)."""
        n = len(rows)
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        prompts = torch.zeros((n, PROMPT_WIDTH), dtype=torch.long)
        for i, admission in enumerate(admissions):
            prompts[i, : len(admission.prompt)] = torch.tensor(admission.prompt)
        lengths = torch.tensor([len(a.prompt) for a in admissions], dtype=torch.long)
        fixed = torch.tensor([a.fixed_new_tokens for a in admissions], dtype=torch.long)
        detect = torch.tensor([NO_TOKEN in a.prompt for a in admissions], dtype=torch.bool)
        prompts = prompts.to(self.device)
        self.prompt[index] = prompts
        self.next_token[index] = prompts[:, 0]
        self.prompt_len[index] = lengths.to(self.device)
        self.fixed_new_tokens[index] = fixed.to(self.device)
        self.detect_language[index] = detect.to(self.device)
        for column, fill in (
            (self.position, 0),
            (self.gen_count, 0),
            (self.last_token, NO_TOKEN),
            (self.prev_token, NO_TOKEN),
            (self.last_stamp, NO_TOKEN),
        ):
            column[index] = fill
        self.sum_logprob[index] = 0.0
        self.no_speech_prob[index] = 0.0
        self.finished[index] = False
        self.active[index] = True

    def deactivate(self, rows: list[int]) -> None:
        """Stop advancing ``rows`` (cancelled windows)."""
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        self.active[index] = False

    def move(self, source: torch.Tensor, target: torch.Tensor) -> None:
        """Copy rows ``source`` onto rows ``target`` (compaction), then free the sources."""
        for column in self._row_columns():
            column[target] = column[source]
        self.active[source] = False
        self.finished[source] = False

    def finished_units(self, batch: int) -> torch.Tensor:
        """Finished flags of the windows on rows ``[:batch]`` (one row each here)."""
        return self.finished[:batch]

    def harvest(self, rows: list[int]) -> list[Harvest]:
        """Read finished rows back to the host (waits for the device once)."""
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        return self._harvests(index, self.generated[index], self.gen_count[index],
                              self.sum_logprob[index])

    def _harvests(self, rows: torch.Tensor, generated: torch.Tensor, counts: torch.Tensor,
                  sums: torch.Tensor) -> list[Harvest]:
        """Harvests of windows on ``rows`` (prompt, limits, no-speech) with these tokens.

        ``generated`` (n, width) holds ``counts`` tokens each, <|endoftext|>
        included when it ended them; ``sums`` are their scores.
        """
        count_list = counts.tolist()
        width = max(count_list) if count_list else 0
        token_lists = generated[:, :width].tolist()
        prompts = self.prompt[rows].tolist()
        lengths = self.prompt_len[rows].tolist()
        fixed = self.fixed_new_tokens[rows].tolist()
        sum_list = sums.tolist()
        no_speech = self.no_speech_prob[rows].tolist()
        eot = self.tokens.eot
        out = []
        for i in range(len(count_list)):
            tokens = token_lists[i][: count_list[i]]
            ended = bool(tokens) and tokens[-1] == eot
            out.append(
                Harvest(
                    tokens=tuple(tokens[:-1] if ended else tokens),
                    prompt=tuple(prompts[i][: lengths[i]]),
                    sum_logprob=float(sum_list[i]),
                    no_speech_prob=float(no_speech[i]),
                    ended_by_eot=ended,
                    reached_fixed=0 < fixed[i] <= count_list[i],
                )
            )
        return out

    def _columns(self) -> tuple[torch.Tensor, ...]:
        """Every state tensor (what a graph capture's warm-up run must leave as it was)."""
        return self._row_columns()

    def _row_columns(self) -> tuple[torch.Tensor, ...]:
        """The tensors with one entry per row."""
        return (
            self.next_token, self.position, self.prompt, self.prompt_len, self.gen_count,
            self.last_token, self.prev_token, self.last_stamp, self.fixed_new_tokens,
            self.generated, self.sum_logprob, self.no_speech_prob, self.detect_language,
            self.active, self.finished,
        )

    def snapshot(self) -> list[torch.Tensor]:
        """Copies of every column (kept across a warm-up run before a graph capture)."""
        return [column.clone() for column in self._columns()]

    def restore(self, saved: list[torch.Tensor]) -> None:
        for column, value in zip(self._columns(), saved, strict=True):
            column.copy_(value)

    # ------------------------------------------------------------ device step

    def step_inputs(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens and positions fed to the decoder for rows ``[:batch]``.

        Positions are clamped so that rows which are not decoding (padding,
        finished) never index past the 448 learned positions.
        """
        positions = self.position[:batch].clamp(max=self.n_ctx - 1)
        return self.next_token[:batch], positions

    def advance(self, logits: torch.Tensor) -> torch.Tensor | None:
        """Apply the rules to float32 ``logits`` (batch, vocab), choose, update rows in place.

        Returns None: greedy rows keep their own caches (a beam step returns
        each row's parent row instead).
        """
        t = self.tokens
        b = logits.shape[0]
        active = self.active[:b]
        position = self.position[:b]
        generating = active & (position + 1 >= self.prompt_len[:b])
        at_start = active & (position == 0)
        if self._fused_choice:
            best, logprob, normalizer = greedy_choice.choose(
                logits, self._row_state(b), self._static_suppress, self._begin_suppress,
                self.tokens)
            self._observe_start(logits, at_start, normalizer)
        else:
            self._observe_start(logits, at_start)
            scores = self._rules(logits, b)
            best = scores.argmax(dim=-1)
            logprob = F.log_softmax(scores, dim=-1).gather(1, best[:, None])[:, 0]

        is_eot = best == t.eot
        self.sum_logprob[:b] += torch.where(generating & ~is_eot, logprob.double(), 0.0)
        self._take(best, generating, active)
        gen_count = self.gen_count[:b]

        fixed = self.fixed_new_tokens[:b]
        ended = active & (gen_count > 0) & (
            (self.last_token[:b] == t.eot)
            | (position >= self.n_ctx)
            | ((fixed > 0) & (gen_count >= fixed))
        )
        self.active[:b] = active & ~ended
        self.finished[:b] |= ended
        return None

    def _row_state(self, b: int) -> greedy_choice.RowState:
        return greedy_choice.RowState(self.gen_count[:b], self.last_token[:b],
                                      self.prev_token[:b], self.last_stamp[:b],
                                      self.fixed_new_tokens[:b])

    def _observe_start(self, logits: torch.Tensor, at_start: torch.Tensor,
                       normalizer: torch.Tensor | None = None) -> None:
        """Position 0 sees <|startoftranscript|>: the no-speech probability, and
        the language when it is to be detected. ``normalizer``: the logits'
        log-sum-exp per row, when already known."""
        # Every step computes these for every row (a captured step cannot branch),
        # so each is one reduction over the logits, not a softmax or masked copy.
        b = logits.shape[0]
        if normalizer is None:
            normalizer = torch.logsumexp(logits, dim=-1)
        no_speech = (logits[:, self.tokens.no_speech] - normalizer).exp()
        self.no_speech_prob[:b] = torch.where(at_start, no_speech, self.no_speech_prob[:b])
        if self._language_ids is None:
            return
        language = self._language_ids[logits.index_select(1, self._language_ids).argmax(dim=-1)]
        detect = at_start & self.detect_language[:b]
        self.prompt[:b, 1] = torch.where(detect, language, self.prompt[:b, 1])

    def _take(self, best: torch.Tensor, generating: torch.Tensor, active: torch.Tensor) -> None:
        """Rows ``[:batch]`` take their chosen token (generating rows) or their next
        prompt token, and move on one position (active rows)."""
        b = best.shape[0]
        gen_count = self.gen_count[:b]
        position = self.position[:b]
        sink = torch.full_like(gen_count, self.n_ctx)
        column = torch.where(generating, gen_count, sink)
        self.generated[:b].scatter_(1, column[:, None], best[:, None])
        last = self.last_token[:b]
        self.prev_token[:b] = torch.where(generating, last, self.prev_token[:b])
        self.last_token[:b] = torch.where(generating, best, last)
        stamp = generating & (best >= self.tokens.timestamp_begin)
        self.last_stamp[:b] = torch.where(stamp, best, self.last_stamp[:b])
        gen_count += generating.long()
        prompt_index = (position + 1).clamp(max=PROMPT_WIDTH - 1)
        from_prompt = self.prompt[:b].gather(1, prompt_index[:, None])[:, 0]
        fed = torch.where(generating, best, from_prompt)
        self.next_token[:b] = torch.where(active, fed, self.next_token[:b])
        position += active.long()

    def _rules(self, logits: torch.Tensor, b: int) -> torch.Tensor:
        """Scores with every token the rules forbid set to -inf."""
        t = self.tokens
        tb = t.timestamp_begin
        gen = self.gen_count[:b]
        last_ts = self.last_token[:b] >= tb
        prev_ts = (gen < 2) | (self.prev_token[:b] >= tb)
        stamp = self.last_stamp[:b]
        floor = torch.where(
            stamp < 0,
            torch.full_like(stamp, tb),
            torch.where(last_ts & ~prev_ts, stamp, stamp + 1),
        )[:, None]
        first = (gen == 0)[:, None]
        vocab = self._vocab_ids[None, :]
        banned = self._static_suppress[None, :].expand(b, -1).clone()
        banned |= first & self._begin_suppress[None, :]
        is_ts = vocab >= tb
        banned |= (last_ts & prev_ts)[:, None] & is_ts
        banned |= (last_ts & ~prev_ts)[:, None] & (vocab < t.eot)
        banned |= is_ts & (vocab < floor)
        banned |= first & (vocab < tb)
        banned |= first & (vocab > tb + t.max_initial_timestamp_index)
        fixed = self.fixed_new_tokens[:b]
        hold_eot = (fixed > 0) & (gen < fixed)
        banned |= hold_eot[:, None] & (vocab == t.eot)
        scores = logits.masked_fill(banned, -math.inf)
        # Timestamps are forced when their total probability beats the likeliest
        # text token's. Both sides' log-probabilities share log_softmax's
        # normalizer, so it is left out: two reductions instead of a full pass.
        ts_mass = scores[:, tb:].logsumexp(dim=-1)
        text_max = scores[:, :tb].max(dim=-1).values
        force_ts = (ts_mass > text_max)[:, None] & (vocab < tb)
        return scores.masked_fill(force_ts, -math.inf)
