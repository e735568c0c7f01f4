"""The results lake: rows for Firehose, its S3 destination, and the QuickSight manifest.

A lake row is the result record plus Year, Month, Day, Hour, Minute and Region, as in the
seed, with the seed's column names so existing QuickSight analyses keep working.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipeline import aws
from pipeline.records import MalformedRecord, ResultRecord, iso

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
FIREHOSE_BATCH = 500  # put_record_batch takes at most 500 records per call


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
    }


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
            rows.append((row_id, row_from_image(image, region)))
        except (KeyError, ValueError, TypeError) as error:
            said = str(error) if isinstance(error, MalformedRecord) else repr(error)
            unreadable.append((row_id, image, f"cannot be read as a result record: {said}"))
    return rows, unreadable


def encode_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, bytes]]:
    """Firehose records: one JSON object per line, newline-terminated."""
    return [{"Data": (json.dumps(row, sort_keys=True) + "\n").encode()} for row in rows]


def send_rows(stream_name: str, rows: Sequence[tuple[str, Mapping[str, Any]]], *,
              attempts: int = 3, backoff_seconds: float = 0.1) -> list[str]:
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
