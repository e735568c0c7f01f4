"""Detector benchmark on the real photo sets in ../shared/datasets.

    .venv/bin/python -m benchmarks.detector [--datasets circuitboard cookies] [--json out.json]
                                            [--scale 400 [--scale-from circuitboard]]

For each data set: train on train/ (method and threshold chosen by cross-validation on
train/ only), evaluate on test/, and print one row: method chosen, AUROC, F1, precision,
recall, train seconds, ms per image (decode + detect, one image at a time, BLAS on one
thread), the full-scale decode ms of the same JPEGs, their ratio, the same ratio in CPU
time of the scoring thread (steadier when the machine is busy), and the artifact size.
Both timings are the fastest of three passes over test/, taken in turns. Training shows
the CLI's progress bars (on a terminal); the timed passes run without them.
Also prints the peak RSS (MiB, of the whole run) and the import time of
`pipeline.detector`, and whether each of issue 3's targets was met. Test images the
detector refuses as unusable are left out of the figures, as `linesight evaluate` does,
and counted in the row and in its verdict; the decode baseline times the scored ones. A
data set that is missing, or cannot be trained or evaluated, is skipped with a message.
Nothing here is tuned to test/.

`--scale N` also times training (every candidate method, cross-validation included) on N
generated 256-px sample images, three quarters normal (the issue's "400 images on 2 cores
in 15 minutes"). With `--scale-from NAME` the N images are full-resolution photos made from
that data set's train/ instead: each a training photo shifted by up to 2 % of its width,
turned by up to 2 degrees, lit 7 % brighter or darker and saved again as a JPEG. They are
near-copies, so only the time (and memory) of that training means anything, not its
cross-validated accuracy.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from pipeline.detector import artifact
from pipeline.detector.evaluation import EvaluationError, evaluate, test_images
from pipeline.detector.metrics import listed
from pipeline.detector.threads import blas_threads
from pipeline.detector.training import TrainingError, train_model
from scripts.cli_detector import how_sure, progress_bar
from scripts.make_samples import generate

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
TARGETS = {"circuitboard": (0.97, 0.93), "cookies": (0.99, 0.93)}  # AUROC, F1
# issue 3's other targets: ms/image against a full decode, training seconds for <= 100
# and for 400 images, artifact MB, seconds to import the detector
MAX_RATIO, MAX_TRAIN_S, MAX_TRAIN_S_400, MAX_ARTIFACT_MB, MAX_IMPORT_S = 1.5, 300, 900, 50, 1.5
PASSES = 3  # timed passes over test/, each with a full-decode pass


def full_decode_ms(paths: list[Path]) -> tuple[float, float]:
    """Mean (wall, CPU) ms to decode each file at full resolution to RGB, bytes in memory.

    An RGB JPEG is decoded and not copied again (`convert("RGB")` of an RGB image is a
    copy, and an 8 MB copy into freshly mapped memory costs as much as the decode on this
    VM, more or less depending on the allocator's history: it made the ratio swing by 2x).
    """
    blobs = [path.read_bytes() for path in paths]
    started, cpu_started = time.perf_counter(), time.thread_time()
    for blob in blobs:
        with Image.open(io.BytesIO(blob)) as image:
            image.load()
            if image.mode != "RGB":
                image.convert("RGB")
    return ((time.perf_counter() - started) * 1000.0 / len(blobs),
            (time.thread_time() - cpu_started) * 1000.0 / len(blobs))


def import_seconds() -> float:
    """Wall time of `import pipeline.detector` in a fresh interpreter (the Lambda cold path)."""
    code = ("import time; t = time.perf_counter(); import pipeline.detector, "
            "pipeline.detector.embedded; print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    return float(out.stdout.strip())


def bench(name: str, root: Path, work: Path) -> dict[str, Any]:
    model_dir = work / name
    with progress_bar() as progress:  # training only: the timed passes run without it
        report = train_model(root, model_dir, progress=progress)
    # warm-up (caches, first calls), and which test images the detector refuses
    refused = evaluate(model_dir, root / "test", keep_heatmaps=False).invalid
    left_out = {item["path"] for item in refused}
    paths = [path for paths in test_images(root / "test").values() for path in paths
             if str(path) not in left_out]
    # Both sides of the ratio are timed the same way, in alternating passes (so a slow
    # spell of the machine falls on both): the fastest pass of each counts.
    documents, decodes = [], []
    for _ in range(PASSES):
        documents.append(evaluate(model_dir, root / "test", keep_heatmaps=False).to_json())
        with blas_threads(1):
            decodes.append(full_decode_ms(paths))
    document = min(documents, key=lambda d: d["ms_per_image"])
    cpu_ms = min(d["cpu_ms_per_image"] for d in documents)
    decode_ms, decode_cpu_ms = min(wall for wall, _ in decodes), min(cpu for _, cpu in decodes)
    return {
        "dataset": name, "method": report.method, "auroc": document["auroc"],
        "f1": document["f1"], "precision": document["precision"],
        "recall": document["recall"], "auroc_standard_error": document["auroc_standard_error"],
        "intervals": document["intervals"], "n_normal": document["n_normal"],
        "n_anomaly": document["n_anomaly"], "train_s": report.train_seconds,
        "refused": {label: sum(item["label"] == label for item in refused)
                    for label in ("normal", "anomaly")},
        "n_train": report.n_normal + report.n_anomaly,
        "ms_per_image": document["ms_per_image"], "full_decode_ms": decode_ms,
        "ratio": document["ms_per_image"] / decode_ms,
        "cpu_ms_per_image": cpu_ms, "full_decode_cpu_ms": decode_cpu_ms,
        "cpu_ratio": cpu_ms / decode_cpu_ms,
        "artifact_mb": artifact.size_bytes(model_dir) / 1e6,
        "cv_auroc": report.cv_auroc, "cv_f1": report.cv_f1,
        "cv_auroc_other_assignments": list(report.cv_auroc_other_assignments),
        "candidates": [{"method": c.method, "cv_auroc": c.auroc, "cv_f1": c.f1,
                        "error": c.error} for c in report.candidates],
        "threshold_rule": report.threshold_rule,
    }


def verdicts(row: dict[str, Any]) -> list[str]:
    """Each of issue 3's targets that one data set's row answers, and whether it was met.

    >>> print("; ".join(verdicts({"dataset": "cookies", "auroc": 1.0, "f1": 1.0,
    ...     "auroc_standard_error": 0.0, "ratio": 1.62, "train_s": 118.2, "n_train": 63,
    ...     "artifact_mb": 0.1})))
    AUROC >= 0.99 and F1 >= 0.93: met (1.000 ± 0.000, 1.000); \
ms/image <= 1.5x full decode: MISSED (1.62x); training <= 5 min for 63 images: met (118 s); \
artifact <= 50 MB: met (0.1 MB)
    """
    def said(met: bool, figure: str = "") -> str:
        return ("met" if met else "MISSED") + (f" ({figure})" if figure else "")

    found = []
    target = TARGETS.get(row["dataset"])
    refused = sum((row.get("refused") or {}).values())
    if target and (row["auroc"] is None or row["f1"] is None):
        found.append(f"AUROC >= {target[0]} and F1 >= {target[1]}: not measured (a class "
                     "of test images was refused whole)")
    elif target:
        found.append(f"AUROC >= {target[0]} and F1 >= {target[1]}: "
                     + said(row["auroc"] >= target[0] and row["f1"] >= target[1],
                            f"{row['auroc']:.3f} ± {row['auroc_standard_error']:.3f}, "
                            f"{row['f1']:.3f}"
                            + (f"; {refused} test images refused as unusable, left out"
                               if refused else "")))
    found.append(f"ms/image <= {MAX_RATIO}x full decode: "
                 + said(row["ratio"] <= MAX_RATIO, f"{row['ratio']:.2f}x"))
    if row["n_train"] <= 100:
        found.append(f"training <= {MAX_TRAIN_S // 60} min for {row['n_train']} images: "
                     + said(row["train_s"] <= MAX_TRAIN_S, f"{row['train_s']:.0f} s"))
    found.append(f"artifact <= {MAX_ARTIFACT_MB} MB: "
                 + said(row["artifact_mb"] <= MAX_ARTIFACT_MB, f"{row['artifact_mb']:.1f} MB"))
    return found


def train_at_scale(count: int, work: Path, source: Path | None = None) -> float:
    """Seconds to train on `count` images (3/4 normal, 1/4 anomalous): generated samples,
    or photos jittered from `source`'s train/ (`jittered_photos`)."""
    anomalies = count // 4
    counts = {("train", "normal"): count - anomalies, ("train", "anomaly"): anomalies}
    data = work / f"scale-{count}"
    if source is None:
        generate(data, counts=counts)
    else:
        jittered_photos(source / "train", data, counts)
    with progress_bar() as progress:
        return train_model(data, work / f"scale-{count}-model", progress=progress).train_seconds


def jittered_photos(source: Path, out: Path, counts: dict[tuple[str, str], int],
                    seed: int = 0) -> None:
    """Write `counts[(split, label)]` JPEGs to out/split/label/, each a photo from
    source/label/ in turn, shifted by up to 2 % of its width, turned by up to 2 degrees
    (the gap filled with the corner's colour) and lit up to 7 % brighter or darker."""
    rng = np.random.default_rng(seed)
    photos_of = test_images(source)  # normal/ and anomaly/, both required
    for (split, label), count in counts.items():
        photos = photos_of[label]
        folder = out / split / label
        folder.mkdir(parents=True, exist_ok=True)
        for index, path in zip(range(count), itertools.cycle(photos)):
            with Image.open(path) as opened:
                photo = opened.convert("RGB")
            reach = max(1, photo.width // 50)
            dx, dy = (int(v) for v in rng.integers(-reach, reach + 1, 2))
            corner = photo.getpixel((0, 0))
            photo = photo.rotate(float(rng.uniform(-2, 2)), Image.Resampling.BILINEAR,
                                 translate=(dx, dy), fillcolor=corner)
            photo = ImageEnhance.Brightness(photo).enhance(float(rng.uniform(0.93, 1.07)))
            photo.save(folder / f"{label}_{index:04d}.jpg", quality=92)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=["circuitboard", "cookies"])
    parser.add_argument("--root", type=Path, default=DATASETS)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--scale", type=int, default=0, metavar="N",
                        help="also time training on N generated images (e.g. 400)")
    parser.add_argument("--scale-from", metavar="NAME",
                        help="with --scale: make the N images from this data set's "
                             "train/ photos, at their resolution, instead of generating them")
    args = parser.parse_args(argv)
    source = None
    if args.scale_from:
        source = args.root / args.scale_from
        if not args.scale:
            parser.error("--scale-from needs --scale N")
        try:  # before any training: it found a source without anomalies only at the end
            test_images(source / "train")
        except EvaluationError as exc:
            parser.error(f"--scale-from {args.scale_from}: {exc}")
    scaled = (f"{args.scale} photos made from {args.scale_from}" if source
              else f"{args.scale} generated images")

    rows = []
    with tempfile.TemporaryDirectory(prefix="linesight-bench-") as work:
        for name in args.datasets:
            root = args.root / name
            if not (root / "train").is_dir() or not (root / "test").is_dir():
                absent = " (../shared/datasets is absent?)" if args.root == DATASETS else ""
                print(f"skipping {name}: {root}/train or {root}/test not found{absent}")
                continue
            print(f"{name}: training and evaluating ...", flush=True)
            try:
                rows.append(bench(name, root, Path(work)))
            except (TrainingError, EvaluationError) as exc:  # the other sets still run
                print(f"skipping {name}: {exc}")
        scale_seconds = None
        if args.scale:
            print(f"training on {scaled} ...", flush=True)
            scale_seconds = train_at_scale(args.scale, Path(work), source)

    header = (f"{'dataset':<13}{'method':<16}{'AUROC':>7}{'F1':>7}{'prec':>7}{'recall':>7}"
              f"{'n':>7}{'train s':>9}{'ms/img':>8}{'decode':>8}{'ratio':>7}{'cpu ratio':>10}"
              f"{'MB':>6}")
    print()
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['dataset']:<13}{row['method']:<16}{_figure(row['auroc']):>7}"
              f"{_figure(row['f1']):>7}{_figure(row['precision']):>7}"
              f"{_figure(row['recall']):>7}"
              f"{row['n_normal']:>3}+{row['n_anomaly']:<3}{row['train_s']:>9.1f}"
              f"{row['ms_per_image']:>8.1f}{row['full_decode_ms']:>8.1f}{row['ratio']:>7.2f}"
              f"{row['cpu_ratio']:>10.2f}{row['artifact_mb']:>6.1f}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    imported = import_seconds()
    print(f"\npeak RSS {peak_mb:.0f} MiB; import pipeline.detector {imported:.2f} s "
          f"(target <= {MAX_IMPORT_S} s: {'met' if imported <= MAX_IMPORT_S else 'MISSED'})")
    for row in rows:
        print(f"{row['dataset']}: " + "; ".join(verdicts(row)))
        if any(row["refused"].values()):
            print(f"  refused as unusable, left out of the figures: {row['refused']['normal']}"
                  f" normal, {row['refused']['anomaly']} anomalous test images")
        uncertainty = how_sure(row)
        if uncertainty:
            print(f"  {uncertainty}")
        for candidate in row["candidates"]:
            print(f"  cv {candidate['method']:<32} AUROC {_figure(candidate['cv_auroc'])}  "
                  f"F1 {_figure(candidate['cv_f1'])}  {candidate['error'] or ''}")
        if row["cv_auroc_other_assignments"]:
            others = row["cv_auroc_other_assignments"]
            print(f"  {row['method']} on {len(others)} other fold assignments: "
                  f"AUROC {listed(others)}")
    if scale_seconds is not None:
        verdict = ("" if args.scale != 400 else
                   ": met" if scale_seconds <= MAX_TRAIN_S_400 else ": MISSED")
        print(f"training on {scaled}: {scale_seconds:.0f} s "
              f"(target <= {MAX_TRAIN_S_400 // 60} min for 400{verdict})")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "peak_rss_mib": peak_mb,
                                         "import_s": imported,
                                         "scale": {"images": args.scale,
                                                   "source": args.scale_from,
                                                   "train_s": scale_seconds}}, indent=2))


def _figure(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
