"""The ONNX backbone path: a tiny convolutional feature extractor built here with the onnx
helper API (random but fixed weights), PatchCore-style memory-bank scoring on top."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import typer
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from pipeline.detector import clear_cache, load_detector
from pipeline.detector.evaluation import evaluate
from pipeline.detector.methods.onnx_backbone import OnnxPatchCore
from pipeline.detector.training import TrainingError, train_model
from scripts.cli_detector import register
from scripts.make_samples import generate

SMALL = {("train", "normal"): 12, ("train", "anomaly"): 4,
         ("test", "normal"): 6, ("test", "anomaly"): 6}


def tiny_backbone(path: Path, side: int | None = 64) -> Path:
    """Two strided 3x3 convolutions with ReLU: (1, 3, H, W) -> (1, 16, H/4, W/4), plus the
    first layer's (1, 8, H/2, W/2) map as a second output (multi-layer features)."""
    rng = np.random.default_rng(42)
    w1 = rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (16, 8, 3, 3)).astype(np.float32)
    dims: list[int | str] = [1, 3, side or "H", side or "W"]
    nodes = [
        helper.make_node("Conv", ["image", "w1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["layer1"]),
        helper.make_node("Conv", ["layer1", "w2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["layer2"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_backbone",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("layer2", TensorProto.FLOAT, [1, 16, None, None]),
         helper.make_tensor_value_info("layer1", TensorProto.FLOAT, [1, 8, None, None])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx-samples")
    generate(out, counts=SMALL, size=128)
    return out


@pytest.mark.parametrize("side", [
    64,    # a backbone with a fixed input size: images are resized to it
    None,  # dynamic height and width: the method's input_size is used
])
def test_features_have_the_backbone_grid(tmp_path: Path, side: int | None) -> None:
    backbone = tiny_backbone(tmp_path / "b.onnx", side)
    method = OnnxPatchCore(backbone.read_bytes(), input_size=96)
    patches, grid = method._patches(np.zeros((80, 120, 3), np.uint8))
    expected = (16, 16) if side else (24, 24)
    assert grid == expected
    assert patches.shape == (expected[0] * expected[1], 16 + 8)


def test_train_and_evaluate_with_an_onnx_backbone(samples: Path, tmp_path: Path) -> None:
    backbone = tiny_backbone(tmp_path / "backbone.onnx", side=128)
    report = train_model(samples, tmp_path / "model", backbone=backbone,
                         methods=["onnx_patchcore"])
    assert report.method == "onnx_patchcore"
    backbone.unlink()  # the artifact carries the backbone; the file is no longer needed
    clear_cache()
    detector = load_detector("embedded", str(tmp_path / "model"))
    image = next((samples / "test" / "anomaly").glob("*.jpg")).read_bytes()
    result = detector.detect(image, "image/jpeg")
    assert 0.0 <= result.score <= 1.0 and result.heatmap_png
    evaluation = evaluate(tmp_path / "model", samples / "test")
    assert evaluation.auroc >= 0.8


def test_the_backbone_method_is_only_tried_when_given_a_backbone(samples: Path,
                                                                  tmp_path: Path) -> None:
    report = train_model(samples, tmp_path / "m1", methods=["pixel_gaussian"])
    assert "onnx_patchcore" not in {c.method for c in report.candidates}
    with pytest.raises(TrainingError, match="--backbone"):
        train_model(samples, tmp_path / "m2", methods=["onnx_patchcore"])


def test_cli_backbone_option(samples: Path, tmp_path: Path) -> None:
    backbone = tiny_backbone(tmp_path / "backbone.onnx")
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, [
        "train", str(samples), "--out", str(tmp_path / "m"), "--backbone", str(backbone),
        "--method", "onnx_patchcore", "--method", "pixel_gaussian"])
    assert result.exit_code == 0, result.output
    assert "onnx_patchcore" in result.output
    trained = json.loads((tmp_path / "m" / "train_report.json").read_text())
    assert {"onnx_patchcore", "pixel_gaussian"} <= {c["method"] for c in trained["candidates"]}


def test_memory_bank_helpers() -> None:
    """The ONNX path's memory bank and nearest-patch distances (`methods.memory`)."""
    import doctest

    from pipeline.detector.methods import memory

    outcome = doctest.testmod(memory)
    assert outcome.attempted > 0 and outcome.failed == 0


@pytest.mark.parametrize("offset", [0.0, 1000.0])  # features near zero / far from it
def test_the_memory_bank_is_exact_far_from_zero(offset: float) -> None:
    """Rounding must not pick a bank row twice, nor hide a distance (norm-based maths)."""
    from pipeline.detector.methods.memory import Bank, coreset, nearest_distances

    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.normal(0, 1e-3, (3000, 8)), rng.normal(0, 1, (300, 8))])
    rows = (rows + offset).astype(np.float32)
    bank = coreset(rows, 500, rng)
    assert len(np.unique(bank, axis=0)) == 500
    queries = rows[rng.choice(len(rows), 200)] + rng.normal(0, 0.1, (200, 8)).astype(np.float32)
    naive = np.sqrt(((queries[:, None, :].astype(np.float64) - bank[None]) ** 2).sum(-1)).min(1)
    assert np.allclose(nearest_distances(queries, bank), naive, rtol=1e-3, atol=1e-3)
    assert np.array_equal(nearest_distances(queries, Bank.of(bank)),
                          nearest_distances(queries, bank))


def test_a_method_makes_its_bank_ready_once_and_again_when_it_is_replaced() -> None:
    from pipeline.detector.methods.texture import TextureMemory

    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (64, 64, 3), np.uint8) for _ in range(3)]
    method = TextureMemory(input_size=64)
    method.fit(images[:2], [], rng)
    first = method.score(images[2])[0]
    ready = method._ready_bank()
    assert method._ready_bank() is ready  # kept between images
    assert method.score(images[2])[0] == first

    method.bank = method.bank[: len(method.bank) // 4]  # as `from_state` replaces it
    assert method._ready_bank() is not ready
    fewer = TextureMemory(input_size=64)
    fewer.centre, fewer.scale, fewer.bank = method.centre, method.scale, method.bank.copy()
    assert method.score(images[2])[0] == fewer.score(images[2])[0] >= first
