"""Lazily created boto3 clients, one per service and process.

Nothing is created at import time. boto3 reads the endpoint from the standard
`AWS_ENDPOINT_URL` variable, so the local stack points every client at the emulator
without any local-only code path.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config

# A Lambda container runs one invocation at a time; the pool size matters where one process
# serves several threads (the local stack's API server, ingest workers and pollers).
_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5},
                 s3={"addressing_style": "path"}, signature_version="s3v4",
                 max_pool_connections=32)


@cache
def client(service: str) -> Any:
    return boto3.client(service, config=_CONFIG)


def reset() -> None:
    """Forget cached clients (tests change endpoints between cases)."""
    client.cache_clear()
