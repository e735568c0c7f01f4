"""How `make demo` spreads the test images over the cameras (the run itself is `make demo`
and tests/e2e)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from scripts.demo import plan_uploads
from scripts.local_stack import Topology


def _samples(root: Path, names: list[str]) -> Path:
    for name in names:
        folder = root / "test" / ("anomaly" if name.startswith("a") else "normal")
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (90, 90, 90)).save(folder / name)
    return root


@pytest.mark.parametrize("names", [
    ["a1.png", "n1.png"],  # PNG only, and fewer images than the 4 cameras: a KeyError
    ["a1.JPG", "n1.jpeg", "n2.jpg", "a2.png", "n3.jpg"],
])
def test_every_image_is_planned_and_the_unusable_files_go_to_the_last_camera(
        tmp_path: Path, names: list[str]) -> None:
    topology = Topology()
    folders = plan_uploads(_samples(tmp_path / "samples", names), tmp_path / "out", topology)

    planned = sorted(p.name for folder in folders.values() for p in folder.iterdir())
    assert len(planned) == len(names) + 2
    last = folders[("line-2", "cam-4")]
    assert {"not-an-image.jpg"} < {p.name for p in last.iterdir()}
    assert any(p.name.startswith("truncated.") for p in last.iterdir())


def test_samples_without_test_images_are_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "samples" / "test" / "normal").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no .jpg, .jpeg or .png images in"):
        plan_uploads(tmp_path / "samples", tmp_path / "out", Topology())
