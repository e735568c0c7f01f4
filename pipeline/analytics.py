"""The results lake: rows for Firehose, its S3 destination, the QuickSight manifest, and the
Glue table (with the Athena queries) that reads it.

A lake row is the result record plus Year, Month, Day, Hour, Minute and Region, as in the
seed, with the seed's column names so existing QuickSight analyses keep working, and then
the record's human review, if any. A record becomes a row when it is written, and again
each time a person reviews it (`LAKE_STREAM_FILTERS`), so the lake keeps every verdict.
`LAKE_COLUMNS` are those columns in the Glue table: change both together
(tests/unit/test_lake_table.py fails when a row has a key the table lacks).
"""

from __future__ import annotations

import json
import logging
import textwrap
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipeline import aws
from pipeline.records import UNISSUED, MalformedRecord, ResultRecord, iso

log = logging.getLogger(__name__)

LAKE_PREFIX = "lake/"
LAKE_ERROR_PREFIX = "lake-errors/"
# Firehose partitions by line (dynamic partitioning, key extracted from the row) and date.
LAKE_PARTITIONED_PREFIX = (
    LAKE_PREFIX + "line=!{partitionKeyFromQuery:line}/"
    "year=!{timestamp:yyyy}/month=!{timestamp:MM}/day=!{timestamp:dd}/"
)
LAKE_ERROR_OUTPUT_PREFIX = (
    LAKE_ERROR_PREFIX + "!{firehose:error-output-type}/year=!{timestamp:yyyy}/"
    "month=!{timestamp:MM}/day=!{timestamp:dd}/"
)
MANIFEST_KEY = "manifest.json"
# Where the stack's Athena workgroup writes query results (beside the lake, and expired
# with it: they are copies of its rows).
ATHENA_RESULTS_PREFIX = "athena-results/"
FIREHOSE_BATCH = 500  # put_record_batch takes at most 500 records per call
# Tries of a row Firehose refuses, and the wait before the second (doubling after): the
# waits add up to 1.75 s, past the next second boundary, since Firehose's throughput
# limits are per second and a row retried within the same second is refused again.
FIREHOSE_ATTEMPTS = 4
FIREHOSE_BACKOFF_SECONDS = 0.25


@dataclass(frozen=True)
class Buffering:
    seconds: int = 60
    megabytes: int = 64  # dynamic partitioning requires at least 64 MB


def lake_row(record: ResultRecord, region: str) -> dict[str, Any]:
    """One JSON row of the lake.

    >>> from pipeline.records import parse_time
    >>> t = parse_time("2026-03-04T05:06:07+00:00")
    >>> row = lake_row(ResultRecord("i", "L1", "C1", "s3://b/k", t, t, "OK"), "eu-west-1")
    >>> row["AssemblyLineId"], row["Year"], row["Minute"], row["Region"]
    ('L1', 2026, 6, 'eu-west-1')
    """
    captured = record.captured_at
    review = record.review or {}
    return {
        "ImageId": record.image_id,
        "AssemblyLineId": record.line_id,
        "CameraId": record.camera_id,
        "ImageUrl": record.s3_uri,
        "DateTime": iso(captured),
        "ProcessedAt": iso(record.processed_at),
        "Status": record.status,
        "Reason": record.reason,
        "IsAnomalous": record.is_anomalous,
        "Confidence": record.confidence,
        "Score": record.score,
        "RawScore": record.raw_score,
        "Threshold": record.threshold,
        "ModelVersion": record.model_version,
        "HeatmapUrl": record.heatmap_uri,
        "AlertReason": record.alert_reason,
        "Year": captured.year,
        "Month": captured.month,
        "Day": captured.day,
        "Hour": captured.hour,
        "Minute": captured.minute,
        "Region": region,
        "ReviewLabel": str(review.get("label", "")),
        "ReviewNote": str(review.get("note", "")),
        "Reviewer": str(review.get("reviewer", "")),
        "ReviewedAt": str(review.get("reviewed_at", "")),
    }


# The lake row's columns in the Glue table, in `lake_row`'s order: (name, Hive type, what it
# holds). No field of a result record is ever null (each has a default), so a column is
# null only in a row written before the column existed.
LAKE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("ImageId", "string", "the upload's id; count distinct ImageId, since a row can arrive "
                          "twice"),
    ("AssemblyLineId", "string", "the line"),
    ("CameraId", "string", "the camera"),
    ("ImageUrl", "string", "s3:// URI of the photo"),
    ("DateTime", "string", "capture time, ISO-8601 UTC (from_iso8601_timestamp reads it)"),
    ("ProcessedAt", "string", "when the result was recorded, ISO-8601 UTC"),
    ("Status", "string", "OK (judged) or INVALID (unusable upload)"),
    ("Reason", "string", "why an upload is INVALID, else empty"),
    ("IsAnomalous", "boolean", "the detector's verdict"),
    ("Confidence", "double", "how sure the verdict is, 0-1"),
    ("Score", "double", "normalised anomaly score, 0-1"),
    ("RawScore", "double", "the detector's raw score"),
    ("Threshold", "double", "the score threshold the verdict used"),
    ("ModelVersion", "string", "the model that judged"),
    ("HeatmapUrl", "string", "s3:// URI of the heatmap, or empty"),
    ("AlertReason", "string", "why an alert was sent, or empty"),
    ("Year", "int", "capture year (UTC); lake_year is the delivery year"),
    ("Month", "int", "capture month (UTC)"),
    ("Day", "int", "capture day (UTC)"),
    ("Hour", "int", "capture hour (UTC)"),
    ("Minute", "int", "capture minute"),
    ("Region", "string", "the stack's AWS region"),
    ("ReviewLabel", "string", "a person's verdict (normal or anomaly), or empty; the "
                              "latest review of an image is its row with the latest "
                              "ReviewedAt"),
    ("ReviewNote", "string", "the reviewer's note, or empty"),
    ("Reviewer", "string", "who reviewed, or empty"),
    ("ReviewedAt", "string", "when the review was recorded, ISO-8601 UTC, or empty"),
)


# Which results-stream records become lake rows, as Lambda event filter patterns (the
# stream mapping's FilterCriteria; any one pattern lets a record through): a record when it
# is first written, and each time a person reviews it. Other changes of a record (the mark
# `dlq redrive` leaves when it publishes an alert, say) are bookkeeping, not a new state;
# one made after a review carries the review too, and sends that row again: a row can
# arrive twice anyway. `is_lake_record` reads the same patterns, so the handler, the local
# stand-in for the mapping and AWS agree on what passes.
LAKE_STREAM_FILTERS: tuple[dict[str, Any], ...] = (
    {"eventName": ["INSERT"]},
    {"eventName": ["MODIFY"],
     "dynamodb": {"NewImage": {"review": {"M": {"label": {"S": [{"exists": True}]}}}}}},
)


def is_lake_record(record: Mapping[str, Any]) -> bool:
    """Whether a stream record (as Lambda delivers it) passes LAKE_STREAM_FILTERS.

    >>> review = {"review": {"M": {"label": {"S": "normal"}}}}
    >>> [is_lake_record({"eventName": name, "dynamodb": {"NewImage": image}})
    ...  for name, image in [("INSERT", {}), ("MODIFY", review), ("MODIFY", {}),
    ...                      ("REMOVE", review)]]
    [True, True, False, False]
    """
    return any(_matches(pattern, record) for pattern in LAKE_STREAM_FILTERS)


def _matches(pattern: Mapping[str, Any], data: Any) -> bool:
    """Lambda's filter matching, for the rules LAKE_STREAM_FILTERS uses: a key's rule is a
    nested pattern, or a list of values (and `{"exists": bool}`) any one of which may hold."""
    for key, rule in pattern.items():
        present = isinstance(data, Mapping) and key in data
        if isinstance(rule, Mapping):
            if not present or not _matches(rule, data[key]):
                return False
            continue
        if not any(_allows(option, present, data[key] if present else None)
                   for option in rule):
            return False
    return True


def _allows(option: Any, present: bool, value: Any) -> bool:
    # Lambda matches a rule only against a leaf: a value that is an object or a list is
    # not there as far as `exists` or an equal value goes.
    leaf = present and not isinstance(value, (Mapping, list))
    if isinstance(option, Mapping):
        if set(option) != {"exists"}:  # a rule this reader would get wrong: say so
            raise ValueError(f"filter rule {option!r} is not one is_lake_record reads")
        return leaf == bool(option["exists"])
    return leaf and value == option


def row_from_image(image: Mapping[str, Any], region: str) -> dict[str, Any]:
    """The lake row of a results-table item as the stream carries it (typed DynamoDB JSON).
    Raises KeyError, ValueError or TypeError for an item that is not a result record."""
    return lake_row(ResultRecord.from_item(image), region)


def rows_from_images(images: Iterable[tuple[str, Mapping[str, Any], str]]
                     ) -> tuple[list[tuple[str, dict[str, Any]]],
                                list[tuple[str, Mapping[str, Any], str]]]:
    """(id, image, region) triples -> the (id, lake row) pairs of those that read as a
    result, and the (id, image, why) triples of those that do not."""
    rows: list[tuple[str, dict[str, Any]]] = []
    unreadable: list[tuple[str, Mapping[str, Any], str]] = []
    for row_id, image, region in images:
        try:
            row = row_from_image(image, region)
            json.dumps(row, allow_nan=False)  # parked here, or it would fail the whole batch
            rows.append((row_id, row))
        except (KeyError, ValueError, TypeError) as error:
            said = str(error) if isinstance(error, MalformedRecord) else repr(error)
            unreadable.append((row_id, image, f"cannot be read as a result record: {said}"))
    return rows, unreadable


def encode_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, bytes]]:
    """Firehose records: one JSON object per line, newline-terminated."""
    return [{"Data": (json.dumps(row, sort_keys=True, allow_nan=False) + "\n").encode()}
            for row in rows]


def send_rows(stream_name: str, rows: Sequence[tuple[str, Mapping[str, Any]]], *,
              attempts: int = FIREHOSE_ATTEMPTS,
              backoff_seconds: float = FIREHOSE_BACKOFF_SECONDS) -> list[str]:
    """Send (id, row) pairs to Firehose; return the ids of rows it still refused after
    `attempts` tries.

    Only refused rows (`FailedPutCount` > 0) are sent again, inside this invocation: a
    stream batch reported back to Lambda is retried from its first failed record, which
    would put every later row into the lake twice.
    """
    firehose = aws.client("firehose")
    pending = list(rows)
    for attempt in range(attempts):
        if attempt:
            time.sleep(backoff_seconds * 2 ** (attempt - 1))
        refused: list[tuple[str, Mapping[str, Any]]] = []
        for start in range(0, len(pending), FIREHOSE_BATCH):
            chunk = pending[start:start + FIREHOSE_BATCH]
            try:
                response = firehose.put_record_batch(
                    DeliveryStreamName=stream_name,
                    Records=encode_rows(row for _, row in chunk))
            except (ClientError, BotoCoreError) as exc:
                # The whole call failed (throttled, unreachable): its rows are retried like
                # refused ones, not raised, which would make Lambda resend the rows of
                # earlier calls that landed. An AWS error says it all in one line.
                log.warning("Firehose refused a call of %d rows: %s", len(chunk), exc)
                refused.extend(chunk)
                continue
            if response.get("FailedPutCount", 0):
                refused.extend(pair for pair, result
                               in zip(chunk, response["RequestResponses"], strict=True)
                               if result.get("ErrorCode"))
        if not refused:
            return []
        pending = refused
    return [row_id for row_id, _ in pending]


# Lake dead letters the handler writes itself, as data: the rows Firehose kept refusing,
# and results-stream images that could not be made into rows (typed DynamoDB JSON, as the
# stream carried them), which a redrive decodes again once the code that reads them is fixed.
LAKE_ROWS = "LakeRows"
STREAM_IMAGES = "StreamImages"
_PARKED_BYTES = 200_000  # SQS takes at most 256 KiB a message


def park_rows(queue_url: str, rows: Sequence[Mapping[str, Any]], reason: str, *,
              kind: str = LAKE_ROWS) -> int:
    """Put rows Firehose kept refusing (or, with `kind=STREAM_IMAGES`, stream images that
    could not be decoded) on the lake's failure queue, as data, in as few messages as fit;
    returns how many messages. `linesight dlq redrive` sends them again without the stream
    (which keeps records 24 h) and without resending rows that landed, as reporting them
    back to Lambda would. Raises what SQS raises."""
    sqs = aws.client("sqs")
    messages: list[list[Mapping[str, Any]]] = [[]]
    size = 0
    for row in rows:
        length = len(json.dumps(row)) + 2
        if messages[-1] and size + length > _PARKED_BYTES:
            messages.append([])
            size = 0
        messages[-1].append(row)
        size += length
    for batch in messages:
        sqs.send_message(QueueUrl=queue_url,
                         MessageBody=json.dumps({kind: batch, "reason": reason}))
    return len(messages)


def s3_destination(*, bucket_arn: str, role_arn: str, buffering: Buffering) -> dict[str, Any]:
    """The Firehose ExtendedS3DestinationConfiguration (API field names)."""
    return {
        "BucketARN": bucket_arn,
        "RoleARN": role_arn,
        "Prefix": LAKE_PARTITIONED_PREFIX,
        "ErrorOutputPrefix": LAKE_ERROR_OUTPUT_PREFIX,
        "BufferingHints": {"IntervalInSeconds": buffering.seconds,
                           "SizeInMBs": buffering.megabytes},
        "CompressionFormat": "UNCOMPRESSED",
        "DynamicPartitioningConfiguration": {"Enabled": True},
        "ProcessingConfiguration": {
            "Enabled": True,
            "Processors": [{
                "Type": "MetadataExtraction",
                "Parameters": [
                    {"ParameterName": "MetadataExtractionQuery",
                     "ParameterValue": "{line: .AssemblyLineId}"},
                    {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"},
                ],
            }],
        },
    }


def quicksight_manifest(bucket: str) -> dict[str, Any]:
    """The QuickSight S3 manifest that points at the lake."""
    return {
        "fileLocations": [{"URIPrefixes": [f"s3://{bucket}/{LAKE_PREFIX}"]}],
        "globalUploadSettings": {"format": "JSON"},
    }


# --- The Glue table over the lake -------------------------------------------------------

LAKE_TABLE = "lake"
# No lake holds rows delivered before this year (LineSight replaced a service retired in
# 2025); the table's date projection starts here when the lake keeps rows forever.
LAKE_FIRST_YEAR = 2025
# S3 expires objects some time after their lifecycle says (it queues them for removal):
# the year projection reaches this much further back than the retention.
EXPIRY_SLACK_DAYS = 31
# The table's partition key for each Firehose expression of LAKE_PARTITIONED_PREFIX (the
# S3 path `line=<line>/year=YYYY/month=MM/day=DD/`). They are not called line, year, month
# and day: Hive names ignore case, so `year` would be the rows' own `Year` (the capture
# year), and Glue refuses a partition key that is also a column. The path's date is when
# Firehose delivered the row, which is not always the capture day.
LAKE_PARTITION_KEYS: dict[str, tuple[str, str, str]] = {
    # Firehose expression: (partition key, Hive type, what it holds)
    "!{partitionKeyFromQuery:line}": ("lake_line", "string",
                                      "the line (the path's line=); configured lines only"),
    "!{timestamp:yyyy}": ("lake_year", "string",
                          "year Firehose delivered the row (UTC), e.g. '2026'"),
    "!{timestamp:MM}": ("lake_month", "int", "month Firehose delivered the row (UTC), 1-12"),
    "!{timestamp:dd}": ("lake_day", "int",
                        "day of month Firehose delivered the row (UTC), 1-31"),
}
_JSON_SERDE = "org.openx.data.jsonserde.JsonSerDe"


def lake_database(prefix: str) -> str:
    """The Glue database of a stack's lake: its resource prefix with `_` for `-`, since
    Athena reads names of lowercase letters, digits and `_` without quoting.

    >>> lake_database("ls-plant-a")
    'ls_plant_a'
    """
    return prefix.replace("-", "_")


def lake_location_template(bucket: str) -> str:
    """Where Athena finds a partition: LAKE_PARTITIONED_PREFIX with each Firehose
    expression replaced by its partition key.

    >>> lake_location_template("b")
    's3://b/lake/line=${lake_line}/year=${lake_year}/month=${lake_month}/day=${lake_day}/'
    """
    template = LAKE_PARTITIONED_PREFIX
    for expression, (key, _, _) in LAKE_PARTITION_KEYS.items():
        template = template.replace(expression, "${" + key + "}")
    if "!{" in template:  # the prefix gained an expression the table would not know
        raise ValueError(f"LAKE_PARTITIONED_PREFIX has an expression without a partition "
                         f"key in LAKE_PARTITION_KEYS: {template}")
    return f"s3://{bucket}/{template}"


def lake_year_range(retention_days: int) -> str:
    """The delivery years the table projects: every year the bucket's lifecycle may still
    hold lake rows of (`resultsRetentionDays`, plus EXPIRY_SLACK_DAYS; a window of N days
    ending today starts at most N // 365 + 1 years back), or every year since
    LAKE_FIRST_YEAR when it keeps them forever (0). Ending at `NOW` keeps each new year in
    reach without a redeploy, which an `integer` year, with a fixed last year, would not.

    >>> lake_year_range(30), lake_year_range(365), lake_year_range(730), lake_year_range(0)
    ('NOW-1YEARS,NOW', 'NOW-2YEARS,NOW', 'NOW-3YEARS,NOW', '2025,NOW')
    """
    if retention_days <= 0:
        return f"{LAKE_FIRST_YEAR},NOW"
    return f"NOW-{(retention_days + EXPIRY_SLACK_DAYS) // 365 + 1}YEARS,NOW"


def lake_projection(bucket: str, *, lines: Sequence[str],
                    retention_days: int) -> dict[str, str]:
    """Athena partition projection for the lake: partitions are computed from these table
    properties at query time, so no crawler, MSCK REPAIR or partition registration is
    ever needed as Firehose writes new days.

    The line is an `enum` of the stack's configured lines, and of UNISSUED, the line of
    keys the upload API did not issue (INVALID rows an audit wants). An `injected` line
    would cover
    every line but fails any query without `lake_line = '...'`, which QuickSight never
    writes; so the rows of a line missing from `linesight:lines` (a token issued with
    `--unconfigured`) stay in S3 unseen by the table until the line is configured and
    `pulumi up` runs, and then all of them, older days too, are there.

    The date is three keys, as the path has three parts (one `date` key would carry the
    path's `/month=` and `/day=` in its values): the year a `date` projection up to NOW,
    month and day zero-padded integers, as Firehose writes them.
    """
    if not lines:
        raise ValueError("the lake table needs at least one line to project")
    return {
        "projection.enabled": "true",
        "projection.lake_line.type": "enum",
        "projection.lake_line.values": ",".join(dict.fromkeys([*lines, UNISSUED])),
        "projection.lake_year.type": "date",
        "projection.lake_year.format": "yyyy",
        "projection.lake_year.range": lake_year_range(retention_days),
        "projection.lake_year.interval": "1",
        "projection.lake_year.interval.unit": "YEARS",
        "projection.lake_month.type": "integer",
        "projection.lake_month.range": "1,12",
        "projection.lake_month.digits": "2",
        "projection.lake_day.type": "integer",
        "projection.lake_day.range": "1,31",
        "projection.lake_day.digits": "2",
        "storage.location.template": lake_location_template(bucket),
    }


def lake_table_input(bucket: str, *, lines: Sequence[str],
                     retention_days: int) -> dict[str, Any]:
    """The Glue TableInput (API field names, as `glue.create_table(DatabaseName=...,
    TableInput=...)` takes it) over `s3://bucket/lake/`: one JSON row a line, read by the
    OpenX JSON SerDe, partitioned by line and delivery date (`lake_projection`).

    The columns are the rows' names (LAKE_COLUMNS) in lower case, as Athena requires of
    names in the Glue catalog (query `isanomalous`, `assemblylineid`); the SerDe,
    case-insensitive, matches the rows' keys to them.
    """
    return {
        "Name": LAKE_TABLE,
        "Description": "LineSight results: one row per result record, as Firehose "
                       "delivered it to the lake",
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {"classification": "json", "EXTERNAL": "TRUE",
                       **lake_projection(bucket, lines=lines, retention_days=retention_days)},
        "PartitionKeys": [{"Name": name, "Type": kind, "Comment": comment}
                          for name, kind, comment in LAKE_PARTITION_KEYS.values()],
        "StorageDescriptor": {
            "Columns": [{"Name": name.lower(), "Type": kind, "Comment": comment}
                        for name, kind, comment in LAKE_COLUMNS],
            "Location": f"s3://{bucket}/{LAKE_PREFIX}",
            "InputFormat": "org.apache.hadoop.mapred.TextInputFormat",
            "OutputFormat": "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
            "SerdeInfo": {"SerializationLibrary": _JSON_SERDE,
                          "Parameters": {"case.insensitive": "TRUE"}},
        },
    }


def anomaly_rate_query() -> str:
    """Athena SQL: per line and capture day, the images judged (Status OK: unusable uploads
    are not judged, as in the anomaly-rate alarms), how many were anomalous, and the rate.
    Counts distinct ImageId, since a row can arrive twice (at-least-once delivery)."""
    anomalous = "count(DISTINCT CASE WHEN isanomalous THEN imageid END)"
    return textwrap.dedent(f"""\
        -- Anomaly rate per line and capture day (UTC). To read less of the lake, add
        -- e.g. AND lake_year = '2026' AND lake_month = 11 (the delivery date).
        SELECT assemblylineid AS line_id,
               substr("datetime", 1, 10) AS capture_day,
               count(DISTINCT imageid) AS judged,
               {anomalous} AS anomalous,
               round(CAST({anomalous} AS double)
                     / count(DISTINCT imageid), 4) AS anomaly_rate
        FROM {LAKE_TABLE}
        WHERE status = 'OK'
        GROUP BY 1, 2
        ORDER BY 2 DESC, 1
        """)


def review_query() -> str:
    """Athena SQL: per line and capture day, how people's reviews compare with the model:
    images reviewed, false alarms (the model said anomalous, the person normal), misses
    (the other way round) and the share on which they agree. Each image counts once, by
    its latest review (an image reviewed again has a lake row per review)."""
    return textwrap.dedent(f"""\
        -- People's reviews against the model, per line and capture day (UTC): the latest
        -- review of each image. To read less of the lake, add e.g. AND lake_year = '2026'
        -- (the delivery date, here the review's) to the WHERE in verdicts.
        WITH verdicts AS (
            SELECT assemblylineid, substr("datetime", 1, 10) AS capture_day,
                   isanomalous, reviewlabel,
                   row_number() OVER (PARTITION BY imageid
                                      ORDER BY reviewedat DESC) AS newest
            FROM {LAKE_TABLE}
            WHERE status = 'OK' AND reviewedat <> ''
        )
        SELECT assemblylineid AS line_id,
               capture_day,
               count(*) AS reviewed,
               sum(CASE WHEN isanomalous AND reviewlabel = 'normal'
                        THEN 1 ELSE 0 END) AS false_alarms,
               sum(CASE WHEN NOT isanomalous AND reviewlabel = 'anomaly'
                        THEN 1 ELSE 0 END) AS missed,
               round(CAST(sum(CASE WHEN isanomalous = (reviewlabel = 'anomaly')
                                   THEN 1 ELSE 0 END) AS double)
                     / count(*), 4) AS agreement
        FROM verdicts
        WHERE newest = 1
        GROUP BY 1, 2
        ORDER BY 2 DESC, 1
        """)


@dataclass(frozen=True)
class SavedQuery:
    key: str  # the Pulumi resource's suffix
    name: str  # as the Athena console lists it
    description: str
    sql: str


def saved_queries() -> tuple[SavedQuery, ...]:
    """The queries saved in the stack's Athena workgroup (and quoted in docs/deploy.md)."""
    return (
        SavedQuery("anomaly-rate", "Anomaly rate per line and day",
                   "Images judged, anomalous, and the rate, per line and capture day",
                   anomaly_rate_query()),
        SavedQuery("reviews", "Reviews against the model per line and day",
                   "Images people reviewed, false alarms and misses they found, and the "
                   "share they agree with, per line and capture day", review_query()),
    )
