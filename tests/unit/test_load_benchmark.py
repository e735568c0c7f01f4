"""The load benchmark's arithmetic (its figures come from a run: `benchmarks/load.py`)."""

from __future__ import annotations

import os

from benchmarks.load import _cpu_use


def _times(seconds: float) -> os.times_result:
    return os.times_result((seconds, 0.0, 0.0, 0.0, 0.0))


def test_the_benchmarks_own_reads_are_left_out_of_the_pipelines_figures() -> None:
    """Its scans, lake reads and alert tap were counted as the pipeline's: 2-7 ms of the
    emulator's CPU per image, and Scan among the calls per image."""
    before = {"process_cpu_seconds": 10.0, "calls": {"dynamodb.PutItem": 5},
              "cpu_seconds": {"dynamodb.PutItem": 0.5}}
    after = {"process_cpu_seconds": 14.0,
             "calls": {"dynamodb.PutItem": 15, "observer dynamodb.Scan": 4},
             "cpu_seconds": {"dynamodb.PutItem": 1.5, "observer dynamodb.Scan": 0.75}}

    use = _cpu_use(before, after, _times(1.0), _times(3.0), in_process=False)

    assert use.calls == {"dynamodb.PutItem": 10}
    assert use.request_seconds == {"dynamodb.PutItem": 1.0}
    assert (use.emulator_seconds, use.observer_seconds, use.own_seconds) == (3.25, 0.75, 2.0)
