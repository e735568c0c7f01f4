"""Reading a dead-letter queue to its end against moto's SQS, with a client that, as real
SQS may on short polls of a queue this small, first answers nothing."""

from __future__ import annotations

from typing import Any

import boto3
from moto import mock_aws

from pipeline.dlq import receive_all


class _ShortPollMisses:
    """An SQS client whose short polls answer nothing the first `misses` times."""

    def __init__(self, sqs: Any, misses: int) -> None:
        self._sqs, self.misses, self.waits = sqs, misses, []

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        self.waits.append(kwargs["WaitTimeSeconds"])
        if not kwargs["WaitTimeSeconds"] and self.misses:
            self.misses -= 1
            return {}
        return dict(self._sqs.receive_message(**kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)


def _queue(count: int) -> tuple[Any, str]:
    sqs = boto3.client("sqs", region_name="eu-west-1")
    url = sqs.create_queue(QueueName="dlq")["QueueUrl"]
    for index in range(count):
        sqs.send_message(QueueUrl=url, MessageBody=f"dead letter {index}")
    return sqs, url


@mock_aws
def test_a_short_poll_that_answers_nothing_does_not_end_the_reading(aws_env: None) -> None:
    sqs, url = _queue(3)
    missing = _ShortPollMisses(sqs, misses=1)

    read = receive_all(missing, url)

    assert sorted(m["Body"] for m in read) == [f"dead letter {i}" for i in range(3)]
    assert missing.waits[:2] == [0, 1]  # the queue counted 3: asked again, by a long poll


@mock_aws
def test_an_empty_queue_is_read_at_once_without_a_long_poll(aws_env: None) -> None:
    sqs, url = _queue(0)
    watched = _ShortPollMisses(sqs, misses=0)

    assert receive_all(watched, url) == []
    assert watched.waits == [0]
