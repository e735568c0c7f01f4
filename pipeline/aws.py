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


# A person at a terminal is better served by a quick, clear failure than by botocore's
# defaults (a 60 s read, retried four times), which make an endpoint that accepts
# connections but never answers look like a hang of several minutes. The handlers keep
# the defaults: their reads may be slow under load, and their retries are the queues'.
_INTERACTIVE = _CONFIG.merge(Config(connect_timeout=5, read_timeout=10,
                                    retries={"mode": "standard", "total_max_attempts": 3}))
_config = _CONFIG


@cache
def client(service: str) -> Any:
    return boto3.client(service, config=_config)


def interactive(on: bool = True) -> None:
    """Use short timeouts and few retries from now on (operator commands, not handlers);
    `on=False` goes back to the handlers' settings."""
    global _config
    wanted = _INTERACTIVE if on else _CONFIG
    if wanted is not _config:
        _config = wanted
        reset()


def reset() -> None:
    """Forget cached clients (tests change endpoints between cases)."""
    client.cache_clear()
