"""The local stack (moto server + Chalice local server + pollers), once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.local_stack import LocalStack


# Module scope: a test module that starts its own stack (test_demo) never overlaps it.
@pytest.fixture(scope="module")
def local_stack(trained_model: Path) -> Iterator[LocalStack]:
    with LocalStack(trained_model, write_state=False) as stack:
        yield stack
