"""The engine: sources in, transcripts out, every window of every source in one batch stream.

A producer thread decodes sources in order (PyAV, streamed), finds speech and
packs windows (:mod:`segmentation`); the calling thread computes log-mel on
the device and feeds one :class:`~steno_inference.runner.WhisperRunner`, so
windows of different files share decoder batches and the GPU never waits for
the end of a file. A window's result is turned into segments (and words, in
its own alignment pass) as soon as it finishes, so a file's memory is its
text, not its audio. A file is reported as soon as its last window is done.

Memory bound for one long file (independent of its length): the producer
queue holds at most :data:`PRODUCER_QUEUE_WINDOWS` windows of 30 s (1.92 MB
each as float32), the segmentation buffer at most ``MAX_BUFFERED_S`` of audio
(about 2.1 MB), the decoder ``max_batch`` slots of KV cache, and each decoded
window's segments and words (a few kB). A 3-hour file therefore needs about
the same memory as a 3-minute one: model + KV cache + ~70 MB of audio.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steno_inference.alignment import WordAligner, WordTiming
from steno_inference.audio import (
    SAMPLE_RATE,
    AudioError,
    AudioSource,
    display_name,
)
from steno_inference.backends import make_onnx_runner, resolve_backend
from steno_inference.batching import plan_batch
from steno_inference.cache import default_cache_dir
from steno_inference.engine_config import EngineConfig as EngineConfig
from steno_inference.engine_config import resolve_runtime, vad_threads
from steno_inference.features import LogMel
from steno_inference.onnx_runner import OnnxWhisperRunner
from steno_inference.options import OptionsError, TranscribeOptions
from steno_inference.runner import DecodeRequest, DecodeResult, WhisperRunner
from steno_inference.scheduler import DecodeScheduler, SchedulerStats
from steno_inference.segmentation import Window, WindowBuilder
from steno_inference.source_windows import CallerGaveUp, source_windows
from steno_inference.tokens import TIME_PER_TIMESTAMP_S, WhisperTokens
from steno_inference.transcript import Segment, Transcript, Word, join_segment_text
from steno_inference.vad import SpeechDetector

LOG = logging.getLogger(__name__)
# How often a waiting call, or its producer, checks whether its caller gave up.
# Every admitted call has a few such waiters; at 0.1-0.2 s, 400 queued calls
# woke ~10,000 times a second and starved gRPC's own thread of the GIL, which
# then cancelled incoming calls (bench/grpc_load.py). 0.5 s costs a cancelled
# call at most that long before its windows are dropped.
CANCEL_POLL_S = 0.5
MAX_WINDOWS_IN_FLIGHT = 32  # per call: windows decoded ahead of, or inside, the decoder
# Whisper's own hallucination guard (openai/whisper transcribe): a window the
# model itself thinks is silent, decoded with low confidence, is dropped.
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0

class EngineError(RuntimeError):
    """The engine itself failed on a source (the device, not the input)."""

    def __init__(self, source_name: str, problem: str) -> None:
        super().__init__(f"{source_name}: {problem}")
        self.source_name = source_name


class TranscriptionCancelled(RuntimeError):
    """The caller went away or its deadline passed before the source was done."""

    def __init__(self, source_name: str, problem: str) -> None:
        super().__init__(f"{source_name}: {problem}")
        self.source_name = source_name


@dataclass(frozen=True)
class SourceResult:
    """The outcome for one source: a transcript, or one line saying what was wrong."""

    index: int
    name: str
    transcript: Transcript | None = None
    error: str | None = None  # one line naming the source and the problem
    failure: Exception | None = None  # the exception behind ``error``


@dataclass
class _SourceState:
    name: str
    options: TranscribeOptions
    windows: dict[int, Window] = field(default_factory=dict)
    segments: dict[int, list[Segment]] = field(default_factory=dict)
    languages: Counter[str] = field(default_factory=Counter)
    expected: int | None = None
    duration_s: float = 0.0
    error: Exception | None = None
    next_window: int = 0  # the next window whose segments go to a streaming caller
    speakers: Future[list[Any]] | None = None  # diarization running beside transcription

    def complete(self) -> bool:
        if self.error is not None:
            return True
        if self.options.diarize and self.expected is not None and self.speakers is None:
            return False  # its audio is read but the diarization is not submitted yet
        return self.expected is not None and len(self.segments) == self.expected

    def pop_in_order(self) -> Iterator[list[Segment]]:
        """Segments of windows now done with every window before them done too."""
        while self.next_window in self.segments:
            yield self.segments[self.next_window]
            self.next_window += 1


@dataclass(frozen=True)
class _Job:
    index: int
    source: AudioSource
    name: str
    options: TranscribeOptions


class Engine:
    """One loaded model on one device, shared by every caller of this process."""

    def __init__(
        self,
        config: EngineConfig,
        model: Any,
        tokenizer: Any,
        tokens: WhisperTokens,
        device: torch.device,
        dtype: torch.dtype,
        model_name: str,
        model_path: Path | None = None,
    ) -> None:
        self.config = config
        self.model_path = model_path  # the transformers directory the weights came from
        self.model = model
        self.tokenizer = tokenizer
        self.tokens = tokens
        self.device = device
        self.dtype = dtype
        self.model_name = model_name
        plan = plan_batch(
            model, dtype, device, tokens.max_target_positions, config.memory_cap_gib,
            int8_cross_kv=config.int8_cross_kv, beam_size=config.beam_size,
        )
        # The plan counts decoder rows (memory); a set batch size counts windows,
        # each of which takes beam_size rows.
        batch = config.batch_size * config.beam_size if config.batch_size else plan.slots
        self.backend = resolve_backend(config.backend, config.dtype, device, config.beam_size)
        self.runner: WhisperRunner | OnnxWhisperRunner
        if self.backend == "onnx":
            self.runner = make_onnx_runner(model, model_path, tokens, config.dtype,
                                           config.cache_dir or default_cache_dir(), batch)
        else:
            self.runner = WhisperRunner(
                model, tokens, device, dtype, max_batch=batch, encoder_batch=plan.encoder_batch,
                int8_cross_kv=config.int8_cross_kv, beam_size=config.beam_size,
                deterministic=config.deterministic,
            )
        self.features = LogMel(int(model.config.num_mel_bins), device)
        self.aligner = WordAligner(model, tokens, self._decode_tokens)
        # One Silero network for every source: its state lives in each detector.
        self._vad_net = SpeechDetector.load_model() if config.vad else None
        # Voice activity runs on the thread of each source. With hundreds of
        # concurrent calls those threads compete with the scheduler thread that
        # feeds the GPU, for the cores and for the GIL (measured with the old
        # per-frame loop: a loop of small torch calls fell from 11,000 to 22
        # iterations/s beside 64 such threads); taking turns, a few sources at
        # a time, keeps it fed.
        self._vad_turns = threading.BoundedSemaphore(vad_threads(config))
        self.scheduler = DecodeScheduler(self.runner)
        self._diarizer_instance: Any = None
        self._diarizer_lock = threading.Lock()
        # One diarization at a time per engine (the Diarizer serializes itself);
        # it runs beside transcription on its own thread and CUDA stream.
        self._diarization_pool = ThreadPoolExecutor(1, thread_name_prefix="steno-diarize")

    @classmethod
    def load(cls, config: EngineConfig) -> Engine:
        """Resolve, convert (once, cached) and load the model; raises ModelError or OptionsError."""
        from transformers import AutoTokenizer, WhisperForConditionalGeneration

        from steno_inference.models.resolve import resolve_model

        device, dtype, attention = resolve_runtime(config)
        resolved = resolve_model(config.model, config.cache_dir or default_cache_dir())
        model: Any = WhisperForConditionalGeneration.from_pretrained(
            str(resolved.path), dtype=dtype, attn_implementation=attention
        )
        model.to(device)
        model.eval()
        tokenizer = AutoTokenizer.from_pretrained(str(resolved.path))
        tokens = WhisperTokens.from_generation_config(
            model.generation_config, int(model.config.max_target_positions)
        )
        return cls(config, model, tokenizer, tokens, device, dtype, resolved.name, resolved.path)

    # ------------------------------------------------------------ public API

    def check_options(self, options: TranscribeOptions) -> TranscribeOptions:
        """Validate options against this model; raises OptionsError naming the problem."""
        options.validated()
        if options.task == "translate" and not self.tokens.is_multilingual:
            raise OptionsError(
                f"model {self.model_name} is English-only: translate needs a multilingual model"
            )
        language = options.language.lower()
        if language != "auto":
            known = self.tokens.language_ids if self.tokens.is_multilingual else {"en": 0}
            if language not in known:
                raise OptionsError(
                    f"unknown language {options.language!r} for model {self.model_name}; "
                    f"use auto or one of: {', '.join(sorted(known))}"
                )
        if options.diarize:
            from steno_inference.diarization import DiarizationOptions

            DiarizationOptions.from_transcribe(options)  # raises OptionsError on bad counts
        return options

    def transcribe(self, source: AudioSource, options: TranscribeOptions, name: str = "") -> (
        Transcript
    ):
        """Transcribe one source; raises AudioError or OptionsError."""
        result = next(self.transcribe_many([(source, name or display_name(source))], options))
        if result.failure is not None:
            raise result.failure
        if result.transcript is None:
            raise AudioError(result.name, "no result")
        return result.transcript

    def transcribe_many(
        self,
        sources: Sequence[tuple[AudioSource, str]],
        options: TranscribeOptions,
        on_progress: Callable[[float], None] | None = None,
        on_segments: Callable[[int, list[Segment]], None] | None = None,
        is_cancelled: Callable[[], bool] | None = None,
    ) -> Iterator[SourceResult]:
        """Transcribe many sources; yields each as soon as its last window is done.

        Windows of every source (and of every concurrent caller) share decoder
        batches. ``on_progress`` receives source audio seconds as windows finish;
        ``on_segments(source_index, segments)`` receives each window's segments in
        order, as soon as the windows before it are done (for streaming). A source
        that cannot be decoded yields a SourceResult with ``error`` set and the
        others go on. When ``is_cancelled`` turns True, or the caller stops
        iterating, queued windows are dropped and busy ones freed.
        """
        options = self.check_options(options)
        jobs = [_Job(i, src, name, options) for i, (src, name) in enumerate(sources)]
        yield from self._run(jobs, on_progress, on_segments, is_cancelled or _never)

    def stats(self) -> SchedulerStats:
        return self.scheduler.stats()

    def close(self) -> None:
        self.scheduler.close()

    # -------------------------------------------------------------- pipeline

    def _run(
        self,
        jobs: list[_Job],
        on_progress: Callable[[float], None] | None,
        on_segments: Callable[[int, list[Segment]], None] | None,
        call_cancelled: Callable[[], bool],
    ) -> Iterator[SourceResult]:
        states = {job.index: _SourceState(job.name, job.options) for job in jobs}
        events: queue.Queue[tuple[str, int, Any]] = queue.Queue()
        stop = threading.Event()
        in_flight = threading.Semaphore(MAX_WINDOWS_IN_FLIGHT)

        def cancelled() -> bool:
            return stop.is_set() or call_cancelled()

        producer = threading.Thread(
            target=self._produce,
            args=(jobs, events, in_flight, cancelled),
            name="steno-audio",
            daemon=True,
        )
        producer.start()
        try:
            while states:
                try:
                    kind, index, payload = events.get(timeout=CANCEL_POLL_S)
                except queue.Empty:
                    if call_cancelled():
                        # The producer stops without reporting the sources it never
                        # reached; report every unfinished source as cancelled.
                        for unfinished in sorted(states):
                            left = states.pop(unfinished)
                            left.error = TranscriptionCancelled(left.name, "cancelled")
                            yield self._result(unfinished, left)
                        return
                    continue
                if kind == "result":
                    in_flight.release()
                state = states.get(index)
                if state is None:  # "done", or a result of a source already reported
                    continue
                if kind == "window":
                    window: Window = payload
                    state.windows[window.index] = window
                elif kind == "result":
                    self._take_result(state, payload, on_progress)
                    if on_segments is not None:
                        for segments in state.pop_in_order():
                            on_segments(index, segments)
                elif kind == "end":
                    state.expected, state.duration_s = payload
                elif kind == "speakers":
                    state.speakers = payload
                elif kind == "error":
                    state.error = payload
                if state.complete():
                    del states[index]
                    yield self._result(index, state)
        finally:
            stop.set()
            producer.join()

    def _take_result(
        self, state: _SourceState, result: DecodeResult, on_progress: Callable[[float], None] | None
    ) -> None:
        key: tuple[int, int] = result.key  # type: ignore[assignment]
        window = state.windows.pop(key[1])
        if result.failure is not None:
            state.error = EngineError(state.name, result.failure)
        elif result.cancelled:
            state.error = TranscriptionCancelled(state.name, "cancelled before it finished")
        if state.error is not None:
            return
        state.segments[key[1]] = self._segments(result, window, state.options)
        if result.language:
            state.languages[result.language] += len(result.tokens) + 1
        if on_progress is not None:
            on_progress(window.duration_s)

    def _result(self, index: int, state: _SourceState) -> SourceResult:
        if state.error is not None:
            return SourceResult(index, state.name, error=str(state.error), failure=state.error)
        segments = tuple(
            segment for key in sorted(state.segments) for segment in state.segments[key]
        )
        requested = state.options.language.lower()
        if requested != "auto":
            language = requested
        elif state.languages:
            language = state.languages.most_common(1)[0][0]
        else:
            language = "unknown" if self.tokens.is_multilingual else "en"
        transcript = Transcript(
            text=join_segment_text(segments),
            segments=segments,
            language=language,
            duration_s=state.duration_s,
            model=self.model_name,
            source=state.name,
        )
        if state.speakers is not None:
            try:
                transcript = self._label_speakers(transcript, state.speakers, state.options)
            except Exception as error:  # a diarization failure fails this source only
                LOG.exception("diarization of %s failed", state.name)
                failure = EngineError(state.name, f"diarization failed: {error}")
                return SourceResult(index, state.name, error=str(failure), failure=failure)
        return SourceResult(index, state.name, transcript=transcript)

    def _label_speakers(
        self, transcript: Transcript, turns: Future[list[Any]], options: TranscribeOptions
    ) -> Transcript:
        from steno_inference.diarization import assign_speakers

        labelled = assign_speakers(transcript, turns.result())
        if options.timestamps == "word":
            return labelled
        # Words were aligned only to split segments where the speaker changes.
        return replace(
            labelled, segments=tuple(replace(s, words=()) for s in labelled.segments)
        )

    def _diarizer(self) -> Any:
        with self._diarizer_lock:
            if self._diarizer_instance is None:
                from steno_inference.diarization import Diarizer

                self._diarizer_instance = Diarizer.load(self.device)
            return self._diarizer_instance

    def _start_diarization(self, audio: np.ndarray, options: TranscribeOptions) -> Future[Any]:
        from steno_inference.diarization import DiarizationOptions

        diarizer = self._diarizer()
        return self._diarization_pool.submit(
            diarizer, audio, DiarizationOptions.from_transcribe(options)
        )

    def _produce(
        self,
        jobs: list[_Job],
        events: queue.Queue[tuple[str, int, Any]],
        in_flight: threading.Semaphore,
        cancelled: Callable[[], bool],
    ) -> None:
        detector = SpeechDetector(self._vad_net) if self._vad_net is not None else None
        self._produce_jobs(jobs, events, in_flight, cancelled, detector)

    def _produce_jobs(
        self,
        jobs: list[_Job],
        events: queue.Queue[tuple[str, int, Any]],
        in_flight: threading.Semaphore,
        cancelled: Callable[[], bool],
        detector: SpeechDetector | None,
    ) -> None:
        for job in jobs:
            builder = WindowBuilder(detector)
            count = 0
            # Diarization needs the whole source: keep the decoded audio once, for both.
            kept: list[np.ndarray] | None = [] if job.options.diarize else None
            try:
                for window in source_windows(builder, job.source, job.name, kept,
                                             self._vad_turns, cancelled):
                    while not in_flight.acquire(timeout=CANCEL_POLL_S):
                        if cancelled():
                            return
                    if cancelled():
                        in_flight.release()
                        return
                    count += 1
                    events.put(("window", job.index, window))
                    self._submit(job, window, events, cancelled)
            except CallerGaveUp:
                return
            except AudioError as error:
                events.put(("error", job.index, error))
                continue
            except Exception as error:  # one bad file must not stop the others
                LOG.exception("decoding %s failed", job.name)
                events.put(("error", job.index, AudioError(job.name, f"cannot decode: {error}")))
                continue
            if kept is not None:
                audio = np.concatenate(kept) if kept else np.zeros(0, dtype=np.float32)
                try:
                    events.put(("speakers", job.index, self._start_diarization(audio, job.options)))
                except Exception as error:  # weights missing, say: this source fails alone
                    events.put(("error", job.index, EngineError(job.name, f"diarization: {error}")))
                    continue
            events.put(("end", job.index, (count, builder.samples_read / SAMPLE_RATE)))
        events.put(("done", -1, None))

    def _submit(
        self,
        job: _Job,
        window: Window,
        events: queue.Queue[tuple[str, int, Any]],
        cancelled: Callable[[], bool],
    ) -> None:
        request = DecodeRequest(
            key=(job.index, window.index),
            features=self.features([window.audio])[0],
            language=_language_arg(job.options),
            task=job.options.task,
            keep_encoded=job.options.timestamps == "word" or job.options.diarize,
            is_cancelled=cancelled,
        )
        index = job.index
        self.scheduler.submit(
            request, window.duration_s, lambda result: events.put(("result", index, result))
        )

    # ------------------------------------------------------------- segments

    def _decode_tokens(self, ids: list[int]) -> str:
        text: str = self.tokenizer.decode(ids)
        return text

    def _segments(
        self, result: DecodeResult, window: Window, options: TranscribeOptions
    ) -> list[Segment]:
        if result.no_speech_prob > NO_SPEECH_THRESHOLD and result.avg_logprob < LOGPROB_THRESHOLD:
            return []
        spans = split_timestamped(result.tokens, self.tokens.timestamp_begin, window.duration_s)
        words: list[WordTiming] = []
        if (options.timestamps == "word" or options.diarize) and result.encoded is not None:
            all_text = [t for _s, _e, tokens in spans for t in tokens]
            words = self.aligner.align(
                result.encoded, result.prompt, all_text, window.n_samples, result.language
            )
        segments: list[Segment] = []
        offset = 0
        for start_w, end_w, text_tokens in spans:
            text = self._decode_tokens(list(text_tokens))
            seg_words: list[Word] = []
            for w in words:
                if not offset <= w.token_start < offset + len(text_tokens):
                    continue
                w_start, w_end = window.to_source_span(
                    min(max(w.start_s, start_w), end_w), min(max(w.end_s, start_w), end_w)
                )
                seg_words.append(
                    Word(round(w_start, 3), round(w_end, 3), w.text, round(w.probability, 4))
                )
            offset += len(text_tokens)
            if not text.strip():
                continue
            start_s, end_s = window.to_source_span(start_w, end_w)
            segments.append(
                Segment(
                    start_s=round(start_s, 3),
                    end_s=round(end_s, 3),
                    text=text,
                    tokens=tuple(text_tokens),
                    avg_logprob=round(result.avg_logprob, 4),
                    no_speech_prob=round(result.no_speech_prob, 4),
                    words=tuple(seg_words),
                )
            )
        return segments


def split_timestamped(
    tokens: Sequence[int], timestamp_begin: int, window_s: float
) -> list[tuple[float, float, tuple[int, ...]]]:
    """Segments (start, end, text tokens) in window time from a timestamped token stream.

    A timestamp opens a segment, the next one closes it; text left open at the
    end of the window runs to the end of the window's audio.
    """
    spans: list[tuple[float, float, tuple[int, ...]]] = []
    start: float | None = None
    text: list[int] = []
    for token in tokens:
        if token >= timestamp_begin:
            time_s = min((token - timestamp_begin) * TIME_PER_TIMESTAMP_S, window_s)
            if start is None or not text:
                start = time_s
            else:
                spans.append((start, max(start, time_s), tuple(text)))
                start, text = None, []
        else:
            text.append(token)
    if text:
        begin = start if start is not None else 0.0
        spans.append((begin, max(begin, window_s), tuple(text)))
    return spans


def _language_arg(options: TranscribeOptions) -> str | None:
    language = options.language.lower()
    return None if language == "auto" else language


def _never() -> bool:
    return False
