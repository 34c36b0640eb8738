"""Side-by-side throughput: the insanely-fast-whisper recipe and steno's runner, one process.

For each model shape (random weights, fp16, built on the device), the same
audio — ``minutes`` of 16 kHz PCM cut into back-to-back 30 s windows — goes
through:

* ``steno features``: log-mel already on the GPU → tokens (the runner alone);
* ``steno pcm``: decoded PCM on the host → log-mel on the GPU → tokens;
* ``steno cap``: the features run again with PyTorch's allocator capped so
  that the whole process fits a ``memory_cap_gib`` card;
* ``steno replicas``: on a machine with several GPUs, PCM over one runner per GPU;
* ``recipe``: the transformers pipeline as insanely-fast-whisper's CLI calls it
  (:mod:`recipe`), on the first ``recipe_minutes`` of the audio (its rate, audio
  seconds per second, is scale-free; the 150-minute time is that rate applied).

Every window decodes exactly ``new_tokens`` tokens. CUDA-graph capture and a
short warm-up run precede each timed run and are reported apart, as a server
does them once at start-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steno_inference import int8_cross_attention
from steno_inference.batching import GIB, apply_memory_cap, plan_batch
from steno_inference.benchmarking import machine
from steno_inference.benchmarking.report import write_report
from steno_inference.benchmarking.shapes import SHAPES, model_tokens, random_model
from steno_inference.decoder_pass import N_AUDIO_CTX
from steno_inference.features import N_SAMPLES, SAMPLE_RATE, LogMel
from steno_inference.runner import DecodeRequest, DecodeResult, WhisperRunner

DEFAULT_SHAPES = ("large-v3", "large-v3-turbo", "distil-large-v3")
WINDOW_S = N_SAMPLES / SAMPLE_RATE  # 30 s
PROMPT_TOKENS = 3  # <|startoftranscript|>, language (detected), <|transcribe|>
WARMUP_WINDOWS = 32
WARMUP_TOKENS = 4
NOISE_RMS = 0.05  # the PCM's level: content is irrelevant to random weights


@dataclass(frozen=True)
class Settings:
    """What to run; every field has the issue's default."""

    shapes: tuple[str, ...] = DEFAULT_SHAPES
    minutes: float = 150.0  # audio per steno run: 300 windows
    new_tokens: int = 110  # decoded tokens per window, on both sides
    recipe_minutes: float = 30.0  # audio per recipe run; 0 skips the recipe
    # Shapes whose recipe also runs greedy (num_beams=1): the pipeline's default is 5 beams.
    greedy_recipe_shapes: tuple[str, ...] = ("large-v3",)
    memory_cap_gib: float | None = 24.0  # the capped run; None skips it
    pcm: bool = True  # also time the run from PCM
    int8_cross_kv: bool = True  # also time int8 cross-attention keys and values
    int8_mode: int | None = None  # the int8 kernel's mode (int8_cross_attention.MODES)
    replicas: bool = True  # on several GPUs, also time one runner per GPU
    beam_size: int = 1  # above 1: also time beam search with this many beams
    max_slots: int | None = None  # decoder slots; None: as many as memory allows
    tokenizer_dir: Path | None = None  # a Whisper tokenizer for the recipe's pipeline
    device: str = "cuda:0"
    out: Path | None = None  # JSON written after every row


@dataclass
class Row:
    """One timed run."""

    shape: str
    side: str  # recipe | steno
    input: str  # pcm | features
    windows: int  # windows encoded (the recipe's overlapping chunks count each)
    audio_s: float
    wall_s: float
    peak_gib: float  # PyTorch's peak reserved memory (the CUDA context adds ~0.5 GiB)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def audio_s_per_s(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0


def run(settings: Settings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every part, write JSON as rows arrive, and return the report."""
    device = torch.device(settings.device)
    report: dict[str, Any] = {
        "settings": _jsonable(asdict(settings)),
        "machine": machine.describe(device),
        "rows": [],
    }
    if device.type == "cuda":
        report["machine"]["copy_gbs"] = round(machine.copy_bandwidth_gbs(device), 1)
    rows: list[Row] = []

    def add(row: Row) -> None:
        rows.append(row)
        report["rows"].append(_row_json(row))
        log(_format_row(row))
        write_report(settings.out, report)

    audio = synthetic_pcm(settings.minutes)
    # Every steno run first, the slow recipe runs last: a run cut short by a
    # time limit still has steno's rows.
    for name in settings.shapes:
        _run_shape(name, settings, device, audio, add, log)
    if settings.recipe_minutes > 0 and settings.tokenizer_dir is not None:
        for name in settings.shapes:
            model = random_model(SHAPES[name], device, _dtype(device),
                                 attention=_encoder_attention(device))
            add(_recipe(name, settings, model, audio, device, None))
            if name in settings.greedy_recipe_shapes:
                add(_recipe(name, settings, model, audio, device, 1))
            del model
            _release(device)
    report["table"] = format_table(rows)
    write_report(settings.out, report)
    return report


def synthetic_pcm(minutes: float, seed: int = 0) -> np.ndarray:
    samples = int(minutes * 60 * SAMPLE_RATE)
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(samples, dtype=np.float32) * NOISE_RMS).astype(np.float32)


def windows_of(audio: np.ndarray) -> list[np.ndarray]:
    return [audio[i : i + N_SAMPLES] for i in range(0, len(audio), N_SAMPLES)]


def _run_shape(
    name: str,
    settings: Settings,
    device: torch.device,
    audio: np.ndarray,
    add: Callable[[Row], None],
    log: Callable[[str], None],
) -> None:
    shape = SHAPES[name]
    model = random_model(shape, device, _dtype(device), attention=_encoder_attention(device))
    tokens = model_tokens(model)
    pcm = windows_of(audio)
    mel = LogMel(shape.n_mels, device)
    features = torch.cat([mel(pcm[i : i + 32]) for i in range(0, len(pcm), 32)])
    max_tokens = PROMPT_TOKENS + settings.new_tokens + 1
    extra: dict[str, Any] = {"n_mels": shape.n_mels, "decoder_layers": shape.decoder_layers,
             "cross_kv_mb_per_window_token": round(
                 2 * shape.decoder_layers * N_AUDIO_CTX * shape.d_model * 2 / 1e6, 1)}

    runner = _make_runner(model, tokens, device, settings.max_slots, None)
    capture_s = _prepare(runner, features, max_tokens)
    encoder_s = _time_encoder(runner, features, device)
    log(f"  {name}: encoder alone {encoder_s:.2f} s for {len(pcm)} windows")
    base = {**extra, "slots": runner.max_batch, "encoder_batch": runner.encoder_batch,
            "graph_capture_s": round(capture_s, 2), "encoder_only_s": round(encoder_s, 3)}
    add(_timed(name, "features", runner, _requests(features, None, settings.new_tokens),
               len(audio), device, base))
    if settings.pcm:
        add(_timed(name, "pcm", runner, _requests(None, pcm, settings.new_tokens),
                   len(audio), device, base))
    del runner
    _release(device)

    if settings.memory_cap_gib is not None and device.type == "cuda":
        apply_memory_cap(device, settings.memory_cap_gib)
        try:
            capped = _make_runner(model, tokens, device, settings.max_slots,
                                  settings.memory_cap_gib)
            capture_s = _prepare(capped, features, max_tokens)
            detail = {**extra, "slots": capped.max_batch, "encoder_batch": capped.encoder_batch,
                      "graph_capture_s": round(capture_s, 2),
                      "memory_cap_gib": settings.memory_cap_gib}
            row = _timed(name, "features", capped,
                         _requests(features, None, settings.new_tokens), len(audio), device,
                         detail)
            row.side = f"steno {settings.memory_cap_gib:g} GB cap"
            add(row)
            del capped
        finally:
            _release(device)
            torch.cuda.set_per_process_memory_fraction(1.0, device)

    if settings.int8_cross_kv and device.type == "cuda":
        if settings.int8_mode is not None:  # read when the step graphs are captured
            int8_cross_attention.DEFAULT_MODE = settings.int8_mode
        runner = _make_runner(model, tokens, device, settings.max_slots, None, True)
        capture_s = _prepare(runner, features, max_tokens)
        int8_detail: dict[str, Any] = {
            **extra, "slots": runner.max_batch, "encoder_batch": runner.encoder_batch,
            "graph_capture_s": round(capture_s, 2), "cross_kv": "int8",
            "int8_mode": int8_cross_attention.DEFAULT_MODE,
        }
        row = _timed(name, "features", runner, _requests(features, None, settings.new_tokens),
                     len(audio), device, int8_detail)
        row.side = "steno int8 KV"
        add(row)
        if settings.pcm:
            row = _timed(name, "pcm", runner, _requests(None, pcm, settings.new_tokens),
                         len(audio), device, int8_detail)
            row.side = "steno int8 KV"
            add(row)
        del runner
        _release(device)

    if settings.beam_size > 1:
        runner = _make_runner(model, tokens, device, settings.max_slots, None,
                              beam_size=settings.beam_size)
        capture_s = _prepare(runner, features, max_tokens)
        beam_detail: dict[str, Any] = {
            **extra, "slots": runner.max_batch, "encoder_batch": runner.encoder_batch,
            "graph_capture_s": round(capture_s, 2), "beam_size": settings.beam_size,
        }
        row = _timed(name, "features", runner, _requests(features, None, settings.new_tokens),
                     len(audio), device, beam_detail)
        row.side = f"steno {settings.beam_size} beams"
        add(row)
        del runner
        _release(device)

    if settings.replicas and device.type == "cuda" and torch.cuda.device_count() > 1:
        add(_replicas(name, settings, audio, pcm, max_tokens, extra))
    del model, features
    _release(device)


def _make_runner(model: Any, tokens: Any, device: torch.device, max_slots: int | None,
                 cap: float | None, int8_cross_kv: bool = False,
                 beam_size: int = 1) -> WhisperRunner:
    dtype = _dtype(device)
    plan = plan_batch(model, dtype, device, tokens.max_target_positions, cap,
                      int8_cross_kv=int8_cross_kv, beam_size=beam_size)
    # plan.slots counts decoder rows; max_slots counts windows (beam_size rows each).
    rows = plan.slots if max_slots is None else min(plan.slots, max_slots * beam_size)
    return WhisperRunner(model, tokens, device, dtype, rows, plan.encoder_batch,
                         int8_cross_kv=int8_cross_kv, beam_size=beam_size)


def _prepare(runner: WhisperRunner, features: torch.Tensor, max_tokens: int) -> float:
    """Capture the step graphs, then run a short warm-up (kernel choice, allocator)."""
    capture_s = runner.capture_graphs(max_tokens)
    warm = features[:WARMUP_WINDOWS]
    list(runner.decode(_requests(warm, None, WARMUP_TOKENS)))
    return capture_s


def _requests(features: torch.Tensor | None, pcm: list[np.ndarray] | None,
              new_tokens: int) -> list[DecodeRequest]:
    if features is not None:
        return [DecodeRequest(i, features[i], None, fixed_new_tokens=new_tokens)
                for i in range(features.shape[0])]
    if pcm is None:
        raise ValueError("requests need features or PCM")
    return [DecodeRequest(i, None, None, audio=w, fixed_new_tokens=new_tokens)
            for i, w in enumerate(pcm)]


def _timed(shape: str, source: str, runner: WhisperRunner, requests: list[DecodeRequest],
           samples: int, device: torch.device, detail: dict[str, Any]) -> Row:
    before = _counters(runner)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    results = list(runner.decode(requests))
    _sync(device)
    wall = time.perf_counter() - started
    after = _counters(runner)
    return Row(
        shape=shape,
        side="steno",
        input=source,
        windows=after["windows_encoded"] - before["windows_encoded"],
        audio_s=samples / SAMPLE_RATE,
        wall_s=wall,
        peak_gib=_peak_gib(device),
        detail={**detail, **_work(results, requests, before, after)},
    )


def _work(results: list[DecodeResult], requests: list[DecodeRequest],
          before: dict[str, int], after: dict[str, int]) -> dict[str, Any]:
    lengths = {len(r.tokens) for r in results}
    steps = after["steps"] - before["steps"]
    rows = after["rows_stepped"] - before["rows_stepped"]
    busy = after["busy_rows_stepped"] - before["busy_rows_stepped"]
    return {
        "results": len(results),
        "all_windows_back": len(results) == len(requests),
        "tokens_per_window": sorted(lengths),
        "decode_steps": steps,
        "mean_batch": round(rows / steps, 1) if steps else 0,
        "padding_rows_fraction": round(1 - busy / rows, 4) if rows else 0,
        "compactions": after["compactions"] - before["compactions"],
        "encoder_oom_splits": after["encoder_oom_splits"] - before["encoder_oom_splits"],
    }


def _time_encoder(runner: WhisperRunner, features: torch.Tensor, device: torch.device) -> float:
    _sync(device)
    started = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, features.shape[0], runner.encoder_batch):
            runner.encode(features[i : i + runner.encoder_batch])
    _sync(device)
    return time.perf_counter() - started


def _replicas(name: str, settings: Settings, audio: np.ndarray, pcm: list[np.ndarray],
              max_tokens: int, extra: dict[str, Any]) -> Row:
    from steno_inference.replicas import ReplicaPool

    shape = SHAPES[name]
    devices = [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    runners = []
    for dev in devices:
        model = random_model(shape, dev, _dtype(dev), attention=_encoder_attention(dev))
        runner = _make_runner(model, model_tokens(model), dev, settings.max_slots, None)
        feats = LogMel(shape.n_mels, dev)(pcm[:WARMUP_WINDOWS])
        _prepare(runner, feats, max_tokens)
        runners.append(runner)
    pool = ReplicaPool(runners)
    requests = _requests(None, pcm, settings.new_tokens)
    for dev in devices:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    started = time.perf_counter()
    results = list(pool.decode(requests))
    for dev in devices:
        torch.cuda.synchronize(dev)
    wall = time.perf_counter() - started
    peak = max(torch.cuda.max_memory_reserved(dev) for dev in devices) / GIB
    detail = {**extra, "gpus": len(devices), "windows_per_gpu": pool.windows_per_replica,
              "slots_per_gpu": [r.max_batch for r in runners],
              "all_windows_back": len(results) == len(requests)}
    del runners, pool
    for dev in devices:
        with torch.cuda.device(dev):
            torch.cuda.empty_cache()
    return Row(name, f"steno {len(devices)} GPUs", "pcm", len(pcm),
               len(audio) / SAMPLE_RATE, wall, peak, detail)


def _recipe(name: str, settings: Settings, model: Any, audio: np.ndarray,
            device: torch.device, num_beams: int | None) -> Row:
    from steno_inference.benchmarking.recipe import load_tokenizer, recipe_pipeline, run_recipe

    if settings.tokenizer_dir is None:
        raise ValueError("the recipe needs a tokenizer directory")
    asr = recipe_pipeline(model, load_tokenizer(settings.tokenizer_dir), device)
    part = audio[: int(settings.recipe_minutes * 60 * SAMPLE_RATE)]
    result = run_recipe(asr, part, settings.new_tokens, device, num_beams=num_beams)
    rate = result.audio_s / result.wall_s
    detail = {
        "attention": result.attention,
        "decoder_steps_per_batch": round(result.decoder_steps_per_batch, 1),
        "num_beams": result.num_beams,
        "chunks_decoded": result.chunks,
        "batch_size": result.batch_size,
        "measured_minutes": settings.recipe_minutes,
        "wall_s_for_full_audio_at_this_rate": round(len(audio) / SAMPLE_RATE / rate, 1),
    }
    side = "recipe" if num_beams is None else f"recipe, {num_beams} beam"
    return Row(name, side, "pcm", result.encoded, result.audio_s, result.wall_s,
               result.peak_gib, detail)


def format_table(rows: Iterable[Row]) -> str:
    rows = list(rows)
    recipe_rate = {r.shape: r.audio_s_per_s for r in rows if r.side == "recipe"}
    header = (f"{'shape':16} {'side':20} {'input':8} {'windows':>7} {'audio s':>8} "
              f"{'wall s':>8} {'audio s/s':>10} {'peak GiB':>8} {'vs recipe':>9}")
    lines = [header, "-" * len(header)]
    for row in rows:
        base = recipe_rate.get(row.shape)
        ratio = f"{row.audio_s_per_s / base:8.1f}x" if base else f"{'':>9}"
        lines.append(
            f"{row.shape:16} {row.side:20} {row.input:8} {row.windows:7d} {row.audio_s:8.0f} "
            f"{row.wall_s:8.2f} {row.audio_s_per_s:10.1f} {row.peak_gib:8.1f} {ratio}"
        )
    return "\n".join(lines)


def _format_row(row: Row) -> str:
    return (f"{row.shape} {row.side} {row.input}: {row.windows} windows, {row.wall_s:.2f} s, "
            f"{row.audio_s_per_s:.0f} audio s/s, peak {row.peak_gib:.1f} GiB, {row.detail}")


def _row_json(row: Row) -> dict[str, Any]:
    out = asdict(row)
    out["audio_s_per_s"] = round(row.audio_s_per_s, 1)
    out["wall_s"] = round(row.wall_s, 3)
    out["peak_gib"] = round(row.peak_gib, 2)
    return out


def _counters(runner: WhisperRunner) -> dict[str, int]:
    return dict(asdict(runner.stats))


def _peak_gib(device: torch.device) -> float:
    if device.type != "cuda":
        return 0.0
    return torch.cuda.max_memory_reserved(device) / GIB


def _dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.float32


def _encoder_attention(device: torch.device) -> str:
    from steno_inference.benchmarking.machine import _flash_attn_version

    if device.type == "cuda" and _flash_attn_version() is not None:
        return "flash_attention_2"
    return "sdpa"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _release(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
