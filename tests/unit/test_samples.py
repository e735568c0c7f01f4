"""The synthetic sample generator: deterministic, idempotent, small, and labelled."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from scripts.make_samples import COUNTS, DEFECTS, generate, main, make_part

SMALL = {("train", "normal"): 3, ("train", "anomaly"): 4, ("test", "normal"): 1,
         ("test", "anomaly"): 1}


def _digest(folder: Path) -> str:
    hashed = hashlib.sha256()
    for path in sorted(folder.rglob("*.jpg")):
        hashed.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return hashed.hexdigest()


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    assert generate(tmp_path / "a", counts=SMALL) == 9
    assert generate(tmp_path / "b", counts=SMALL) == 9
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


def test_idempotent_unless_forced(tmp_path: Path) -> None:
    generate(tmp_path, counts=SMALL)
    assert generate(tmp_path, counts=SMALL) == 0
    assert generate(tmp_path, counts=SMALL, force=True) == 9


def test_layout_and_labels(tmp_path: Path) -> None:
    generate(tmp_path, counts=SMALL)
    anomalies = sorted(p.name for p in (tmp_path / "train" / "anomaly").glob("*.jpg"))
    assert [name.split("-", 2)[2].removesuffix(".jpg") for name in anomalies] == list(DEFECTS)
    assert len(list((tmp_path / "test" / "normal").glob("*.jpg"))) == 1
    with Image.open(next(tmp_path.rglob("*.jpg"))) as image:
        assert image.size == (256, 256) and image.mode == "RGB"


def test_every_defect_is_visible() -> None:
    normal = np.asarray(make_part(np.random.default_rng(3)), np.float32)
    for defect in DEFECTS:
        damaged = np.asarray(make_part(np.random.default_rng(3), defect), np.float32)
        assert np.abs(damaged - normal).max() > 40, defect


def test_the_full_set_is_small(tmp_path: Path) -> None:
    main(["--out", str(tmp_path)])
    files = list(tmp_path.rglob("*.jpg"))
    assert len(files) == sum(COUNTS.values())
    assert sum(path.stat().st_size for path in files) < 1_500_000
