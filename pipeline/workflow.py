"""The Step Functions state machine, as data.

Only service integrations (no Lambda task), so the same ASL runs in AWS and in moto's
engine. Pulumi deploys it, the local stack provisions it, tests assert on it.

Execution input (built by `pipeline.ingest.execution_input`):
    {"item": <typed DynamoDB item>, "record": <record JSON>, "alert": {"send", "reason",
     "subject", "message", "line_id"}}

Exactly-once outcomes: the putItem is conditional, and only the execution that wrote the
record goes on to alert; a duplicate delivery ends in `AlreadyRecorded` without an alert.
What "conditional" means depends on the workflow type:
- EXPRESS (the default): names are not unique, so a redelivered upload can start a second
  execution with the same idempotency key. The put requires that the image is not
  recorded at all. The price: if DynamoDB commits a put but answers with a retryable
  error, the retry finds the record and that one alert is skipped (the record is kept).
- STANDARD: a name runs once in 90 days (the ingest handler treats ExecutionAlreadyExists
  as a duplicate), so a record with the same idempotency key can only be this execution's
  own earlier attempt: the put accepts it and the alert still goes out.
"""

from __future__ import annotations

from typing import Any

DYNAMODB_RETRYABLE = (
    "DynamoDB.ProvisionedThroughputExceededException",
    "DynamoDB.ThrottlingException",
    "DynamoDB.RequestLimitExceeded",
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


def put_condition(workflow_type: str) -> tuple[str, dict[str, Any]]:
    """The putItem condition and its values for a workflow type (see the module doc)."""
    if workflow_type == "STANDARD":
        return ("attribute_not_exists(image_id) OR idempotency_key = :k",
                {":k": {"S.$": "$.record.idempotency_key"}})
    return "attribute_not_exists(image_id)", {}


def state_machine_definition(*, table_name: str, topic_arn: str, failure_queue_url: str,
                             workflow_type: str = "EXPRESS") -> dict[str, Any]:
    """The ASL document for one environment."""
    condition, values = put_condition(workflow_type)
    put_parameters: dict[str, Any] = {
        "TableName": table_name,
        "Item.$": "$.item",
        "ConditionExpression": condition,
    }
    if values:
        put_parameters["ExpressionAttributeValues"] = values
    return {
        "Comment": "LineSight: record a detection result once, then alert if needed.",
        "StartAt": "RecordResult",
        "States": {
            "RecordResult": {
                "Type": "Task",
                "Resource": "arn:aws:states:::dynamodb:putItem",
                "Parameters": put_parameters,
                "ResultPath": None,
                "Retry": _retry(*DYNAMODB_RETRYABLE),
                "Catch": [
                    {"ErrorEquals": [CONDITIONAL_CHECK_FAILED], "ResultPath": None,
                     "Next": "AlreadyRecorded"},
                    _to_failure_queue(),
                ],
                "Next": "ShouldAlert",
            },
            "ShouldAlert": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.alert.send", "BooleanEquals": True,
                             "Next": "PublishAlert"}],
                "Default": "Recorded",
            },
            "PublishAlert": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sns:publish",
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
                "Resource": "arn:aws:states:::sqs:sendMessage",
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
            "Recorded": {"Type": "Succeed"},
            "Alerted": {"Type": "Succeed"},
        },
    }
