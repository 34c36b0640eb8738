"""Protobuf ↔ steno types, and the bearer-token rules, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest
from steno_api.v1 import transcription_pb2 as pb
from steno_inference.options import OptionsError, TranscribeOptions
from steno_inference.progress import FileFailure, ProgressSnapshot
from steno_inference.server import messages
from steno_inference.server.auth import TokenSet, bearer_token, load_tokens
from steno_inference.server.calls import CallOptions, RawPcmSpec
from steno_inference.server.failures import BadRequest
from steno_inference.transcript import Segment, Transcript, Word

pytestmark = pytest.mark.unit


def test_options_survive_the_round_trip():
    call = CallOptions(
        TranscribeOptions(task="translate", language="de", timestamps="word", diarize=True,
                          min_speakers=2, max_speakers=4),
        model="base", formats=("srt", "json"),
    )
    back = messages.call_options(messages.options_message(call))
    assert back == call


def test_unset_fields_mean_the_defaults():
    call = messages.call_options(pb.TranscriptionOptions())
    assert call == CallOptions(TranscribeOptions(), model="", formats=())
    assert call.options.num_speakers is None  # optional: absent is not zero


def test_unknown_enum_values_are_option_errors():
    with pytest.raises(OptionsError, match="unknown task 7"):
        messages.call_options(pb.TranscriptionOptions(task=7))
    with pytest.raises(OptionsError, match="unknown output format 0"):
        messages.call_options(pb.TranscriptionOptions(formats=[pb.OUTPUT_FORMAT_UNSPECIFIED]))


def test_transcripts_survive_the_round_trip():
    transcript = Transcript(
        text="Hello there.",
        segments=(
            Segment(0.0, 1.5, " Hello there.", tokens=(1, 2, 3), avg_logprob=-0.2,
                    no_speech_prob=0.01,
                    words=(Word(0.0, 0.6, " Hello", 0.9, "SPEAKER_00"),
                           Word(0.7, 1.5, " there.", 0.8, "SPEAKER_00")),
                    speaker="SPEAKER_00"),
        ),
        language="en", duration_s=2.0, speakers=("SPEAKER_00",), model="tiny.en",
        source="a.wav",
    )
    assert messages.transcript_from(messages.transcript_message(transcript)) == transcript


def test_requests_name_their_source_on_one_line_and_need_audio():
    request = pb.TranscribeRequest(audio=b"x", source_name="  my\nrecording  ")
    assert messages.audio_input(request).name == "my recording"
    uri = messages.audio_input(pb.TranscribeRequest(audio_uri=" s3://b/k.wav "))
    assert (uri.uri, uri.name, uri.data) == ("s3://b/k.wav", "s3://b/k.wav", None)
    with pytest.raises(BadRequest, match="no audio"):
        messages.audio_input(pb.TranscribeRequest())
    with pytest.raises(BadRequest, match="longer than 256"):
        messages.audio_input(pb.TranscribeRequest(audio=b"x", source_name="n" * 300))


def test_raw_pcm_needs_a_rate_and_defaults_to_mono_s16le():
    spec = messages.raw_pcm_spec(pb.RawPcmFormat(sample_rate_hz=8000))
    assert spec == RawPcmSpec(8000, 1, "s16le")
    assert messages.raw_pcm_message(RawPcmSpec(44100, 2, "f32le")) == pb.RawPcmFormat(
        sample_rate_hz=44100, channels=2, encoding=pb.PCM_ENCODING_F32LE)
    with pytest.raises(BadRequest, match="sample_rate_hz"):
        messages.raw_pcm_spec(pb.RawPcmFormat())


def test_stream_messages_after_the_config_must_be_audio():
    audio = [pb.StreamTranscribeRequest(audio=b"ab"), pb.StreamTranscribeRequest(audio=b"c")]
    assert list(messages.stream_audio(iter(audio))) == [b"ab", b"c"]
    with pytest.raises(BadRequest, match="only be sent in the first"):
        list(messages.stream_audio(iter([pb.StreamTranscribeRequest(config=pb.StreamConfig())])))
    with pytest.raises(BadRequest, match="must be a config"):
        messages.stream_config(pb.StreamTranscribeRequest(audio=b"x"))


def test_progress_messages_carry_only_new_failures_and_the_client_adds_them_up():
    failures = (FileFailure("s3://a", "bad"), FileFailure("s3://b", "worse"))
    snapshot = ProgressSnapshot(version=4, audio_s_done=5.0, audio_s_total=9.0, files_done=2,
                                files_total=3, files_failed=2, failures=failures,
                                state="running")
    first = messages.progress_message(snapshot, failures[:1])
    second = messages.progress_message(snapshot, failures[1:])
    seen = messages.progress_from(first, ())
    assert seen.failures == failures[:1]
    assert messages.progress_from(second, seen.failures) == snapshot


def test_bearer_tokens(tmp_path: Path):
    assert bearer_token([("authorization", "Bearer abc")]) == "abc"
    assert bearer_token([("Authorization", "bearer  abc ")]) == "abc"
    assert bearer_token([("authorization", "Basic abc")]) is None
    assert bearer_token([("authorization", "Bearer ")]) is None
    assert bearer_token(None) is None
    tokens = TokenSet(["new-token", "old-token"])
    assert tokens.matches("old-token") and tokens.matches("new-token")
    assert not tokens.matches("old-token2") and not tokens.matches("")
    assert "token" not in repr(tokens).replace("tokens", "")
    path = tmp_path / "tokens"
    path.write_text("# rotated monthly\n\nnew-token\n  old-token  \n")
    assert load_tokens(path) == ("new-token", "old-token")
    path.write_text("# nothing\n")
    with pytest.raises(ValueError, match="holds no token"):
        load_tokens(path)
