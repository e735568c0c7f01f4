"""The detector commands of the `linesight` CLI: `train` and `evaluate`.

`scripts/cli.py` (the typer root) calls `register(app)` to add them.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console()
err = Console(stderr=True)  # errors, so that a script reading stdout does not take them in

# The methods training tries unasked, as `pipeline.detector.methods.METHODS` registers them
# (a test keeps the two alike); named here so that `--help` need not import the detector.
METHOD_NAMES = ("pixel_gaussian", "align", "align_patch", "shape", "cnn", "cnn_coarse",
                "texture")
PLAIN_EVERY_S = 10.0  # how often progress is written as a line when not on a terminal
SKIPPED_SHOWN = 5  # images left out (training) or refused (evaluate) listed on screen; all: JSON
# What the training table's columns mean: its ms/image is not `evaluate`'s
TABLE_CAPTION = ("AUROC and F1 from out-of-fold scores; fit s: CPU time of all folds' fitting; "
                 "ms/image: median CPU time to score one held-out image on one thread, "
                 "decoding not included (linesight evaluate's figure includes it)")


def register(app: typer.Typer) -> None:
    """Add `train` and `evaluate` to the `linesight` app."""
    app.command("train", no_args_is_help=True)(train)
    app.command("evaluate", no_args_is_help=True)(evaluate)


@contextmanager
def progress_bar() -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress display; yields the `progress(description, completed, total)`
    callback training and evaluation report to (one bar per description).

    The bar is drawn on standard output, or on standard error when only that is a
    terminal (`linesight train ... | tee train.log`). When neither is, as in CI or under
    `nohup`, a bar would show nothing until the end: progress is then plain lines on
    standard error instead, at most one per description every `PLAIN_EVERY_S` seconds,
    plus its first and last step."""
    shown_on = console if console.is_terminal else err
    if not shown_on.is_terminal:
        yield plain_progress(err)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=shown_on, transient=True) as progress:
        tasks: dict[str, int] = {}

        def update(description: str, completed: int, total: int) -> None:
            if description not in tasks:
                tasks[description] = progress.add_task(description, total=total)
            progress.update(tasks[description], completed=completed, total=total)

        yield update


def plain_progress(out: Console) -> Callable[[str, int, int], None]:
    """The `progress` callback as plain lines on `out`, for output that is not a terminal:
    a description's first step, its last, and at most one line every `PLAIN_EVERY_S`
    seconds between them.

    >>> from io import StringIO
    >>> written = StringIO()
    >>> update = plain_progress(Console(file=written, width=200))
    >>> for done in range(1, 4):
    ...     update("decoding images at 128 px", done, 3)
    >>> print(written.getvalue(), end="")
    decoding images at 128 px: 1/3
    decoding images at 128 px: 3/3
    """
    last: dict[str, float] = {}

    def update(description: str, completed: int, total: int) -> None:
        now = time.monotonic()
        shown = last.get(description)  # when last written; inf once its last step was
        finished = completed >= total
        if (shown is None or now - shown >= PLAIN_EVERY_S
                or (shown == math.inf) != finished):  # its last step, or it started again
            last[description] = math.inf if finished else now
            out.print(f"{description}: {completed}/{total}", markup=False, highlight=False,
                      soft_wrap=True)

    return update


def train(
    data_dir: Annotated[Path, typer.Argument(
        help="Folder with train/normal (and optionally train/anomaly, masks/); or "
             "train/good and a folder per defect type, as in MVTec AD; or the folder the "
             "manifest's images are under.")],
    out: Annotated[Path, typer.Option(
        "--out", help="Where to write the model directory; a model already there is "
                      "replaced once the new one is written whole.")],
    manifest: Annotated[Path | None, typer.Option(
        help="A Lookout for Vision / Ground Truth manifest (JSON lines) naming the images.")
    ] = None,
    method: Annotated[list[str] | None, typer.Option(
        "--method", help=f"Only consider this method (repeatable): {', '.join(METHOD_NAMES)}, "
                         "or onnx_patchcore with --backbone. Default: every one that suits "
                         "the images (docs/detector.md).")
    ] = None,
    backbone: Annotated[Path | None, typer.Option(
        help="An ONNX feature extractor for the PatchCore-style onnx_patchcore method.")
    ] = None,
    roi: Annotated[str | None, typer.Option(
        help="Region of interest x0,y0,x1,y1 as fractions of width and height, e.g. "
             "0.1,0,0.9,1; training and detection look only there.")] = None,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Cross-validation folds to fit at once, in threads. Default: one per "
                    "core, at most 4; 1 leaves the other cores free, and holds one fold's "
                    "model in memory instead of several. The model is the same either "
                    "way.")] = None,
) -> None:
    """Train a detector on a folder of images and print what it learned.

    The method and the threshold are chosen by cross-validation on the training images only.

    Example:

        linesight train resources/samples --out build/model
    """
    from pipeline.detector.imageio import parse_roi
    from pipeline.detector.metrics import listed
    from pipeline.detector.training import TrainingError, train_model

    if not data_dir.is_dir():
        raise typer.BadParameter(f"{data_dir} is not a directory", param_hint="DATA_DIR")
    if manifest is not None and not manifest.is_file():
        raise typer.BadParameter(f"{manifest} does not exist", param_hint="--manifest")
    if backbone is not None and not backbone.is_file():
        raise typer.BadParameter(f"{backbone} does not exist", param_hint="--backbone")
    try:
        region = parse_roi(roi) if roi else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--roi") from None
    check_writable(out, "--out", directory=True)
    replaced = _model_version(out)
    try:
        with progress_bar() as update:
            report = train_model(data_dir, out, manifest=manifest, progress=update,
                                 methods=method, backbone=backbone, roi=region,
                                 workers=workers)
    except (TrainingError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(code=2) from None

    table = Table(title="cross-validation on the training split", show_edge=False,
                  caption=TABLE_CAPTION, caption_justify="left")
    for column in ("method", "AUROC", "F1", "fit s", "ms/image", "note"):
        table.add_column(column)
    for candidate in report.candidates:
        chosen = "chosen" if candidate.method == report.method else ""
        table.add_row(candidate.method, _fmt(candidate.auroc), _fmt(candidate.f1),
                      f"{candidate.fit_seconds:.1f}", f"{candidate.ms_per_image:.1f}",
                      candidate.error or chosen)
    console.print(table)
    console.print(f"images: {report.n_normal} normal, {report.n_anomaly} anomalous"
                  + (f", {report.n_masks} masks" if report.n_masks else ""))
    if report.skipped:
        console.print(f"[yellow]left out of training: {len(report.skipped)} image(s)[/yellow]")
        for item in report.skipped[:SKIPPED_SHOWN]:
            console.print(f"  {item}", markup=False)
        if len(report.skipped) > SKIPPED_SHOWN:
            console.print(f"  ... and {len(report.skipped) - SKIPPED_SHOWN} more "
                          "(all in train_report.json)")
    console.print(f"method: [bold]{report.method}[/bold] ({report.selection_rule})")
    console.print(f"cross-validated AUROC {_fmt(report.cv_auroc)}, F1 {_fmt(report.cv_f1)}")
    if report.cv_auroc_other_assignments:
        console.print(f"  AUROC on other fold assignments: "
                      f"{listed(report.cv_auroc_other_assignments)} (how much the figure "
                      "depends on which images are held out together)")
    console.print(f"threshold: raw {report.raw_threshold:.4g} = 0.5 normalised "
                  f"({report.threshold_rule})")
    console.print(f"model {report.model_version} written to {report.model_dir} "
                  f"({report.artifact_bytes / 1e6:.2f} MB) in {report.train_seconds:.1f} s"
                  + (f", replacing model {replaced}" if replaced else ""))


def check_writable(path: Path, option: str, *, directory: bool = False) -> None:
    """Refuse an output path that cannot be written before any work starts, not after it.

    >>> try:
    ...     check_writable(Path("/"), "--json")
    ... except typer.BadParameter as exc:
    ...     print(exc)
    / is a directory; give a file name
    """
    if path.exists() and path.is_dir() != directory:
        raise typer.BadParameter(
            f"{path} is a directory; give a file name" if not directory else
            f"{path} is a file; give a directory for the model", param_hint=option)
    # where the files go: an existing model folder itself, else the nearest folder that is
    parent = path if directory and path.is_dir() else path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise typer.BadParameter(f"cannot write {path}: {parent} is a file", param_hint=option)
    if not os.access(parent, os.W_OK):
        raise typer.BadParameter(f"cannot write {path}: {parent} is not writable",
                                 param_hint=option)


def _model_version(model_dir: Path) -> str | None:
    """The version of the model already in `model_dir`, if there is one."""
    try:
        return str(json.loads((model_dir / "model.json").read_text())["model_version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def evaluate(
    model_dir: Annotated[Path, typer.Argument(help="A model directory written by train.")],
    test_dir: Annotated[Path, typer.Argument(
        help="Folder with normal/ and anomaly/ images (or good/ and a folder per defect "
             "type, as in MVTec AD).")],
    json_out: Annotated[Path, typer.Option("--json", help="Where to write the metrics JSON.")],
    html_out: Annotated[Path | None, typer.Option(
        "--html", help="Also write a self-contained HTML report.")] = None,
    threshold: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="Override the threshold (normalised; the trained one is 0.5).")
    ] = None,
    allow_one_class: Annotated[bool, typer.Option(
        "--allow-one-class",
        help="Score a folder with normal/ or anomaly/ images only, e.g. known-good parts "
             "for the false-positive rate: AUROC is then null and the false-positive (or "
             "miss) rate is reported. Without it such a folder is refused, and so is one "
             "that refusals leave with one class (exit code 2).")] = False,
) -> None:
    """Score a labelled test folder and report AUROC, F1, precision, recall and speed.

    ms_per_image is the mean of decode plus detect, one image at a time, on one thread.

    A figure that cannot be computed is null in the JSON, and the output says why.

    Exit code 2, the JSON written all the same: no image scored, or refusals left a class empty.

    Example:

        linesight evaluate build/model resources/samples/test --json out.json --html out.html
    """
    from pipeline.detector.artifact import ArtifactError
    from pipeline.detector.evaluation import EvaluationError, test_root
    from pipeline.detector.evaluation import evaluate as run_evaluation
    from pipeline.detector.report import render_html

    if not (model_dir / "model.json").is_file():
        raise typer.BadParameter(f"{model_dir} is not a model directory (no model.json)",
                                 param_hint="MODEL_DIR")
    if not test_dir.is_dir():
        raise typer.BadParameter(f"{test_dir} is not a directory", param_hint="TEST_DIR")
    check_writable(json_out, "--json")
    if html_out is not None:
        check_writable(html_out, "--html")
    try:
        scored = test_root(test_dir)
    except EvaluationError as exc:
        raise typer.BadParameter(str(exc), param_hint="TEST_DIR") from None
    if scored != test_dir:
        console.print(f"scoring {scored}: the test split of the data set in {test_dir}",
                      markup=False)
    try:
        with progress_bar() as update:
            result = run_evaluation(model_dir, test_dir, threshold=threshold, progress=update,
                                    keep_heatmaps=html_out is not None,
                                    allow_one_class=allow_one_class)
    except (EvaluationError, ArtifactError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(code=2) from None
    document = result.to_json()
    for path, text in ((json_out, lambda: json.dumps(document, indent=2)),
                       (html_out, lambda: render_html(result))):
        if path is None:
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # a file name that is not UTF-8 (a zip made on Windows) reaches the report as
            # lone surrogates, which UTF-8 cannot write: each becomes a replacement mark
            path.write_text(text(), encoding="utf-8", errors="replace")
        except OSError as exc:
            err.print(f"[red]error:[/red] cannot write {path}: {exc}", highlight=False)
            raise typer.Exit(code=1) from None
    counts = result.confusion
    console.print(
        f"AUROC {_fmt(document['auroc'])}  F1 {_fmt(document['f1'])}  "
        f"precision {_fmt(document['precision'])}  recall {_fmt(document['recall'])}  "
        f"threshold {document['threshold']:.2f}  ({document['n_normal']} normal, "
        f"{document['n_anomaly']} anomalous; FP {counts.false_positive}, "
        f"FN {counts.false_negative})")
    rates = []
    if document["false_positive_rate"] is not None:
        rates.append(f"false positives: {counts.false_positive} of {document['n_normal']} "
                     f"normal ({document['false_positive_rate']:.1%})")
    if document["miss_rate"] is not None:
        rates.append(f"misses: {counts.false_negative} of {document['n_anomaly']} anomalous "
                     f"({document['miss_rate']:.1%})")
    if rates:
        console.print("; ".join(rates), markup=False)
    uncertainty = how_sure(document)
    if uncertainty:
        console.print(uncertainty, style="dim", markup=False, highlight=False)
    for gap in document["gaps"]:  # why a figure is missing
        console.print(gap, style="yellow", markup=False, highlight=False)
    console.print(f"{document['ms_per_image']:.1f} ms per image (decode + detect, one thread; "
                  f"{document['cpu_ms_per_image']:.1f} ms of CPU)")
    noted = Counter(note for image in result.images for note in image.notes)
    if noted:
        console.print("accepted with notes: " + ", ".join(
            f"{note} ({count})" for note, count in sorted(noted.items())), markup=False)
    if result.invalid:
        console.print(f"[yellow]{len(result.invalid)} image(s) refused as invalid, left out "
                      "of the figures:[/yellow]")
        for item in result.invalid[:SKIPPED_SHOWN]:
            console.print(f"  {result.shown(item['path'])}: {item['reason']} "
                          f"({item['message']})", markup=False)
        if len(result.invalid) > SKIPPED_SHOWN:
            console.print(f"  ... and {len(result.invalid) - SKIPPED_SHOWN} more "
                          f"(all in {json_out})")
    console.print(f"wrote {json_out}" + (f" and {html_out}" if html_out else ""))
    failure = result.failure()
    if failure:
        err.print(f"[red]error:[/red] {failure}", highlight=False)
        raise typer.Exit(code=2)


def how_sure(document: dict[str, Any]) -> str:
    """How far the figures of an evaluate document could move with other images of the
    same kind: the 95 % intervals of precision and recall (of the false-positive rate for
    known-good parts alone), and the AUROC's standard error, said as such: a 95 % range is
    about twice it either side ('' when none can be given).

    >>> said = how_sure({"auroc_standard_error": 0.0287, "n_anomaly": 20,
    ...                  "intervals": {"precision": [0.742, 0.99], "recall": [0.64, 0.948]}})
    >>> said.split("; ")[0]
    'on other images like these: precision 0.74-0.99, recall 0.64-0.95 (95 %)'
    >>> said.split("; ")[1]
    'AUROC ± 0.029 (one standard error)'
    >>> how_sure({"auroc_standard_error": None, "n_anomaly": 0,
    ...           "intervals": {"precision": [0.0, 0.79], "false_positive_rate": [0.01, 0.24]}})
    'on other images like these: false-positive rate 0.01-0.24 (95 %)'
    """
    from pipeline.detector.evaluation import Evaluation

    shown = ("precision", "recall") if document["n_anomaly"] else ("false_positive_rate",)
    parts = [f"{Evaluation.SHARE_LABELS[name]} {bounds[0]:.2f}-{bounds[1]:.2f}"
             for name, bounds in document["intervals"].items() if name in shown and bounds]
    text = ", ".join(parts) + (" (95 %)" if parts else "")
    if document["auroc_standard_error"] is not None:
        text += (("; " if text else "") + f"AUROC ± {document['auroc_standard_error']:.3f} "
                 "(one standard error)")
    return f"on other images like these: {text}" if text else ""


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
