from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Task(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_UNSPECIFIED: _ClassVar[Task]
    TASK_TRANSCRIBE: _ClassVar[Task]
    TASK_TRANSLATE: _ClassVar[Task]

class TimestampGranularity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIMESTAMP_GRANULARITY_UNSPECIFIED: _ClassVar[TimestampGranularity]
    TIMESTAMP_GRANULARITY_SEGMENT: _ClassVar[TimestampGranularity]
    TIMESTAMP_GRANULARITY_WORD: _ClassVar[TimestampGranularity]

class OutputFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_FORMAT_UNSPECIFIED: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_JSON: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_SRT: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_VTT: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_TXT: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_TSV: _ClassVar[OutputFormat]

class PcmEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PCM_ENCODING_UNSPECIFIED: _ClassVar[PcmEncoding]
    PCM_ENCODING_S16LE: _ClassVar[PcmEncoding]
    PCM_ENCODING_F32LE: _ClassVar[PcmEncoding]

class ShardState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SHARD_STATE_UNSPECIFIED: _ClassVar[ShardState]
    SHARD_STATE_PENDING: _ClassVar[ShardState]
    SHARD_STATE_RUNNING: _ClassVar[ShardState]
    SHARD_STATE_SUCCEEDED: _ClassVar[ShardState]
    SHARD_STATE_FAILED: _ClassVar[ShardState]
TASK_UNSPECIFIED: Task
TASK_TRANSCRIBE: Task
TASK_TRANSLATE: Task
TIMESTAMP_GRANULARITY_UNSPECIFIED: TimestampGranularity
TIMESTAMP_GRANULARITY_SEGMENT: TimestampGranularity
TIMESTAMP_GRANULARITY_WORD: TimestampGranularity
OUTPUT_FORMAT_UNSPECIFIED: OutputFormat
OUTPUT_FORMAT_JSON: OutputFormat
OUTPUT_FORMAT_SRT: OutputFormat
OUTPUT_FORMAT_VTT: OutputFormat
OUTPUT_FORMAT_TXT: OutputFormat
OUTPUT_FORMAT_TSV: OutputFormat
PCM_ENCODING_UNSPECIFIED: PcmEncoding
PCM_ENCODING_S16LE: PcmEncoding
PCM_ENCODING_F32LE: PcmEncoding
SHARD_STATE_UNSPECIFIED: ShardState
SHARD_STATE_PENDING: ShardState
SHARD_STATE_RUNNING: ShardState
SHARD_STATE_SUCCEEDED: ShardState
SHARD_STATE_FAILED: ShardState

class TranscriptionOptions(_message.Message):
    __slots__ = ("model", "task", "language", "timestamps", "diarize", "num_speakers", "min_speakers", "max_speakers", "formats")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    DIARIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_SPEAKERS_FIELD_NUMBER: _ClassVar[int]
    MIN_SPEAKERS_FIELD_NUMBER: _ClassVar[int]
    MAX_SPEAKERS_FIELD_NUMBER: _ClassVar[int]
    FORMATS_FIELD_NUMBER: _ClassVar[int]
    model: str
    task: Task
    language: str
    timestamps: TimestampGranularity
    diarize: bool
    num_speakers: int
    min_speakers: int
    max_speakers: int
    formats: _containers.RepeatedScalarFieldContainer[OutputFormat]
    def __init__(self, model: _Optional[str] = ..., task: _Optional[_Union[Task, str]] = ..., language: _Optional[str] = ..., timestamps: _Optional[_Union[TimestampGranularity, str]] = ..., diarize: _Optional[bool] = ..., num_speakers: _Optional[int] = ..., min_speakers: _Optional[int] = ..., max_speakers: _Optional[int] = ..., formats: _Optional[_Iterable[_Union[OutputFormat, str]]] = ...) -> None: ...

class RawPcmFormat(_message.Message):
    __slots__ = ("sample_rate_hz", "channels", "encoding")
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    sample_rate_hz: int
    channels: int
    encoding: PcmEncoding
    def __init__(self, sample_rate_hz: _Optional[int] = ..., channels: _Optional[int] = ..., encoding: _Optional[_Union[PcmEncoding, str]] = ...) -> None: ...

class TranscribeRequest(_message.Message):
    __slots__ = ("audio", "audio_uri", "raw_pcm", "options", "source_name")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    AUDIO_URI_FIELD_NUMBER: _ClassVar[int]
    RAW_PCM_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    audio_uri: str
    raw_pcm: RawPcmFormat
    options: TranscriptionOptions
    source_name: str
    def __init__(self, audio: _Optional[bytes] = ..., audio_uri: _Optional[str] = ..., raw_pcm: _Optional[_Union[RawPcmFormat, _Mapping]] = ..., options: _Optional[_Union[TranscriptionOptions, _Mapping]] = ..., source_name: _Optional[str] = ...) -> None: ...

class Word(_message.Message):
    __slots__ = ("start_s", "end_s", "text", "probability", "speaker")
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_FIELD_NUMBER: _ClassVar[int]
    start_s: float
    end_s: float
    text: str
    probability: float
    speaker: str
    def __init__(self, start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., text: _Optional[str] = ..., probability: _Optional[float] = ..., speaker: _Optional[str] = ...) -> None: ...

class Segment(_message.Message):
    __slots__ = ("start_s", "end_s", "text", "avg_logprob", "no_speech_prob", "words", "speaker", "tokens")
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    AVG_LOGPROB_FIELD_NUMBER: _ClassVar[int]
    NO_SPEECH_PROB_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    start_s: float
    end_s: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    words: _containers.RepeatedCompositeFieldContainer[Word]
    speaker: str
    tokens: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., text: _Optional[str] = ..., avg_logprob: _Optional[float] = ..., no_speech_prob: _Optional[float] = ..., words: _Optional[_Iterable[_Union[Word, _Mapping]]] = ..., speaker: _Optional[str] = ..., tokens: _Optional[_Iterable[int]] = ...) -> None: ...

class Transcript(_message.Message):
    __slots__ = ("text", "segments", "language", "duration_s", "speakers", "model", "source")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    SPEAKERS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    text: str
    segments: _containers.RepeatedCompositeFieldContainer[Segment]
    language: str
    duration_s: float
    speakers: _containers.RepeatedScalarFieldContainer[str]
    model: str
    source: str
    def __init__(self, text: _Optional[str] = ..., segments: _Optional[_Iterable[_Union[Segment, _Mapping]]] = ..., language: _Optional[str] = ..., duration_s: _Optional[float] = ..., speakers: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class RenderedOutput(_message.Message):
    __slots__ = ("format", "content")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    format: OutputFormat
    content: str
    def __init__(self, format: _Optional[_Union[OutputFormat, str]] = ..., content: _Optional[str] = ...) -> None: ...

class CallTiming(_message.Message):
    __slots__ = ("queue_wait_s", "processing_s")
    QUEUE_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_S_FIELD_NUMBER: _ClassVar[int]
    queue_wait_s: float
    processing_s: float
    def __init__(self, queue_wait_s: _Optional[float] = ..., processing_s: _Optional[float] = ...) -> None: ...

class TranscribeResponse(_message.Message):
    __slots__ = ("transcript", "outputs", "timing")
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    transcript: Transcript
    outputs: _containers.RepeatedCompositeFieldContainer[RenderedOutput]
    timing: CallTiming
    def __init__(self, transcript: _Optional[_Union[Transcript, _Mapping]] = ..., outputs: _Optional[_Iterable[_Union[RenderedOutput, _Mapping]]] = ..., timing: _Optional[_Union[CallTiming, _Mapping]] = ...) -> None: ...

class StreamConfig(_message.Message):
    __slots__ = ("raw_pcm", "options", "source_name")
    RAW_PCM_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    raw_pcm: RawPcmFormat
    options: TranscriptionOptions
    source_name: str
    def __init__(self, raw_pcm: _Optional[_Union[RawPcmFormat, _Mapping]] = ..., options: _Optional[_Union[TranscriptionOptions, _Mapping]] = ..., source_name: _Optional[str] = ...) -> None: ...

class StreamTranscribeRequest(_message.Message):
    __slots__ = ("config", "audio")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    config: StreamConfig
    audio: bytes
    def __init__(self, config: _Optional[_Union[StreamConfig, _Mapping]] = ..., audio: _Optional[bytes] = ...) -> None: ...

class StreamSegments(_message.Message):
    __slots__ = ("window_index", "segments", "audio_s_done")
    WINDOW_INDEX_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_S_DONE_FIELD_NUMBER: _ClassVar[int]
    window_index: int
    segments: _containers.RepeatedCompositeFieldContainer[Segment]
    audio_s_done: float
    def __init__(self, window_index: _Optional[int] = ..., segments: _Optional[_Iterable[_Union[Segment, _Mapping]]] = ..., audio_s_done: _Optional[float] = ...) -> None: ...

class StreamSummary(_message.Message):
    __slots__ = ("language", "duration_s", "segment_count", "model", "outputs", "timing")
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    language: str
    duration_s: float
    segment_count: int
    model: str
    outputs: _containers.RepeatedCompositeFieldContainer[RenderedOutput]
    timing: CallTiming
    def __init__(self, language: _Optional[str] = ..., duration_s: _Optional[float] = ..., segment_count: _Optional[int] = ..., model: _Optional[str] = ..., outputs: _Optional[_Iterable[_Union[RenderedOutput, _Mapping]]] = ..., timing: _Optional[_Union[CallTiming, _Mapping]] = ...) -> None: ...

class StreamTranscribeResponse(_message.Message):
    __slots__ = ("segments", "summary")
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    segments: StreamSegments
    summary: StreamSummary
    def __init__(self, segments: _Optional[_Union[StreamSegments, _Mapping]] = ..., summary: _Optional[_Union[StreamSummary, _Mapping]] = ...) -> None: ...

class WatchProgressRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FileFailure(_message.Message):
    __slots__ = ("uri", "reason")
    URI_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    uri: str
    reason: str
    def __init__(self, uri: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class WatchProgressResponse(_message.Message):
    __slots__ = ("version", "audio_s_done", "audio_s_total", "files_done", "files_total", "files_failed", "new_failures", "finished", "state", "message")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AUDIO_S_DONE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_S_TOTAL_FIELD_NUMBER: _ClassVar[int]
    FILES_DONE_FIELD_NUMBER: _ClassVar[int]
    FILES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    FILES_FAILED_FIELD_NUMBER: _ClassVar[int]
    NEW_FAILURES_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    version: int
    audio_s_done: float
    audio_s_total: float
    files_done: int
    files_total: int
    files_failed: int
    new_failures: _containers.RepeatedCompositeFieldContainer[FileFailure]
    finished: bool
    state: ShardState
    message: str
    def __init__(self, version: _Optional[int] = ..., audio_s_done: _Optional[float] = ..., audio_s_total: _Optional[float] = ..., files_done: _Optional[int] = ..., files_total: _Optional[int] = ..., files_failed: _Optional[int] = ..., new_failures: _Optional[_Iterable[_Union[FileFailure, _Mapping]]] = ..., finished: _Optional[bool] = ..., state: _Optional[_Union[ShardState, str]] = ..., message: _Optional[str] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "multilingual", "device", "dtype", "batch_size")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MULTILINGUAL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    name: str
    multilingual: bool
    device: str
    dtype: str
    batch_size: int
    def __init__(self, name: _Optional[str] = ..., multilingual: _Optional[bool] = ..., device: _Optional[str] = ..., dtype: _Optional[str] = ..., batch_size: _Optional[int] = ...) -> None: ...

class ServerLimits(_message.Message):
    __slots__ = ("max_audio_bytes", "max_message_bytes", "max_queue_audio_s", "long_call_reserve_s", "grace_s", "max_concurrent_calls")
    MAX_AUDIO_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_AUDIO_S_FIELD_NUMBER: _ClassVar[int]
    LONG_CALL_RESERVE_S_FIELD_NUMBER: _ClassVar[int]
    GRACE_S_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_CALLS_FIELD_NUMBER: _ClassVar[int]
    max_audio_bytes: int
    max_message_bytes: int
    max_queue_audio_s: float
    long_call_reserve_s: float
    grace_s: float
    max_concurrent_calls: int
    def __init__(self, max_audio_bytes: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., max_queue_audio_s: _Optional[float] = ..., long_call_reserve_s: _Optional[float] = ..., grace_s: _Optional[float] = ..., max_concurrent_calls: _Optional[int] = ...) -> None: ...

class GetServerInfoResponse(_message.Message):
    __slots__ = ("version", "models", "limits", "diarization", "mode", "progress")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    DIARIZATION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    version: str
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    limits: ServerLimits
    diarization: bool
    mode: str
    progress: bool
    def __init__(self, version: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., limits: _Optional[_Union[ServerLimits, _Mapping]] = ..., diarization: _Optional[bool] = ..., mode: _Optional[str] = ..., progress: _Optional[bool] = ...) -> None: ...
