"""The load benchmark, small: about 100 uploads over 4 lines x 4 cameras with duplicate
deliveries and bad files mixed in. Nothing lost, nothing duplicated; no timing checks
(the figures are the benchmark's job: `python benchmarks/load.py`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

if str(REPO / "benchmarks") not in sys.path:
    sys.path.insert(0, str(REPO / "benchmarks"))


@pytest.mark.slow
def test_a_hundred_uploads_nothing_lost_nothing_duplicated(trained_model: Path,
                                                            samples_dir: Path) -> None:
    import load

    report = load.run(trained_model, samples_dir, count=100, concurrency=16, workers=2,
                      timeout=75.0, log=lambda *_: None)
    print("\n".join(report.lines()))

    assert report.problems == []
    assert report.uploads == 100 and report.failed_uploads == 0
    assert report.records == report.uploads == report.lake_rows
    assert report.duplicates_sent == 5 and report.bad_files == 2 and report.invalid == 2
    assert report.alerts == report.expected_alerts
