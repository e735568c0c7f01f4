"""The Step Functions state machine, as data.

Only service integrations (no Lambda task), so the same ASL runs in AWS and in moto's
engine. Pulumi deploys it, the local stack provisions it, tests assert on it.

Execution input (built by `pipeline.ingest.execution_input`):
    {"item": <typed DynamoDB item>, "record": <record JSON>, "alert": {"send", "reason",
     "subject", "message", "line_id"}, "written_by": <this start's token>,
     "requeue": <the upload's S3 notification, as the ingest queue carries it>}

Exactly-once outcomes: the putItem is conditional, and only the execution that wrote the
record goes on to alert; a duplicate delivery ends in `AlreadyRecorded` without an alert.
Each start of an execution carries its own token (`WRITER`, made by `with_writer`), in the
item and beside it, and the put requires that the image is not recorded yet or that this
token wrote the record. So when DynamoDB commits a put but answers with an error, the
retry of that same put succeeds and the alert still goes out, while a second delivery of
the upload (EXPRESS names are not unique, so it can start a second execution) ends in
`AlreadyRecorded`. A put that committed and then failed for good leaves its record with
its token: `linesight dlq redrive` sees that and publishes the alert it owed.

AWS runs an asynchronous EXPRESS execution at least once: rarely, the same execution runs
a second time with the same input, token included. That run writes the same item again
and alerts again, so an alert may go out twice (as an SNS email may anyway) but is never
lost: a token minted in each run would have ended a second run that followed a first
one dead between its put and its alert in `AlreadyRecorded`, with no alert and no trace.
The put also requires that nobody has reviewed the record yet (`REVIEW`), so such a run
can never wipe a person's verdict.

A put refused by its condition is not always a duplicate. Two different photos written
through one upload form and handled at once, in different invocations, both take the
upload's id (`pipeline.ingest.recorded_as`); the put keeps the first. So a refused put
reads the stored record (`ReadRecord`): if it holds this upload (same idempotency key),
the execution ends in `AlreadyRecorded`; if it is gone, the put is tried again; if it
holds another photo, the execution sends the upload's S3 notification (`requeue` in its
input) back to the ingest queue (`RequeueUpload`), where it is judged under an id of its
own (`pipeline.ingest.rewritten_image_id`), so the race loses no photo; that photo is
detected twice but, as a rule, counted once in the metrics: the notification is marked
`pipeline.ingest.REQUEUED`, and its second judgement emits none. (Two narrow windows
remain: a handler that dies between starting the execution and emitting the metrics counts
the photo nowhere, and S3's own notification redelivered before the marked one is handled
counts it twice. Executions running while this code is deployed send it back unmarked.
On EXPRESS, a duplicate delivery of any upload that overlaps the first, before its record
is put, is counted twice in the metrics too, though recorded and alerted once:
`chalicelib.telemetry.emit_outcome`.) An
input without the notification (started by ingest code older than this) is parked on the
failure queue (`NoRequeue`), and `linesight dlq redrive` rebuilds the notification from
the image.
"""

from __future__ import annotations

import uuid
from typing import Any

DYNAMODB_RETRYABLE = (
    "DynamoDB.ProvisionedThroughputExceededException",
    "DynamoDB.ThrottlingException",
    "DynamoDB.RequestLimitExceeded",
    "DynamoDB.InternalServerError",  # DynamoDB's own name for a 500
    "DynamoDB.InternalServerErrorException",
    "DynamoDB.AmazonDynamoDBException",
    "States.Timeout",
)
# Publish errors that no retry can cure (a wrong topic, a missing permission, a bad
# message or a KMS key that is off): the alert goes straight to the failure queue instead
# of 15 s of backoff first. Anything else, throttling and 5xx included, is retried.
SNS_PERMANENT = (
    "SNS.AuthorizationErrorException",
    "SNS.InvalidParameterException",
    "SNS.InvalidParameterValueException",
    "SNS.InvalidSecurityException",
    "SNS.KMSAccessDeniedException",
    "SNS.KMSDisabledException",
    "SNS.KMSInvalidStateException",
    "SNS.KMSNotFoundException",
    "SNS.NotFoundException",
)
CONDITIONAL_CHECK_FAILED = "DynamoDB.ConditionalCheckFailedException"
ALERT_ERROR_PATH = "$.alert_error"


def _retry(*errors: str, attempts: int = 4, never: tuple[str, ...] = ()
           ) -> list[dict[str, Any]]:
    """Retry `errors` with backoff; `never` lists errors matched first and not retried
    (retriers are tried in order, and MaxAttempts 0 means no retry)."""
    permanent = [{"ErrorEquals": list(never), "MaxAttempts": 0}] if never else []
    return [*permanent, {
        "ErrorEquals": list(errors),
        "IntervalSeconds": 1,
        "MaxAttempts": attempts,
        "BackoffRate": 2.0,
    }]


def _to_failure_queue(result_path: str = "$.error") -> dict[str, Any]:
    return {"ErrorEquals": ["States.ALL"], "ResultPath": result_path,
            "Next": "SendToFailureQueue"}


# The item attribute, and the execution input key, holding the token of the execution
# that writes the record.
WRITER = "written_by"
# Set on a record when `linesight dlq redrive` publishes the alert its execution owed.
ALERT_REDRIVEN = "alert_redriven_at"
# The record's attribute holding a person's verdict (`pipeline.reviews`).
REVIEW = "review"
PUT_CONDITION = (f"attribute_not_exists(image_id) OR "
                 f"({WRITER} = :writer AND attribute_not_exists({REVIEW}))")


def with_writer(payload: dict[str, Any]) -> dict[str, Any]:
    """The execution input with a new writer token, in its item and beside it: the put's
    condition then lets this execution, and only it, overwrite its own record."""
    writer = uuid.uuid4().hex
    return {**payload, "item": {**payload["item"], WRITER: {"S": writer}}, WRITER: writer}


# The execution input key holding the upload's S3 notification, for `RequeueUpload`.
REQUEUE = "requeue"
# Where `ReadRecord` puts the stored record's idempotency key (a DynamoDB GetItem answer).
STORED_KEY_PATH = "$.stored.Item.idempotency_key.S"
NO_REQUEUE = "LineSight.NoRequeue"


def state_machine_definition(*, table_name: str, topic_arn: str, failure_queue_url: str,
                             ingest_queue_url: str, partition: str) -> dict[str, Any]:
    """The ASL document for one environment (the same for EXPRESS and STANDARD).
    `partition` is the AWS partition's ARN prefix (`aws-cn`, `aws-us-gov` outside the
    commercial regions), which the service integrations' resource ARNs carry."""
    states = f"arn:{partition}:states:::"
    put_parameters: dict[str, Any] = {
        "TableName": table_name,
        "Item.$": "$.item",
        "ConditionExpression": PUT_CONDITION,
        "ExpressionAttributeValues": {":writer": {"S.$": f"$.{WRITER}"}},
    }
    return {
        "Comment": "LineSight: record a detection result once, then alert if needed.",
        "StartAt": "RecordResult",
        "States": {
            "RecordResult": {
                "Type": "Task",
                "Resource": states + "dynamodb:putItem",
                "Parameters": put_parameters,
                "ResultPath": None,
                "Retry": _retry(*DYNAMODB_RETRYABLE),
                "Catch": [
                    {"ErrorEquals": [CONDITIONAL_CHECK_FAILED], "ResultPath": None,
                     "Next": "ReadRecord"},
                    _to_failure_queue(),
                ],
                "Next": "ShouldAlert",
            },
            # The put was refused: is the stored record this upload's, or another photo's?
            "ReadRecord": {
                "Type": "Task",
                "Resource": states + "dynamodb:getItem",
                "Parameters": {
                    "TableName": table_name,
                    "Key": {"image_id": {"S.$": "$.record.image_id"}},
                    "ConsistentRead": True,
                    "ProjectionExpression": "idempotency_key",
                },
                "ResultPath": "$.stored",
                "Retry": _retry(*DYNAMODB_RETRYABLE),
                "Catch": [_to_failure_queue()],
                "Next": "SameUpload",
            },
            "SameUpload": {
                "Type": "Choice",
                "Choices": [
                    # deleted since the put was refused: put again
                    {"Variable": "$.stored.Item", "IsPresent": False,
                     "Next": "RecordResult"},
                    # (rules are tried in order: the comparison sees the key present)
                    {"Variable": STORED_KEY_PATH, "IsPresent": False, "Next": "OtherPhoto"},
                    {"Variable": STORED_KEY_PATH,
                     "StringEqualsPath": "$.record.idempotency_key",
                     "Next": "AlreadyRecorded"},
                ],
                "Default": "OtherPhoto",
            },
            "OtherPhoto": {
                "Type": "Choice",
                "Choices": [
                    # an input from before the requeue (no notification to send): parked
                    # for `linesight dlq redrive`, which rebuilds it from the image
                    {"Variable": f"$.{REQUEUE}", "IsPresent": False, "Next": "NoRequeue"},
                ],
                "Default": "RequeueUpload",
            },
            "NoRequeue": {
                "Type": "Pass",
                "Result": {"Error": NO_REQUEUE,
                           "Cause": "another photo holds this image id, and the input "
                                    "carries no notification to send back"},
                "ResultPath": "$.error",
                "Next": "SendToFailureQueue",
            },
            "RequeueUpload": {
                "Type": "Task",
                "Resource": states + "sqs:sendMessage",
                "Parameters": {
                    "QueueUrl": ingest_queue_url,
                    "MessageBody.$": f"$.{REQUEUE}",
                },
                "ResultPath": None,
                "Retry": _retry("States.ALL"),
                "Catch": [_to_failure_queue()],
                "Next": "Requeued",
            },
            "ShouldAlert": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.alert.send", "BooleanEquals": True,
                             "Next": "PublishAlert"}],
                "Default": "Recorded",
            },
            "PublishAlert": {
                "Type": "Task",
                "Resource": states + "sns:publish",
                "Parameters": {
                    "TopicArn": topic_arn,
                    "Subject.$": "$.alert.subject",
                    "Message.$": "$.alert.message",
                    "MessageAttributes": {
                        "line": {"DataType": "String", "StringValue.$": "$.alert.line_id"},
                        "camera": {"DataType": "String",
                                   "StringValue.$": "$.record.camera_id"},
                        "reason": {"DataType": "String", "StringValue.$": "$.alert.reason"},
                    },
                },
                "ResultPath": "$.published",
                "Retry": _retry("States.ALL", never=SNS_PERMANENT),
                # `alert_error` (not `error`) tells the failure queue's reader that the
                # record is stored and only the alert is owed (`linesight dlq redrive`).
                "Catch": [_to_failure_queue(ALERT_ERROR_PATH)],
                "Next": "Alerted",
            },
            "SendToFailureQueue": {
                "Type": "Task",
                "Resource": states + "sqs:sendMessage",
                "Parameters": {
                    "QueueUrl": failure_queue_url,
                    "MessageBody.$": "$",
                },
                "ResultPath": None,
                "Retry": _retry("States.ALL"),
                "Next": "Failed",
            },
            "Failed": {"Type": "Fail", "Error": "LineSight.WorkflowFailed",
                       "Cause": "The input was sent to the failure queue."},
            "AlreadyRecorded": {"Type": "Succeed"},
            "Requeued": {"Type": "Succeed"},
            "Recorded": {"Type": "Succeed"},
            "Alerted": {"Type": "Succeed"},
        },
    }
