"""`make demo`'s flow on a small generated set: every upload through every stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.demo import run_demo


@pytest.mark.slow
def test_demo_sends_every_upload_through_every_stage(
        samples_dir: Path, trained_model: Path, tmp_path: Path) -> None:
    code = run_demo(out=tmp_path, samples=samples_dir, model=trained_model,
                    timeout=120, write_state=False)

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert code == 0, summary
    # test images plus the two unusable files the demo adds on purpose
    n_images = len(list((samples_dir / "test").rglob("*.jpg")))
    assert summary["uploaded"] == summary["results"] == summary["lake_rows"] == n_images + 2
    assert summary["invalid"] == 2
    # each record whose decision was to alert, alerted once (anomalous ones among them)
    assert summary["alerts"] == summary["alerts_due"] >= summary["anomalous"] > 0
    assert len(summary["per_camera"]) == 4  # 2 lines x 2 cameras
    report = Path(summary["report"])
    assert report.exists() and report.stat().st_size > 10_000
