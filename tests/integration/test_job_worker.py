"""The job worker against a real S3 server (SeaweedFS, credentials on) with real speech.

Inputs are uploaded, a plan is written, shards are worked through by the
tiny.en engine on CPU (in this process, or as worker processes), and every
committed byte is checked: outputs against the manifest's checksums and
against what the record's transcript renders to, manifests against the
plan, the store's listing against what the job may have written.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jiwer
import pytest
from steno_devcluster.objectstore import ObjectStore
from steno_inference.engine import Engine
from steno_inference.jobs import layout
from steno_inference.jobs.commit import Committer
from steno_inference.jobs.exitcodes import EXIT_BAD_SPEC, EXIT_DONE, EXIT_RETRYABLE
from steno_inference.jobs.plan import Plan, plan_job, read_plan, write_plan
from steno_inference.jobs.pod import run_job_pod
from steno_inference.jobs.records import FileRecord
from steno_inference.jobs.spec import parse_spec
from steno_inference.jobs.worker import ShardOutcome, run_shard
from steno_inference.models.errors import ModelNotFoundError
from steno_inference.progress import ProgressBoard
from steno_inference.storage.client import ObjectStorage
from steno_inference.storage.errors import PreconditionFailedError
from steno_inference.storage.uri import S3Uri
from steno_inference.transcript import Segment, Transcript
from support.jobs import (
    EVENTS_MARKER,
    M4A_SOURCE,
    SPEECH,
    bad_inputs,
    check_manifests,
    encode_m4a,
    event_lines,
    get,
    incomplete_uploads,
    list_keys,
    put_all,
    storage_for,
)
from support.speech import cards_utterances, librivox_utterances, normalize_text
from support.workers import WorkerZygote

pytestmark = pytest.mark.integration

IN_BUCKET = "steno-audio-in"
OUT_BUCKET = "steno-results"
WORKER_TIMEOUT_S = 180.0  # one worker process, start to exit, on two busy cores
MIN_KILLS = 20
MAX_WORKER_RUNS = 80  # bounds the kill test even if kills keep landing before any commit
KILL_SEED = 20240607
FIRST_RUN_GUESS_S = 5.0  # until a run has finished on its own
KILLS_FROM_START = 0.25  # share of kills timed from the start rather than from commit events
EVENT_JITTER_S = 0.05  # a kill lands this long after a commit event, at most
ENGINE_LOADED = "engine loaded"  # the worker's log line once the model is up
MAX_KILLS_PER_JOB = 7  # then the job runs to the end and a fresh one starts from nothing


@dataclass(frozen=True)
class Corpus:
    prefix: str  # under IN_BUCKET
    speech: dict[str, str]  # key → reference text
    bad: dict[str, Any]  # key → BadInput
    m4a_key: str


@pytest.fixture(scope="module")
def s3(object_store: ObjectStore) -> Any:
    object_store.create_bucket(IN_BUCKET)
    object_store.create_bucket(OUT_BUCKET)
    return object_store.boto3_client()


@pytest.fixture(scope="module")
def storage(object_store: ObjectStore, s3: Any) -> ObjectStorage:
    return storage_for(object_store)


@pytest.fixture(scope="module")
def m4a() -> bytes:
    return encode_m4a(M4A_SOURCE)


def _references() -> dict[str, str]:
    refs = {u.path.name: u.reference for u in [*cards_utterances(), *librivox_utterances()]}
    return {key: refs[path.name] for key, path in SPEECH.items()}


@pytest.fixture(scope="module")
def corpus(s3: Any, speech_data: None, m4a: bytes) -> Corpus:
    prefix = "corpus/"
    refs = _references()
    objects = {prefix + key: path.read_bytes() for key, path in SPEECH.items()}
    objects[prefix + "librivox/0870.m4a"] = m4a
    bad = bad_inputs(m4a)
    objects.update({prefix + key: item.data for key, item in bad.items()})
    objects[prefix + "README.txt"] = b"not selected by the suffix filter\n"
    put_all(s3, IN_BUCKET, objects)
    speech = {prefix + key: text for key, text in refs.items()}
    speech[prefix + "librivox/0870.m4a"] = next(
        u.reference for u in librivox_utterances() if u.path == M4A_SOURCE)
    return Corpus(prefix, speech, {prefix + k: v for k, v in bad.items()},
                  prefix + "librivox/0870.m4a")


def _spec(job_id: str, out: str, *, prefix: str | None = None, uris: list[str] | None = None,
          parallelism: int = 2, formats: tuple[str, ...] = ("json", "srt", "txt")) -> Any:
    source: dict[str, Any] = (
        {"prefix": f"s3://{IN_BUCKET}/{prefix}", "suffixes": [".wav", ".m4a", ".mp3"]}
        if prefix is not None else {"uris": uris}
    )
    return parse_spec({
        "jobId": job_id, "input": source,
        "output": {"uri": f"s3://{OUT_BUCKET}/{out}/", "formats": list(formats)},
        "model": "tiny.en", "language": "en", "parallelism": parallelism,
    })


def _plan(storage: ObjectStorage, spec: Any) -> Plan:
    return write_plan(plan_job(spec, storage), storage)


def _text_of(record_or_entry_json: dict[str, Any]) -> str:
    return normalize_text(str(record_or_entry_json["text"]))


class CountingEngine:
    """The real engine, counting which sources it was asked to transcribe."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sources: list[str] = []

    def check_options(self, options: Any) -> Any:
        return self.engine.check_options(options)

    def transcribe_many(self, sources: Any, options: Any, **kwargs: Any) -> Iterator[Any]:
        self.sources.extend(name for _, name in sources)
        return self.engine.transcribe_many(sources, options, **kwargs)


# ----------------------------------------------------------------- in process


def test_a_job_commits_every_file_exactly_once(
    s3: Any, storage: ObjectStorage, corpus: Corpus, tiny_engine: Engine
) -> None:
    plan = _plan(storage, _spec("job-full", "full", prefix=corpus.prefix))
    assert plan.shard_count == 2
    assert str(S3Uri(IN_BUCKET, corpus.prefix + "README.txt")) not in {
        str(i.uri) for i in plan.inputs}
    # write_plan is create-only: planning again returns the stored plan.
    assert write_plan(plan_job(plan.spec, storage), storage) == plan
    assert read_plan(storage, layout.plan_uri(plan.spec.output)) == plan

    outcomes: list[ShardOutcome] = []
    boards: list[ProgressBoard] = []
    started = time.monotonic()
    for shard in range(plan.shard_count):
        board = ProgressBoard()
        outcomes.append(run_shard(tiny_engine, storage, plan, shard, board))
        boards.append(board)
    elapsed_s = time.monotonic() - started

    checked = check_manifests(s3, plan, complete=True)
    assert sum(o.files for o in outcomes) == len(plan.inputs) == len(corpus.speech) + len(
        corpus.bad)
    assert sum(o.decided_here for o in outcomes) == len(plan.inputs)  # nothing adopted
    for board, outcome in zip(boards, outcomes, strict=True):
        snap = board.snapshot()
        assert (snap.state, snap.finished) == ("succeeded", True)
        assert snap.files_done == snap.files_total == outcome.files
        assert snap.files_failed == outcome.failed == len(snap.failures)
        assert snap.audio_s_done == pytest.approx(outcome.audio_s, abs=0.5)

    # Speech is transcribed (the M4A needed ranged reads: its index is at the end).
    hypotheses, references = [], []
    for key, reference in corpus.speech.items():
        entry = checked.files[f"s3://{IN_BUCKET}/{key}"]
        assert entry["status"] == "succeeded", entry
        assert entry["durationS"] > 0.5
        assert [o["format"] for o in entry["outputs"]] == ["json", "srt", "txt"]
        transcript = json.loads(checked.outputs[entry["outputs"][0]["uri"]])
        hypotheses.append(_text_of(transcript))
        references.append(normalize_text(reference))
        stem = key.removeprefix(corpus.prefix).rsplit(".", 1)[0]
        assert entry["outputs"][0]["uri"] == f"s3://{OUT_BUCKET}/full/{stem}.json"
    error_rate = jiwer.wer(references, hypotheses)
    assert error_rate < 0.35, list(zip(references, hypotheses, strict=True))

    # Every bad object is a per-file failure with its reason; none stopped the others.
    for key, bad in corpus.bad.items():
        entry = checked.files[f"s3://{IN_BUCKET}/{key}"]
        assert entry["status"] == "failed" and entry["outputs"] == []
        assert entry["failure"]["reason"] == bad.reason, entry
        assert bad.message_part in entry["failure"]["message"], entry
    assert incomplete_uploads(s3, OUT_BUCKET) == []

    # A rerun finds the manifests and writes nothing.
    before = {key: s3.head_object(Bucket=OUT_BUCKET, Key=key)["ETag"]
              for key in list_keys(s3, OUT_BUCKET, "full/")}
    again = run_shard(tiny_engine, storage, plan, 0, ProgressBoard())
    assert again.already_done and again.files == outcomes[0].files
    assert {key: s3.head_object(Bucket=OUT_BUCKET, Key=key)["ETag"]
            for key in list_keys(s3, OUT_BUCKET, "full/")} == before
    print(f"\njob of {len(plan.inputs)} files: {elapsed_s:.1f} s, WER {error_rate:.3f}")


def test_a_restart_rolls_forward_what_a_killed_worker_left(
    s3: Any, storage: ObjectStorage, corpus: Corpus, tiny_engine: Engine
) -> None:
    keys = [corpus.prefix + k for k in ("cards/001.wav", "cards/003.wav", "cards/005.wav")]
    plan = _plan(storage, _spec("job-roll", "roll", uris=[f"s3://{IN_BUCKET}/{k}" for k in keys],
                               parallelism=1))
    first, second, third = plan.shard(0)
    committer = Committer(storage, plan)
    # Killed after deciding `first` (record written, no output yet) and halfway
    # through `second`'s outputs: the records hold transcripts this worker never made.
    records: dict[str, FileRecord] = {}
    for item, text in ((first, " Roll forward one."), (second, " Roll forward two.")):
        transcript = Transcript(text.strip(), (Segment(0.0, 1.0, text),), "en", 1.5, model="x")
        record = committer.success_record(item, transcript)
        storage.put(committer.record_uri(item), record.to_bytes(), create_only=True)
        records[str(item.uri)] = record
    half = records[str(second.uri)].outputs[0]
    storage.put(half.uri, b"half of an older attempt")  # a stale object at an output key

    counting = CountingEngine(tiny_engine)
    outcome = run_shard(counting, storage, plan, 0, ProgressBoard())
    assert counting.sources == [str(third.uri)]  # decided files are not transcribed again
    assert (outcome.decided_here, outcome.adopted) == (1, 2)
    checked = check_manifests(s3, plan, complete=True)
    for uri, record in records.items():
        entry = checked.files[uri]
        assert entry["outputs"] == [o.to_dict() for o in record.outputs]
        text = checked.outputs[entry["outputs"][2]["uri"]].decode()
        assert text.strip() == record.transcript["text"]  # type: ignore[index]


def test_a_worker_that_loses_the_race_follows_the_winners_record(
    s3: Any, storage: ObjectStorage, corpus: Corpus, tiny_engine: Engine
) -> None:
    uri = f"s3://{IN_BUCKET}/{corpus.prefix}cards/003.wav"
    plan = _plan(storage, _spec("job-lost", "lost", uris=[uri], parallelism=1))
    (item,) = plan.shard(0)
    committer = Committer(storage, plan)
    winner = committer.failure_record(item, "corrupt", "another worker decided first")
    storage.put(committer.record_uri(item), winner.to_bytes(), create_only=True)
    events: list[tuple[str, dict[str, Any]]] = []
    outcome = run_shard(tiny_engine, storage, plan, 0, ProgressBoard(),
                        on_event=lambda e, f: events.append((e, f)))
    assert (outcome.decided_here, outcome.adopted, outcome.failed) == (0, 1, 1)
    checked = check_manifests(s3, plan, complete=True)
    assert checked.files[uri]["failure"]["message"] == "another worker decided first"
    assert checked.outputs == {}


def test_inputs_changed_or_deleted_after_planning_fail_alone(
    s3: Any, storage: ObjectStorage, corpus: Corpus, tiny_engine: Engine
) -> None:
    data = SPEECH["cards/001.wav"].read_bytes()
    keys = {name: f"drift/{name}.wav" for name in ("kept", "changed", "deleted")}
    put_all(s3, IN_BUCKET, {key: data for key in keys.values()})
    uris = [f"s3://{IN_BUCKET}/{key}" for key in keys.values()]
    uris.append(f"s3://{IN_BUCKET}/drift/never-there.wav")
    plan = _plan(storage, _spec("job-drift", "drift", uris=uris, parallelism=1))
    s3.put_object(Bucket=IN_BUCKET, Key=keys["changed"], Body=data + b"\0" * 64)
    s3.delete_object(Bucket=IN_BUCKET, Key=keys["deleted"])
    run_shard(tiny_engine, storage, plan, 0, ProgressBoard())
    files = check_manifests(s3, plan, complete=True).files
    reasons = {uri.rsplit("/", 1)[1]: (e["status"], (e["failure"] or {}).get("reason"))
               for uri, e in files.items()}
    assert reasons == {
        "kept.wav": ("succeeded", None),
        "changed.wav": ("failed", "changed"),
        "deleted.wav": ("failed", "missing"),
        "never-there.wav": ("failed", "missing"),
    }


def test_pod_exit_codes(object_store: ObjectStore, storage: ObjectStorage, s3: Any,
                        corpus: Corpus, tiny_engine: Engine) -> None:
    plan = _plan(storage, _spec("job-codes", "codes", parallelism=1,
                                uris=[f"s3://{IN_BUCKET}/{corpus.prefix}cards/001.wav"]))
    plan_uri = str(layout.plan_uri(plan.spec.output))

    def pod(uri: str, shard: int, store: ObjectStorage = storage, load: Any = None,
            cancelled: bool = False) -> int:
        return run_job_pod(uri, shard, storage=store, board=ProgressBoard(),
                           load_engine=load or (lambda model: tiny_engine),
                           is_cancelled=lambda: cancelled).exit_code

    def missing_model(model: str) -> Engine:
        raise ModelNotFoundError(f"no model {model}")

    assert pod(f"s3://{OUT_BUCKET}/codes/nothing.json", 0) == EXIT_BAD_SPEC  # no plan
    assert pod("not-a-uri", 0) == EXIT_BAD_SPEC
    assert pod(plan_uri, 1) == EXIT_BAD_SPEC  # no such shard
    assert pod(plan_uri, 0, load=missing_model) == EXIT_BAD_SPEC
    unreachable = storage_for(object_store, endpoint_url="http://127.0.0.1:9", max_attempts=1,
                              connect_timeout_s=1.0)
    assert pod(plan_uri, 0, store=unreachable) == EXIT_RETRYABLE
    assert pod(plan_uri, 0, cancelled=True) == EXIT_RETRYABLE
    assert pod(plan_uri, 0) == EXIT_DONE
    # Done is done: no model is loaded for a shard whose manifest exists.
    assert pod(plan_uri, 0, load=missing_model) == EXIT_DONE


def test_watch_progress_follows_a_real_shard(
    s3: Any, storage: ObjectStorage, corpus: Corpus, tiny_engine: Engine
) -> None:
    """The pod's gRPC server (``steno work --progress-port``) streams the worker's board."""
    import grpc
    from steno_api.v1 import transcription_pb2 as pb
    from steno_api.v1 import transcription_pb2_grpc as pb_grpc
    from steno_inference.commands.work import start_progress_server

    keys = ["cards/001.wav", "bad/picture.wav", "cards/005.wav"]
    plan = _plan(storage, _spec("job-watch", "watch", parallelism=1,
                                uris=[f"s3://{IN_BUCKET}/{corpus.prefix}{k}" for k in keys]))
    board = ProgressBoard()
    server = start_progress_server(tiny_engine, board, storage, "127.0.0.1", 0)
    messages: list[Any] = []
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stream = pb_grpc.TranscriptionServiceStub(channel).WatchProgress(
                pb.WatchProgressRequest(), timeout=WORKER_TIMEOUT_S)
            messages.append(next(stream))  # connected before the work starts
            outcome = run_shard(tiny_engine, storage, plan, 0, board)
            messages.extend(stream)  # ends by itself once the shard is finished
    finally:
        server.stop(1.0)
    last = messages[-1]
    assert last.finished and last.state == pb.SHARD_STATE_SUCCEEDED
    assert (last.files_total, last.files_done, last.files_failed) == (3, 3, 1)
    assert last.audio_s_done == pytest.approx(outcome.audio_s, abs=0.5)
    failures = [f for message in messages for f in message.new_failures]
    assert [f.uri for f in failures] == [f"s3://{IN_BUCKET}/{corpus.prefix}bad/picture.wav"]
    assert "not_audio" in failures[0].reason
    versions = [message.version for message in messages]
    assert versions == sorted(versions) and len(versions) > 2


# ------------------------------------------------------------------- storage


def test_failed_multipart_uploads_are_aborted(object_store: ObjectStore, s3: Any) -> None:
    mib = 1024 * 1024
    data = bytes(random.Random(3).randbytes(11 * mib))
    for mode in ("when_supported", "when_required"):
        small = storage_for(object_store, part_bytes=5 * mib, multipart_threshold_bytes=5 * mib,
                            request_checksums=mode, response_checksums=mode)
        uri = S3Uri(OUT_BUCKET, f"multipart/{mode}/big.bin")
        result = small.put(uri, data, create_only=True)  # three parts
        assert get(s3, uri) == data
        assert result.sha256 == hashlib.sha256(data).hexdigest()
        # A create-only completion over an existing key is refused by the server: aborted.
        with pytest.raises(PreconditionFailedError):
            small.put(uri, data[::-1], create_only=True)
        assert get(s3, uri) == data

        # A failure while producing the parts: aborted too.
        def parts() -> Iterator[bytes]:
            yield data[: 5 * mib]
            raise ConnectionResetError("source went away")

        with pytest.raises(ConnectionResetError):
            small.upload_parts(S3Uri(OUT_BUCKET, f"multipart/{mode}/never.bin"), parts())
        assert incomplete_uploads(s3, OUT_BUCKET) == []
        assert list_keys(s3, OUT_BUCKET, f"multipart/{mode}/") == [f"multipart/{mode}/big.bin"]


def test_object_reader_streams_seeks_and_pins_the_version(
    s3: Any, storage: ObjectStorage, m4a: bytes
) -> None:
    key = "reader/object.bin"
    data = random.Random(4).randbytes(3 * 1024 * 1024 + 17)
    s3.put_object(Bucket=IN_BUCKET, Key=key, Body=data)
    info = storage.head(S3Uri(IN_BUCKET, key))
    assert info is not None and info.size == len(data)
    rng = random.Random(5)
    with storage.open(info) as reader:
        for _ in range(40):
            position = rng.randrange(0, len(data) + 10)
            size = rng.choice([1, 100, 70_000, 400_000, -1])
            assert reader.seek(position) == position
            expected = data[position:] if size < 0 else data[position:position + size]
            got = reader.read(size)
            assert got == expected[: len(got)] and (got or position >= len(data))
    s3.put_object(Bucket=IN_BUCKET, Key=key, Body=data[::-1])  # replaced after listing
    with storage.open(info) as reader, pytest.raises(PreconditionFailedError):
        reader.read(10)
    assert isinstance(reader.storage_error, PreconditionFailedError)


# ------------------------------------------------------------------ processes


def _worker_env(object_store: ObjectStore, tmp: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(object_store.environment())
    env.update({"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1",
                "HOME": env.get("HOME", str(tmp))})
    return env


def _work_argv(plan: Plan, shard: int) -> list[str]:
    return ["work", "--plan", str(layout.plan_uri(plan.spec.output)), "--shard", str(shard),
            "--device", "cpu", "--batch-size", "8"]


@pytest.fixture(scope="module")
def zygote(object_store: ObjectStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
    WorkerZygote
]:
    forks = WorkerZygote(_worker_env(object_store, tmp_path_factory.mktemp("zygote")))
    yield forks
    forks.close()


def test_two_workers_racing_on_one_shard_commit_one_result(
    zygote: WorkerZygote, s3: Any, storage: ObjectStorage, corpus: Corpus, tmp_path: Path
) -> None:
    keys = ["cards/001.wav", "cards/003.wav", "cards/005.wav", "librivox/0880.wav",
            "librivox/0930.wav", "bad/empty.wav"]
    plan = _plan(storage, _spec("job-race", "race", parallelism=1,
                                uris=[f"s3://{IN_BUCKET}/{corpus.prefix}{k}" for k in keys]))
    # Forked at the same instant, the two load, transcribe and commit in step.
    runs = [zygote.start(f"race-{i}", _work_argv(plan, 0), tmp_path / f"race-{i}.log", {})
            for i in range(2)]
    codes = [zygote.wait(run, WORKER_TIMEOUT_S) for run in runs]
    texts = [run.text() for run in runs]
    assert codes == [EXIT_DONE, EXIT_DONE], texts
    summaries = [json.loads(text.strip().splitlines()[-1]) for text in texts]
    checked = check_manifests(s3, plan, complete=True)
    assert len(checked.files) == len(keys)
    events = event_lines(texts)
    decided = Counter(e["uri"] for e in events if e["event"] == "committed")
    assert decided == Counter(str(item.uri) for item in plan.inputs)  # each decided once
    assert sum(s["decidedHere"] for s in summaries) == len(plan.inputs)
    assert sum(e["event"] == "manifest_written" for e in events) <= 1
    print(f"\nrace: decided {[s['decidedHere'] for s in summaries]}, "
          f"adopted {[s['adopted'] for s in summaries]}")


def test_the_steno_command_works_a_shard_from_its_environment(
    object_store: ObjectStore, s3: Any, storage: ObjectStorage, corpus: Corpus, tmp_path: Path
) -> None:
    """The installed ``steno work`` entry point, as a pod runs it: plan and shard from env."""
    plan = _plan(storage, _spec("job-cli", "cli", parallelism=1, formats=("vtt", "tsv"),
                                uris=[f"s3://{IN_BUCKET}/{corpus.prefix}cards/001.wav"]))
    steno = shutil.which("steno", path=str(Path(sys.executable).parent))
    argv = [steno] if steno else [sys.executable, "-m", "steno_inference.cli"]
    env = _worker_env(object_store, tmp_path)
    usage = subprocess.run([*argv, "work"], env=env, capture_output=True, text=True,
                           timeout=WORKER_TIMEOUT_S)
    assert usage.returncode == EXIT_BAD_SPEC
    assert "no plan: pass --plan or set $STENO_PLAN_URI" in usage.stderr
    env.update(STENO_PLAN_URI=str(layout.plan_uri(plan.spec.output)), JOB_COMPLETION_INDEX="0")
    done = subprocess.run([*argv, "work", "--device", "cpu"], env=env, capture_output=True,
                          text=True, timeout=WORKER_TIMEOUT_S)
    assert done.returncode == EXIT_DONE, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary | {"audioS": 0} == {
        "adopted": 0, "alreadyDone": False, "audioS": 0, "decidedHere": 1, "exitCode": 0,
        "failed": 0, "files": 1, "shard": 0,
        "manifest": str(layout.manifest_uri(plan.spec.output, 0))}
    checked = check_manifests(s3, plan, complete=True)
    assert sorted(o.rsplit(".", 1)[1] for o in checked.outputs) == ["tsv", "vtt"]


def test_workers_killed_at_random_points_never_expose_half_results(
    zygote: WorkerZygote, s3: Any, storage: ObjectStorage, corpus: Corpus, tmp_path: Path
) -> None:
    keys = ["cards/001.wav", "cards/003.wav", "cards/005.wav", "librivox/0880.wav",
            "librivox/0930.wav", "bad/empty.wav", "bad/picture.wav"]
    uris = [f"s3://{IN_BUCKET}/{corpus.prefix}{k}" for k in keys]
    rng = random.Random(KILL_SEED)
    plans: list[Plan] = []
    runs: list[Any] = []
    killed: list[Any] = []
    kills = job_kills = 0
    whole_s: list[float] = []  # runs that ended on their own: start to exit
    started = time.monotonic()
    while kills < MIN_KILLS or (plans[-1:] and not _job_done(s3, plans[-1])):
        if not plans or _job_done(s3, plans[-1]):
            n = len(plans)
            plans.append(_plan(storage, _spec(f"job-kill-{n}", f"kill-{n}", uris=uris,
                                              parallelism=2)))
            job_kills = 0
        plan = plans[-1]
        shard = next(s for s in range(plan.shard_count)
                     if not _shard_done(s3, plan, s))
        assert len(runs) < MAX_WORKER_RUNS, f"{kills} kills after {len(runs)} runs"
        run = zygote.start(f"r{len(runs)}", _work_argv(plan, shard),
                           tmp_path / f"run-{len(runs)}.log", {})
        runs.append(run)
        to_kill = kills < MIN_KILLS and job_kills < MAX_KILLS_PER_JOB
        alive = True
        if to_kill and rng.random() < KILLS_FROM_START:
            # Anywhere in a whole run: start-up, plan, model loading, transcription.
            delay_s = rng.uniform(0.0, _median(whole_s, FIRST_RUN_GUESS_S))
            alive = zygote.wait(run, delay_s) is None
        elif to_kill:
            # Mostly where results are made: just after the n-th commit event (a record
            # decided or verified, outputs written), while the next writes are under way.
            # Every input logs at least one event before the manifest is written.
            n = rng.randint(1, len(plan.shard(shard)))
            if zygote.wait_for_lines(run, EVENTS_MARKER, n, WORKER_TIMEOUT_S):
                alive = zygote.wait(run, rng.uniform(0.0, EVENT_JITTER_S)) is None
            else:
                alive = False
        if to_kill and alive:
            zygote.kill(run)
            kills += 1
            job_kills += 1
            killed.append(run)
            # At any instant, whatever a manifest names is complete and intact.
            check_manifests(s3, plan, complete=False)
            continue
        zygote.wait(run, WORKER_TIMEOUT_S)
        assert run.exit_code == EXIT_DONE, run.text()
        if run.ended_at is not None:
            whole_s.append(run.ended_at - run.started_at)
    elapsed_s = time.monotonic() - started

    assert kills >= MIN_KILLS
    events = event_lines(run.text() for run in runs)
    for plan in plans:
        checked = check_manifests(s3, plan, complete=True)
        assert checked.records == len(plan.inputs)
        statuses = Counter(entry["status"] for entry in checked.files.values())
        assert statuses == Counter(succeeded=5, failed=2)
        # A record is won once: no two runs ever both decided one file.
        won = Counter(e["uri"] for e in events if e["event"] == "committed"
                      and e["record"].startswith(f"s3://{OUT_BUCKET}/{plan.spec.output.key}"))
        assert all(count == 1 for count in won.values()), won
    assert incomplete_uploads(s3, OUT_BUCKET) == []
    phases = Counter(_phase(run.text()) for run in killed)
    print(f"\nkill test: {kills} kills over {len(runs)} worker runs and {len(plans)} jobs "
          f"in {elapsed_s:.0f} s (a whole run ~{_median(whole_s, 0):.1f} s); "
          f"killed {dict(phases)}")


def _median(values: list[float], default: float) -> float:
    return sorted(values)[len(values) // 2] if values else default


def _phase(log: str) -> str:
    """How far a killed worker had come, from its log."""
    events = [e["event"] for e in event_lines([log])]
    if "manifest_written" in events:
        return "after the manifest"
    if "committed" in events or "adopted" in events or "verified" in events:
        return "while committing"
    if ENGINE_LOADED in log:
        return "while transcribing"
    return "while starting"


def _shard_done(s3: Any, plan: Plan, shard: int) -> bool:
    uri = layout.manifest_uri(plan.spec.output, shard)
    return bool(list_keys(s3, uri.bucket, uri.key))


def _job_done(s3: Any, plan: Plan) -> bool:
    return all(_shard_done(s3, plan, s) for s in range(plan.shard_count))
