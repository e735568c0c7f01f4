"""The state machine definition: only service integrations, retries, and a catch-all."""

from __future__ import annotations

from pipeline.workflow import CONDITIONAL_CHECK_FAILED, state_machine_definition

DEFINITION = state_machine_definition(table_name="results", topic_arn="arn:aws:sns:r:1:t",
                                      failure_queue_url="https://sqs/1/failures",
                                      ingest_queue_url="https://sqs/1/ingest", partition="aws")
TASKS = {name: state for name, state in DEFINITION["States"].items()
         if state["Type"] == "Task"}


def test_only_service_integrations() -> None:
    assert {state["Resource"] for state in TASKS.values()} == {
        "arn:aws:states:::dynamodb:putItem", "arn:aws:states:::dynamodb:getItem",
        "arn:aws:states:::sns:publish", "arn:aws:states:::sqs:sendMessage"}


def test_the_integrations_carry_the_partition() -> None:
    # outside the commercial regions the ARNs are arn:aws-cn:... or arn:aws-us-gov:...
    china = state_machine_definition(table_name="results", topic_arn="arn:aws-cn:sns:r:1:t",
                                     failure_queue_url="https://sqs/1/failures",
                                     ingest_queue_url="https://sqs/1/ingest",
                                     partition="aws-cn")
    resources = {state["Resource"] for state in china["States"].values()
                 if state["Type"] == "Task"}
    assert resources == {"arn:aws-cn:states:::dynamodb:putItem",
                         "arn:aws-cn:states:::dynamodb:getItem",
                         "arn:aws-cn:states:::sns:publish", "arn:aws-cn:states:::sqs:sendMessage"}


def test_every_task_retries() -> None:
    assert all(state.get("Retry") for state in TASKS.values())


def test_states_all_is_only_ever_the_last_retrier() -> None:
    # ASL rule: States.ALL must stand alone, in the last retrier; the ones before it win.
    for state in TASKS.values():
        for position, retrier in enumerate(state["Retry"]):
            if "States.ALL" in retrier["ErrorEquals"]:
                assert retrier["ErrorEquals"] == ["States.ALL"]
                assert position == len(state["Retry"]) - 1


def test_a_publish_error_no_retry_can_cure_is_not_retried() -> None:
    never, retried = TASKS["PublishAlert"]["Retry"]
    assert never["MaxAttempts"] == 0 and "SNS.NotFoundException" in never["ErrorEquals"]
    assert "SNS.InternalErrorException" not in never["ErrorEquals"]  # 5xx: worth a retry
    assert retried["ErrorEquals"] == ["States.ALL"] and retried["MaxAttempts"] > 0


def test_the_put_is_conditional_and_a_duplicate_skips_the_alert() -> None:
    put = TASKS["RecordResult"]
    # not recorded yet, or recorded by this very execution (a put that committed but was
    # answered with an error, retried): then it goes on and alerts
    assert put["Parameters"]["ConditionExpression"] == (
        "attribute_not_exists(image_id) OR "
        "(written_by = :writer AND attribute_not_exists(review))")
    assert put["Parameters"]["ExpressionAttributeValues"] == {
        ":writer": {"S.$": "$.written_by"}}
    refused = put["Catch"][0]
    assert refused["ErrorEquals"] == [CONDITIONAL_CHECK_FAILED]
    assert refused["Next"] == "ReadRecord"
    # Retrying the put on any error would retry duplicates too: only named errors retry.
    assert CONDITIONAL_CHECK_FAILED not in put["Retry"][0]["ErrorEquals"]
    assert "States.ALL" not in put["Retry"][0]["ErrorEquals"]
    assert "DynamoDB.InternalServerError" in put["Retry"][0]["ErrorEquals"]


def test_every_execution_input_has_its_own_writer_in_the_item_and_beside_it() -> None:
    from pipeline.workflow import with_writer

    payload = {"item": {"image_id": {"S": "a"}}, "record": {}, "alert": {}}
    first, second = with_writer(payload), with_writer(payload)
    assert first["written_by"] != second["written_by"]
    assert first["item"]["written_by"] == {"S": first["written_by"]}
    assert payload["item"] == {"image_id": {"S": "a"}}  # the given input is left as it was


def test_a_refused_put_reads_whose_record_took_the_id() -> None:
    """The put was refused: this upload's own record (a duplicate delivery) ends the run;
    a record gone meanwhile is put again; another photo's record sends this upload back
    to the ingest queue, or, from an input without the notification, to the failure queue.
    Choice rules are tried in order, so the comparison only sees a key that is there."""
    states = DEFINITION["States"]
    read = TASKS["ReadRecord"]
    assert read["Parameters"]["Key"] == {"image_id": {"S.$": "$.record.image_id"}}
    assert read["Parameters"]["ConsistentRead"] is True
    gone, keyless, same = states[read["Next"]]["Choices"]
    assert (gone["Variable"], gone["IsPresent"], gone["Next"]) == (
        "$.stored.Item", False, "RecordResult")
    assert (keyless["IsPresent"], keyless["Next"]) == (False, "OtherPhoto")
    assert same["Variable"] == keyless["Variable"] == "$.stored.Item.idempotency_key.S"
    assert same["StringEqualsPath"] == "$.record.idempotency_key"
    assert states[same["Next"]]["Type"] == "Succeed"
    assert states[read["Next"]]["Default"] == "OtherPhoto"
    [old_input] = states["OtherPhoto"]["Choices"]
    assert (old_input["Variable"], old_input["IsPresent"]) == ("$.requeue", False)
    assert states[old_input["Next"]]["Next"] == "SendToFailureQueue"
    assert states[old_input["Next"]]["ResultPath"] == "$.error"
    requeue = TASKS[states["OtherPhoto"]["Default"]]
    assert requeue["Parameters"] == {"QueueUrl": "https://sqs/1/ingest",
                                     "MessageBody.$": "$.requeue"}


def test_failures_go_to_the_failure_queue() -> None:
    for name in ("RecordResult", "ReadRecord", "RequeueUpload", "PublishAlert"):
        assert TASKS[name]["Catch"][-1]["Next"] == "SendToFailureQueue"
    send = TASKS["SendToFailureQueue"]
    assert send["Parameters"]["QueueUrl"] == "https://sqs/1/failures"
    assert DEFINITION["States"][send["Next"]]["Type"] == "Fail"


def test_alert_carries_line_attribute_for_subscription_filters() -> None:
    attributes = TASKS["PublishAlert"]["Parameters"]["MessageAttributes"]
    assert attributes["line"]["StringValue.$"] == "$.alert.line_id"
