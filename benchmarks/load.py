"""Load test of the whole pipeline on the local stack: nothing lost, nothing duplicated.

    python benchmarks/load.py [--count 1000] [--concurrency 16] [--workers 2] [--model DIR]
                              [--rate N] [--moto-in-process] [--json FILE]

Starts a `LocalStack` serving 4 lines x 4 cameras, uploads `--count` images through the API
(presigned POST, one token per camera) from `--concurrency` threads, mixes in 2% bad files
and re-sends 5% of the S3 notifications to the ingest queue (duplicate deliveries), waits
until everything has drained, then prints:

- throughput: unique uploads / (last record written - first upload started), images/s;
- p50 / p95 upload-to-record latency: when the workflow wrote the record (its stream
  INSERT's time) - that upload's start; and upload-to-judged, to the record's
  `processed_at` (the ingest handler's detection done, before the workflow starts);
- drain time: end of the upload phase -> every record, lake row and alert present;
- CPU per image over the run, the emulator's and this process's (CPU time, not wall
  time: robust on a shared machine), and the AWS calls per image by operation with the
  emulator's CPU for each (`scripts/emulator.py` counts them as they arrive). This
  benchmark's own reads (its scans, lake reads, alert tap) go through observer clients,
  counted apart and left out of the pipeline's figures;

and checks: records == unique uploads, lake rows == records (one per image), bad files
recorded INVALID, alerts == the records whose alert decision says send (one per image),
and no dead letters. Exits 1 when a check fails. Without `--model` it trains one on
generated samples first (about a minute).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.alerts import AlertPolicy, decide  # noqa: E402
from pipeline.ingest import ObjectRef, notification_body  # noqa: E402
from pipeline.records import STATUS_INVALID, ResultRecord, utc_now  # noqa: E402
from scripts.emulator import OBSERVER  # noqa: E402
from scripts.local_stack import LocalStack, StackInfo, Topology  # noqa: E402
from scripts.observe import AlertTap, all_records, lake_rows, wait_for_alerts  # noqa: E402
from scripts.uploadImages import EXTENSIONS, request_post  # noqa: E402

# Camera ids are unique across lines (stack config rule): cam-<line><n>.
LINES = {f"line-{i}": tuple(f"cam-{i}{j}" for j in range(1, 5)) for i in range(1, 5)}
DUPLICATE_RATE = 0.05
BAD_RATE = 0.02
_IMAGE_LINE = re.compile(r"^Image:\s+(\S+)", re.MULTILINE)


@dataclass(frozen=True)
class Planned:
    path: Path
    line: str
    camera: str
    bad: bool = False
    duplicate: bool = False


@dataclass
class Sent:
    planned: Planned
    started: float
    finished: float = 0.0
    image_id: str = ""
    key: str = ""
    error: str = ""


@dataclass
class LoadReport:
    uploads: int = 0
    failed_uploads: int = 0
    duplicates_sent: int = 0
    bad_files: int = 0
    records: int = 0
    invalid: int = 0
    lake_rows: int = 0
    alerts: int = 0
    expected_alerts: int = 0
    upload_seconds: float = 0.0
    drain_seconds: float = 0.0
    throughput: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    max_ms: float = 0.0
    judged_p50_ms: float = 0.0
    judged_p95_ms: float = 0.0
    emulator_cpu_ms: float = 0.0
    observer_cpu_ms: float = 0.0
    emulator_request_cpu_ms: float = 0.0
    own_cpu_ms: float = 0.0
    calls_per_image: dict[str, float] = field(default_factory=dict)
    request_cpu_ms: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    pollers: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        return [
            f"uploads           {self.uploads} unique ({self.bad_files} bad files, "
            f"{self.failed_uploads} failed), {self.duplicates_sent} duplicate deliveries",
            f"records           {self.records} ({self.invalid} INVALID)",
            f"lake rows         {self.lake_rows}",
            f"alerts            {self.alerts} (expected {self.expected_alerts})",
            f"upload phase      {self.upload_seconds:.1f} s",
            f"drain time        {self.drain_seconds:.1f} s after the last upload",
            f"throughput        {self.throughput:.1f} images/s end to end",
            f"latency           p50 {self.p50_ms:.0f} ms, p95 {self.p95_ms:.0f} ms, "
            f"max {self.max_ms:.0f} ms (upload start -> record written)",
            f"                  p50 {self.judged_p50_ms:.0f} ms, p95 {self.judged_p95_ms:.0f} "
            "ms (upload start -> detection done, processed_at)",
            f"CPU per image     emulator {self.emulator_cpu_ms:.1f} ms (its request threads "
            f"{self.emulator_request_cpu_ms:.1f} ms), load process {self.own_cpu_ms:.1f} ms; "
            f"this benchmark's own reads {self.observer_cpu_ms:.1f} ms more, left out",
            "calls per image   " + ", ".join(
                f"{op} {n:g} ({self.request_cpu_ms.get(op, 0.0):.1f} ms)"
                for op, n in self.calls_per_image.items() if n >= 0.005),
            *(f"poller            {line}" for line in self.pollers),
            "checks            " + ("all passed" if self.ok else "; ".join(self.problems)),
        ]


def sample_images(samples: Path) -> list[Path]:
    """The images under samples/test/ that the uploads send (JPEG or PNG, any case)."""
    images = sorted(p for p in (samples / "test").rglob("*") if p.suffix.lower() in EXTENSIONS)
    if not images:
        raise FileNotFoundError(f"no .jpg, .jpeg or .png images under {samples / 'test'}")
    return images


def plan(count: int, samples: Path, workdir: Path, *, bad_rate: float = BAD_RATE,
         duplicate_rate: float = DUPLICATE_RATE) -> list[Planned]:
    """`count` uploads spread round-robin over every line and camera; every 1/bad_rate-th
    is a bad file, every 1/duplicate_rate-th good one is delivered twice."""
    images = sample_images(samples)
    workdir.mkdir(parents=True, exist_ok=True)
    html = workdir / "not-a-photo.jpg"
    html.write_bytes(b"<!doctype html><html><body>gateway error</body></html>")
    truncated = workdir / "truncated.jpg"
    truncated.write_bytes(images[0].read_bytes()[: images[0].stat().st_size // 2])
    bad_files = [html, truncated]
    cameras = [(line, camera) for line, cams in LINES.items() for camera in cams]
    bad_every = round(1 / bad_rate) if bad_rate else 0
    dup_every = round(1 / duplicate_rate) if duplicate_rate else 0
    planned = []
    for n in range(count):
        line, camera = cameras[n % len(cameras)]
        bad = bool(bad_every) and n % bad_every == bad_every // 2
        path = bad_files[n % len(bad_files)] if bad else images[n % len(images)]
        duplicate = not bad and bool(dup_every) and n % dup_every == 3
        planned.append(Planned(path, line, camera, bad, duplicate))
    return planned


def _upload_all(stack: LocalStack, info: StackInfo, planned: list[Planned],
                concurrency: int, rate: float = 0.0) -> list[Sent]:
    """Upload everything; with `rate` > 0, start at most `rate` uploads per second."""
    # the head is the benchmark's; the message stands in for S3's duplicate notification
    s3, sqs = stack.client("s3", observer=True), stack.client("sqs")
    begin = time.monotonic()

    def one(numbered: tuple[int, Planned]) -> Sent:
        n, item = numbered
        if rate > 0:
            time.sleep(max(0.0, begin + n / rate - time.monotonic()))
        sent = Sent(item, time.time())
        token = info.camera_tokens[f"{item.line}/{item.camera}"]
        try:
            data = item.path.read_bytes()
            ticket = request_post(info.api_url, token, item.path, item.line, item.camera,
                                  len(data))
            ticket.send(data)
            sent.image_id, sent.key = ticket.image_id, ticket.key
        except Exception as exc:  # a failed upload is counted, not fatal
            sent.error = str(exc)
        sent.finished = time.time()
        if item.duplicate and sent.key:
            head = s3.head_object(Bucket=info.images_bucket, Key=sent.key)
            sqs.send_message(QueueUrl=info.queue_url, MessageBody=notification_body(ObjectRef(
                info.images_bucket, sent.key, head["ETag"].strip('"'), head["ContentLength"],
                utc_now())))
        return sent

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, enumerate(planned)))


def _drain(stack: LocalStack, info: StackInfo, expected_ids: set[str], tap: AlertTap,
           timeout: float) -> tuple[list[ResultRecord], list[dict[str, Any]]]:
    ddb, s3 = stack.client("dynamodb", observer=True), stack.client("s3", observer=True)
    deadline = time.monotonic() + timeout
    records: list[ResultRecord] = []
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        # moto counts items live (AWS refreshes ItemCount every ~6 h): a cheap progress
        # probe that does not load the emulator the way a scan every poll would.
        count = ddb.describe_table(TableName=info.table)["Table"]["ItemCount"]
        if count >= len(expected_ids):
            records = all_records(ddb, info.table)
            rows = lake_rows(s3, info.results_bucket)
            if len(rows) >= len(records):
                break
        time.sleep(0.5)
    else:
        records = all_records(ddb, info.table)
        rows = lake_rows(s3, info.results_bucket)
    return records, rows


def _read_alerts(tap: AlertTap, done: threading.Event) -> None:
    while not done.wait(1.0):
        tap.drain()


def expected_alert_count(records: list[ResultRecord], topology: Topology) -> int:
    def policy(line: str) -> AlertPolicy:
        override = topology.line_policies.get(line, {}).get("confidenceThreshold")
        return AlertPolicy(confidence_threshold=topology.confidence_threshold
                           if override is None else float(override))

    return sum(decide(record, policy(record.line_id)).send for record in records)


def run(model_dir: Path, samples: Path, *, count: int = 1000, concurrency: int = 16,
        workers: int = 2, timeout: float = 300.0, workdir: Path | None = None,
        moto_process: bool = True, rate: float = 0.0, log: Any = print) -> LoadReport:
    topology = Topology(lines=LINES)
    report = LoadReport()
    with tempfile.TemporaryDirectory() as scratch:
        planned = plan(count, samples, workdir or Path(scratch))
        with LocalStack(model_dir, topology, ingest_workers=workers, write_state=False,
                        moto_process=moto_process, quiet=True) as stack:
            info = stack.info
            assert info is not None
            tap = AlertTap(stack.client("sqs", observer=True), info.alerts_queue_url)
            # Read alerts as they come, as a subscriber would: a queue left to grow makes
            # every SNS delivery to it slower in the emulator (its SendMessage counts the
            # queue each time).
            reading = threading.Event()
            reader = threading.Thread(target=_read_alerts, args=(tap, reading), daemon=True)
            reader.start()
            log(f"local stack up: {count} uploads over {len(LINES)} lines x 4 cameras, "
                f"concurrency {concurrency}, {workers} ingest workers")
            emulator_before, ours_before = stack.emulator.read_stats(), os.times()
            started = time.time()
            sent = _upload_all(stack, info, planned, concurrency, rate)
            uploaded = time.time()
            ok = [s for s in sent if s.image_id]
            ids = {s.image_id for s in ok}
            records, rows = _drain(stack, info, ids, tap, timeout)
            reading.set()
            reader.join()
            # Alerts trail the records by one SNS hop: every one, a duplicate included,
            # is in once no execution runs.
            expected = expected_alert_count(records, topology)
            alerts = wait_for_alerts(tap, stack.client("stepfunctions", observer=True),
                                     info.state_machine_arn, expected)
            drained = time.time()
            cpu = _cpu_use(emulator_before, stack.emulator.read_stats(), ours_before,
                           os.times(), in_process=not moto_process)
            dead = {name: _queue_depth(stack, url) for name, url in (
                ("ingest DLQ", info.dlq_url), ("workflow failures", info.failure_queue_url),
                ("lake failures", info.lake_failure_queue_url))}
            report.pollers = [
                f"{p.function_name}: {p.stats.batches} batches, {p.stats.records} records, "
                f"{p.stats.failures} reported failed, {len(p.stats.errors)} poll errors"
                for p in stack.pollers]
            written = _record_writes(stack, info.table)
            twins = _lake_twins(stack.client("s3", observer=True), info.results_bucket)
            if twins:
                twins.append(_stream_sequence_repeats(stack, info.table))

    by_id = {s.image_id: s for s in ok}
    latencies = sorted((written[image] - by_id[image].started) * 1000.0
                       for image in written if image in by_id)
    judged = sorted((r.processed_at.timestamp() - by_id[r.image_id].started) * 1000.0
                    for r in records if r.image_id in by_id)
    last_written = max(written.values(), default=uploaded)
    report.uploads = len(ok)
    report.failed_uploads = len(sent) - len(ok)
    report.duplicates_sent = sum(1 for s in ok if s.planned.duplicate)
    report.bad_files = sum(1 for s in ok if s.planned.bad)
    report.records = len(records)
    report.invalid = sum(1 for r in records if r.status == STATUS_INVALID)
    report.lake_rows = len(rows)
    report.alerts = len(alerts)
    report.expected_alerts = expected
    report.upload_seconds = uploaded - started
    report.drain_seconds = drained - uploaded
    report.throughput = len(ok) / max(last_written - started, 1e-9)
    if latencies:
        report.p50_ms, report.p95_ms = _percentile(latencies, 50), _percentile(latencies, 95)
        report.max_ms = latencies[-1]
    if judged:
        report.judged_p50_ms = _percentile(judged, 50)
        report.judged_p95_ms = _percentile(judged, 95)
    per_image = 1000.0 / max(len(ok), 1)
    report.emulator_cpu_ms = cpu.emulator_seconds * per_image
    report.observer_cpu_ms = cpu.observer_seconds * per_image
    report.emulator_request_cpu_ms = sum(cpu.request_seconds.values()) * per_image
    report.own_cpu_ms = cpu.own_seconds * per_image
    report.calls_per_image = {op: round(n * per_image / 1000.0, 3)
                              for op, n in sorted(cpu.calls.items(), key=lambda kv: -kv[1])}
    report.request_cpu_ms = {op: round(seconds * per_image, 2) for op, seconds in sorted(
        cpu.request_seconds.items(), key=lambda kv: -kv[1])}
    report.problems = _check(report, ok, records, rows, alerts, dead)
    report.problems.extend(twins)
    if unseen := {r.image_id for r in records} - set(written):
        report.problems.append(f"{len(unseen)} records without a stream INSERT: their "
                               "latency is not counted")
    if report.failed_uploads:
        first = next(s.error for s in sent if not s.image_id)
        report.problems.insert(0, f"{report.failed_uploads} uploads failed (first: {first})")
    return report


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds over the measured phase: the emulator's, this process's without the
    emulator's, and the emulator's request threads per operation (with their calls)."""

    emulator_seconds: float
    own_seconds: float
    request_seconds: dict[str, float]
    calls: dict[str, int]
    observer_seconds: float = 0.0  # the benchmark's own requests, left out of the above


def _cpu_use(emulator_before: dict[str, Any], emulator_after: dict[str, Any],
             ours_before: os.times_result, ours_after: os.times_result, *,
             in_process: bool) -> CpuUse:
    """With the emulator in this process its CPU is known only per request (the Step
    Functions engine's own threads count as ours); in its own process, all of it."""
    calls = {op: n - emulator_before["calls"].get(op, 0)
             for op, n in emulator_after["calls"].items()}
    requests = {op: seconds - emulator_before["cpu_seconds"].get(op, 0.0)
                for op, seconds in emulator_after["cpu_seconds"].items()}
    observed = sum(seconds for op, seconds in requests.items() if op.startswith(OBSERVER))
    ours = (ours_after.user + ours_after.system) - (ours_before.user + ours_before.system)
    if in_process:
        emulator = sum(requests.values())
        ours -= emulator
    else:
        emulator = (emulator_after["process_cpu_seconds"]
                    - emulator_before["process_cpu_seconds"])
    pipeline = {op: n for op, n in calls.items() if n and not op.startswith(OBSERVER)}
    return CpuUse(emulator - observed, ours,
                  {op: s for op, s in requests.items() if op in pipeline}, pipeline,
                  observed)


def _percentile(ordered: list[float], percent: int) -> float:
    """Nearest rank: the value at or below which `percent` % of them lie.

    >>> _percentile([float(n) for n in range(1, 21)], 95), _percentile([5.0], 50)
    (19.0, 5.0)
    """
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]


def _lake_twins(s3: Any, bucket: str) -> list[str]:
    """For each image with more than one lake row: the Firehose objects that hold them
    (one object: one batch sent a record twice; several: a batch was sent again)."""
    where: dict[str, list[str]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="lake/"):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode()
            for line in body.splitlines():
                if line.strip():
                    where.setdefault(json.loads(line)["ImageId"], []).append(obj["Key"])
    return [f"lake row of {image} {len(keys)} times in {len(set(keys))} Firehose object(s)"
            for image, keys in where.items() if len(keys) > 1]


def _stream_sequence_repeats(stack: LocalStack, table: str) -> str:
    """Whether the emulator's stream gave two records the same sequence number."""
    numbers = Counter(r["dynamodb"]["SequenceNumber"] for r in _stream_records(stack, table))
    repeated = {n: c for n, c in numbers.items() if c > 1}
    return (f"stream: {sum(numbers.values())} records read back, sequence numbers repeated: "
            f"{repeated or 'none'}")


def _check(report: LoadReport, ok: list[Sent], records: list[ResultRecord],
           rows: list[dict[str, Any]], alerts: list[dict[str, Any]],
           dead: dict[str, int]) -> list[str]:
    problems = []
    ids = {s.image_id for s in ok}
    recorded = {r.image_id for r in records}
    if recorded != ids:
        problems.append(f"records != unique uploads: {len(ids - recorded)} lost, "
                        f"{len(recorded - ids)} unexpected")
    lake = Counter(row["ImageId"] for row in rows)
    if set(lake) != recorded or any(n > 1 for n in lake.values()):
        problems.append(f"lake rows != records: {len(rows)} rows for {len(recorded)} records, "
                        f"{sum(1 for n in lake.values() if n > 1)} duplicated")
    bad = {s.image_id for s in ok if s.planned.bad}
    invalid = {r.image_id for r in records if r.status == STATUS_INVALID}
    if invalid != bad:
        problems.append(f"INVALID records {len(invalid)} != bad files {len(bad)}")
    alerted = Counter(m.group(1) for a in alerts if (m := _IMAGE_LINE.search(a["message"])))
    if len(alerts) != report.expected_alerts or any(n > 1 for n in alerted.values()):
        problems.append(f"alerts {len(alerts)} != expected {report.expected_alerts} "
                        f"({sum(1 for n in alerted.values() if n > 1)} images alerted twice)")
    if alerted.keys() & bad:
        problems.append("a bad file was alerted")
    problems.extend(f"{n} messages left in the {name}" for name, n in dead.items() if n)
    return problems


def _stream_records(stack: LocalStack, table: str) -> list[dict[str, Any]]:
    """Every record of the results table's stream, read back from its start."""
    streams = stack.client("dynamodbstreams", observer=True)
    arn = stack.client("dynamodb", observer=True).describe_table(
        TableName=table)["Table"]["LatestStreamArn"]
    records: list[dict[str, Any]] = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            response = streams.get_records(ShardIterator=iterator, Limit=1000)
            if not response["Records"]:
                break
            records.extend(response["Records"])
            iterator = response.get("NextShardIterator")
    return records


def _record_writes(stack: LocalStack, table: str) -> dict[str, float]:
    """image id -> when its record was first written (epoch seconds): the stream INSERT's
    approximate creation time, which the emulator keeps to the microsecond."""
    written: dict[str, float] = {}
    for record in _stream_records(stack, table):
        image = record["dynamodb"].get("Keys", {}).get("image_id", {}).get("S")
        if record["eventName"] == "INSERT" and image and image not in written:
            written[image] = record["dynamodb"]["ApproximateCreationDateTime"].timestamp()
    return written


def _queue_depth(stack: LocalStack, url: str) -> int:
    attributes = stack.client("sqs", observer=True).get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                      "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return sum(int(value) for value in attributes.values())


def _model(model: Path | None, samples: Path, scratch: Path) -> Path:
    if model is not None:  # main checked it holds a model
        return model
    from pipeline.detector.training import train_model

    out = scratch / "model"
    print("training a model on the generated samples (no --model given)...")
    train_model(samples, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="unique uploads (1000)")
    parser.add_argument("--concurrency", type=int, default=16, help="upload threads (16)")
    parser.add_argument("--workers", type=int, default=2,
                        help="ingest pollers, the Lambda concurrency stand-in (2)")
    parser.add_argument("--model", type=Path, help="model directory (default: train one)")
    parser.add_argument("--samples", type=Path, default=REPO / "resources" / "samples",
                        help="sample images (generated if missing)")
    parser.add_argument("--timeout", type=float, default=300.0, help="drain timeout, s")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="start at most this many uploads per second (0: no limit); "
                             "below the stack's capacity the latency is service time")
    parser.add_argument("--moto-in-process", action="store_true",
                        help="run the emulator on a thread of this process, as `linesight "
                             "local up` does (default: in its own process, which is faster: "
                             "it does not share this process's GIL)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the INVALID warnings of the bad files
    if args.count < 1 or args.concurrency < 1 or args.workers < 1:
        parser.error("--count, --concurrency and --workers must be at least 1")
    if args.model is not None and not (args.model / "model.json").exists():
        parser.error(f"{args.model} has no model.json: train one first (`make model` makes "
                     "models/demo), or leave out --model to train on the samples here")
    with tempfile.TemporaryDirectory() as scratch:
        if not (args.samples / "test").is_dir():
            from scripts.make_samples import generate

            generate(args.samples)
        try:  # before a minute of training
            sample_images(args.samples)
        except FileNotFoundError as exc:
            parser.error(str(exc))
        model = _model(args.model, args.samples, Path(scratch))
        report = run(model, args.samples, count=args.count, concurrency=args.concurrency,
                     workers=args.workers, timeout=args.timeout,
                     moto_process=not args.moto_in_process, rate=args.rate)
    print("\n".join(report.lines()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.__dict__, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
