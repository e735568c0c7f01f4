"""The detector benchmark's verdicts on issue 3's targets (the figures come from a run)."""

from __future__ import annotations

import doctest

import pytest

from benchmarks import detector
from benchmarks.detector import verdicts

MET = {"dataset": "circuitboard", "auroc": 0.97, "f1": 0.93, "ratio": 1.5, "train_s": 300.0,
       "n_train": 100, "artifact_mb": 50.0}


def test_doctests() -> None:
    outcome = doctest.testmod(detector)
    assert outcome.attempted > 0 and outcome.failed == 0


def test_every_target_met_at_its_limit() -> None:
    found = verdicts(MET)
    assert len(found) == 4 and all(": met" in verdict for verdict in found)


@pytest.mark.parametrize("change, missed", [
    ({"auroc": 0.969}, "AUROC >= 0.97 and F1 >= 0.93"),  # ranking short
    ({"f1": 0.92}, "AUROC >= 0.97 and F1 >= 0.93"),  # threshold short
    ({"ratio": 1.51}, "ms/image <= 1.5x full decode"),
    ({"train_s": 301.0}, "training <= 5 min for 100 images"),
    ({"artifact_mb": 50.1}, "artifact <= 50 MB"),
])
def test_each_target_missed_alone(change: dict[str, float], missed: str) -> None:
    found = verdicts({**MET, **change})
    assert [verdict for verdict in found if "MISSED" in verdict] == [
        next(verdict for verdict in found if verdict.startswith(missed))]


def test_targets_that_do_not_apply_are_left_out() -> None:
    found = verdicts({**MET, "dataset": "my-line", "n_train": 400})
    assert not any(verdict.startswith(("AUROC", "training")) for verdict in found)
