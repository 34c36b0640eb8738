"""Conversions between ``steno_api.v1`` messages and steno's plain types, both directions.

The servicer turns requests into :mod:`~steno_inference.server.calls` types
and results into responses with these functions; the client turns responses
back into :class:`~steno_inference.transcript.Transcript` and friends. Nothing
here loads the engine, so the client stays light.

Enum values outside the known set (a newer client, or a zero "unspecified"
where a value is required) raise ``OptionsError``; structurally wrong
requests (no audio, a second stream config) raise ``BadRequest``. Both are
INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from steno_api.v1 import transcription_pb2 as pb

from steno_inference.options import OptionsError, OutputFormat, TranscribeOptions
from steno_inference.progress import FileFailure, ProgressSnapshot
from steno_inference.server.calls import (
    AudioInput,
    CallOptions,
    CallTiming,
    PcmEncodingName,
    RawPcmSpec,
)
from steno_inference.server.failures import BadRequest
from steno_inference.transcript import Segment, Transcript, Word

MAX_SOURCE_NAME_CHARS = 256  # a display name, not a document
DEFAULT_BYTES_NAME = "<bytes>"
DEFAULT_STREAM_NAME = "<stream>"

TASKS: dict[int, str] = {
    pb.TASK_UNSPECIFIED: "transcribe",
    pb.TASK_TRANSCRIBE: "transcribe",
    pb.TASK_TRANSLATE: "translate",
}
TIMESTAMPS: dict[int, str] = {
    pb.TIMESTAMP_GRANULARITY_UNSPECIFIED: "segment",
    pb.TIMESTAMP_GRANULARITY_SEGMENT: "segment",
    pb.TIMESTAMP_GRANULARITY_WORD: "word",
}
FORMATS: dict[int, OutputFormat] = {
    pb.OUTPUT_FORMAT_JSON: "json",
    pb.OUTPUT_FORMAT_SRT: "srt",
    pb.OUTPUT_FORMAT_VTT: "vtt",
    pb.OUTPUT_FORMAT_TXT: "txt",
    pb.OUTPUT_FORMAT_TSV: "tsv",
}
FORMAT_VALUES: dict[OutputFormat, pb.OutputFormat] = {
    "json": pb.OUTPUT_FORMAT_JSON,
    "srt": pb.OUTPUT_FORMAT_SRT,
    "vtt": pb.OUTPUT_FORMAT_VTT,
    "txt": pb.OUTPUT_FORMAT_TXT,
    "tsv": pb.OUTPUT_FORMAT_TSV,
}
ENCODINGS: dict[int, PcmEncodingName] = {
    pb.PCM_ENCODING_UNSPECIFIED: "s16le",
    pb.PCM_ENCODING_S16LE: "s16le",
    pb.PCM_ENCODING_F32LE: "f32le",
}
ENCODING_VALUES: dict[PcmEncodingName, pb.PcmEncoding] = {
    "s16le": pb.PCM_ENCODING_S16LE,
    "f32le": pb.PCM_ENCODING_F32LE,
}
SHARD_STATES: dict[str, pb.ShardState] = {
    "pending": pb.SHARD_STATE_PENDING,
    "running": pb.SHARD_STATE_RUNNING,
    "succeeded": pb.SHARD_STATE_SUCCEEDED,
    "failed": pb.SHARD_STATE_FAILED,
}
SHARD_STATE_NAMES: dict[int, str] = {int(value): name for name, value in SHARD_STATES.items()}


# ------------------------------------------------------------ requests in


def call_options(message: pb.TranscriptionOptions) -> CallOptions:
    """Options of a request; values are checked by the engine (``check_options``)."""
    task = TASKS.get(message.task)
    if task is None:
        raise OptionsError(f"unknown task {message.task}: use TASK_TRANSCRIBE or TASK_TRANSLATE")
    timestamps = TIMESTAMPS.get(message.timestamps)
    if timestamps is None:
        raise OptionsError(f"unknown timestamps {message.timestamps}: use SEGMENT or WORD")
    formats: list[OutputFormat] = []
    for value in message.formats:
        fmt = FORMATS.get(value)
        if fmt is None:
            raise OptionsError(
                f"unknown output format {value}; choose from {', '.join(FORMAT_VALUES)}"
            )
        formats.append(fmt)
    options = TranscribeOptions(
        task=task,  # type: ignore[arg-type]  # checked by the table above
        language=message.language.strip() or "auto",
        timestamps=timestamps,  # type: ignore[arg-type]
        diarize=message.diarize,
        num_speakers=message.num_speakers if message.HasField("num_speakers") else None,
        min_speakers=message.min_speakers if message.HasField("min_speakers") else None,
        max_speakers=message.max_speakers if message.HasField("max_speakers") else None,
    )
    return CallOptions(options, model=message.model.strip(), formats=tuple(formats))


def raw_pcm_spec(message: pb.RawPcmFormat) -> RawPcmSpec:
    encoding = ENCODINGS.get(message.encoding)
    if encoding is None:
        raise BadRequest(f"unknown raw_pcm.encoding {message.encoding}: use S16LE or F32LE")
    if message.sample_rate_hz <= 0:
        raise BadRequest("raw_pcm.sample_rate_hz must be set (samples per second)")
    return RawPcmSpec(message.sample_rate_hz, message.channels or 1, encoding)


def source_name(text: str, default: str) -> str:
    name = " ".join(text.split())  # one line: the name appears inside one-line messages
    if len(name) > MAX_SOURCE_NAME_CHARS:
        raise BadRequest(f"source_name is longer than {MAX_SOURCE_NAME_CHARS} characters")
    return name or default


def audio_input(request: pb.TranscribeRequest) -> AudioInput:
    kind = request.WhichOneof("source")
    raw = raw_pcm_spec(request.raw_pcm) if request.HasField("raw_pcm") else None
    if kind == "audio":
        name = source_name(request.source_name, DEFAULT_BYTES_NAME)
        return AudioInput(name, data=request.audio, raw_pcm=raw)
    if kind == "audio_uri":
        uri = request.audio_uri.strip()
        return AudioInput(source_name(request.source_name, uri), uri=uri, raw_pcm=raw)
    raise BadRequest("no audio: set audio (bytes) or audio_uri")


def stream_config(first: pb.StreamTranscribeRequest) -> tuple[pb.StreamConfig, str]:
    if first.WhichOneof("message") != "config":
        raise BadRequest("the first StreamTranscribe message must be a config")
    config = first.config
    return config, source_name(config.source_name, DEFAULT_STREAM_NAME)


def stream_audio(requests: Iterator[pb.StreamTranscribeRequest]) -> Iterator[bytes]:
    """The audio bytes of the messages after the config."""
    for message in requests:
        kind = message.WhichOneof("message")
        if kind == "audio":
            yield message.audio
        elif kind == "config":
            raise BadRequest("config may only be sent in the first StreamTranscribe message")
        else:
            raise BadRequest("a StreamTranscribe message must carry config or audio")


# ---------------------------------------------------------- results out


def word_message(word: Word) -> pb.Word:
    return pb.Word(
        start_s=word.start_s, end_s=word.end_s, text=word.text,
        probability=word.probability, speaker=word.speaker or "",
    )


def segment_message(segment: Segment) -> pb.Segment:
    return pb.Segment(
        start_s=segment.start_s,
        end_s=segment.end_s,
        text=segment.text,
        avg_logprob=segment.avg_logprob,
        no_speech_prob=segment.no_speech_prob,
        words=[word_message(word) for word in segment.words],
        speaker=segment.speaker or "",
        tokens=list(segment.tokens),
    )


def transcript_message(transcript: Transcript) -> pb.Transcript:
    return pb.Transcript(
        text=transcript.text,
        segments=[segment_message(segment) for segment in transcript.segments],
        language=transcript.language,
        duration_s=transcript.duration_s,
        speakers=list(transcript.speakers),
        model=transcript.model,
        source=transcript.source,
    )


def outputs_message(outputs: Sequence[tuple[OutputFormat, str]]) -> list[pb.RenderedOutput]:
    return [pb.RenderedOutput(format=FORMAT_VALUES[fmt], content=text) for fmt, text in outputs]


def timing_message(timing: CallTiming) -> pb.CallTiming:
    return pb.CallTiming(queue_wait_s=timing.queue_wait_s, processing_s=timing.processing_s)


def progress_message(
    snapshot: ProgressSnapshot, new_failures: Sequence[FileFailure]
) -> pb.WatchProgressResponse:
    return pb.WatchProgressResponse(
        version=snapshot.version,
        audio_s_done=snapshot.audio_s_done,
        audio_s_total=snapshot.audio_s_total,
        files_done=snapshot.files_done,
        files_total=snapshot.files_total,
        files_failed=snapshot.files_failed,
        new_failures=[pb.FileFailure(uri=f.uri, reason=f.reason) for f in new_failures],
        finished=snapshot.finished,
        state=SHARD_STATES.get(snapshot.state, pb.SHARD_STATE_UNSPECIFIED),
        message=snapshot.message,
    )


# ------------------------------------------------- back to plain types


def options_message(call: CallOptions) -> pb.TranscriptionOptions:
    """The request form of ``call`` (for the client)."""
    options = call.options
    message = pb.TranscriptionOptions(
        model=call.model,
        task=pb.TASK_TRANSLATE if options.task == "translate" else pb.TASK_TRANSCRIBE,
        language="" if options.language == "auto" else options.language,
        timestamps=(
            pb.TIMESTAMP_GRANULARITY_WORD
            if options.timestamps == "word"
            else pb.TIMESTAMP_GRANULARITY_SEGMENT
        ),
        diarize=options.diarize,
        formats=[FORMAT_VALUES[fmt] for fmt in call.formats],
    )
    if options.num_speakers is not None:
        message.num_speakers = options.num_speakers
    if options.min_speakers is not None:
        message.min_speakers = options.min_speakers
    if options.max_speakers is not None:
        message.max_speakers = options.max_speakers
    return message


def raw_pcm_message(spec: RawPcmSpec) -> pb.RawPcmFormat:
    return pb.RawPcmFormat(
        sample_rate_hz=spec.sample_rate_hz,
        channels=spec.channels,
        encoding=ENCODING_VALUES[spec.sample_format],
    )


def word_from(message: pb.Word) -> Word:
    return Word(message.start_s, message.end_s, message.text, message.probability,
                message.speaker or None)


def segment_from(message: pb.Segment) -> Segment:
    return Segment(
        start_s=message.start_s,
        end_s=message.end_s,
        text=message.text,
        tokens=tuple(message.tokens),
        avg_logprob=message.avg_logprob,
        no_speech_prob=message.no_speech_prob,
        words=tuple(word_from(word) for word in message.words),
        speaker=message.speaker or None,
    )


def transcript_from(message: pb.Transcript) -> Transcript:
    return Transcript(
        text=message.text,
        segments=tuple(segment_from(segment) for segment in message.segments),
        language=message.language,
        duration_s=message.duration_s,
        speakers=tuple(message.speakers),
        model=message.model,
        source=message.source,
    )


def outputs_from(messages: Sequence[pb.RenderedOutput]) -> dict[OutputFormat, str]:
    return {FORMATS[m.format]: m.content for m in messages if m.format in FORMATS}


def timing_from(message: pb.CallTiming) -> CallTiming:
    return CallTiming(message.queue_wait_s, message.processing_s)


def progress_from(
    message: pb.WatchProgressResponse, failures_so_far: tuple[FileFailure, ...]
) -> ProgressSnapshot:
    """A snapshot with every failure seen on the stream so far (messages carry only new ones)."""
    failures = failures_so_far + tuple(
        FileFailure(f.uri, f.reason) for f in message.new_failures
    )
    return ProgressSnapshot(
        version=message.version,
        audio_s_done=message.audio_s_done,
        audio_s_total=message.audio_s_total,
        files_done=message.files_done,
        files_total=message.files_total,
        files_failed=message.files_failed,
        failures=failures,
        finished=message.finished,
        state=SHARD_STATE_NAMES.get(message.state, "pending"),
        message=message.message,
    )
