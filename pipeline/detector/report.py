"""The self-contained HTML evaluation report: ROC and PR curves (inline SVG), the confusion
matrix, score strips, and a gallery of false positives and false negatives with their
heatmap overlays (PNG data URIs). No scripts, fonts or anything fetched over the network.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.detector.evaluation import Evaluation, ScoredImage
from pipeline.detector.metrics import listed, pr_curve, roc_curve

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:2em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.4em .8em;text-align:right}
.charts{display:flex;gap:2em;flex-wrap:wrap}.gallery{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0;width:260px;font-size:.8em}figure img{width:256px;border:1px solid #999}
.muted{color:#666}
"""


def _how_chosen(model_dir: str) -> str:
    """How training chose the method and the threshold (from the model's model.json)."""
    try:
        training = json.loads((Path(model_dir) / "model.json").read_text()).get("training", {})
    except (OSError, ValueError):
        return ""
    rules = [("Method", training.get("selection_rule")),
             ("Threshold", training.get("threshold_rule")),
             ("Cross-validation", _cross_validation(training))]
    items = "".join(f"<li><b>{name}:</b> {html.escape(str(rule))}</li>"
                    for name, rule in rules if rule)
    return f"<h2>How the model was chosen</h2><ul>{items}</ul>" if items else ""


def _cross_validation(training: dict[str, Any]) -> str:
    """
    >>> _cross_validation({"cv_auroc": 0.99, "cv_auroc_other_assignments": [0.95, 0.97]})
    'out-of-fold AUROC 0.990 on the fold assignment training went by; 0.950, 0.970 on 2 others'
    """
    if training.get("cv_auroc") is None:
        return ""
    text = f"out-of-fold AUROC {training['cv_auroc']:.3f} on the fold assignment training went by"
    others = training.get("cv_auroc_other_assignments") or []
    if others:
        text += f"; {listed(others)} on {len(others)} others"
    return text


def render_html(evaluation: Evaluation) -> str:
    """The report as one HTML string."""
    normal, anomalous = evaluation.scores("normal"), evaluation.scores("anomaly")
    counts = evaluation.confusion
    fpr, tpr = roc_curve(normal, anomalous)
    recall, precision = pr_curve(normal, anomalous)
    false_positives = [i for i in evaluation.images if i.label == "normal" and i.is_anomalous]
    false_negatives = [i for i in evaluation.images
                       if i.label == "anomaly" and not i.is_anomalous]
    title = f"LineSight evaluation: {html.escape(Path(evaluation.test_dir).name)}"
    summary = (
        f"{_summary_table(evaluation, len(normal), len(anomalous))}"
        "<p class='muted'>The second row: where each figure could lie on other images of "
        "the same kind: the shares' 95 % intervals by Wilson; under the AUROC, its standard "
        "error by Hanley and McNeil (a 95 % range is about twice that either side).</p>")
    gaps = "".join(f"<li>{html.escape(gap)}</li>" for gap in evaluation.gaps())
    curves = ([_line_chart("ROC", fpr, tpr, "false-positive rate", "true-positive rate", True),
               _line_chart("Precision-recall", recall, precision, "recall", "precision", False)]
              if normal and anomalous else [])
    matrix = (
        "<table><tr><th></th><th>called normal</th><th>called anomalous</th></tr>"
        f"<tr><th>normal</th><td>{counts.true_negative}</td>"
        f"<td>{counts.false_positive}</td></tr>"
        f"<tr><th>anomaly</th><td>{counts.false_negative}</td>"
        f"<td>{counts.true_positive}</td></tr></table>")
    invalid = "".join(f"<li>{html.escape(evaluation.shown(item['path']))}: "
                      f"{html.escape(item['reason'])}</li>" for item in evaluation.invalid)
    return "\n".join([
        "<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{title}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{title}</h1>",
        f"<p class='muted'>model {html.escape(evaluation.model_version)} "
        f"({html.escape(evaluation.method)}) from {html.escape(evaluation.model_dir)}; "
        f"test images from {html.escape(evaluation.test_dir)}</p>",
        summary,
        f"<ul class='muted'>{gaps}</ul>" if gaps else "",
        _how_chosen(evaluation.model_dir),
        "<h2>Curves</h2><div class='charts'>",
        *curves,
        _strip_chart(normal, anomalous, evaluation.threshold),
        "</div>",
        "<h2>Confusion matrix</h2>", matrix,
        f"<h2>False positives ({len(false_positives)})</h2>",
        _gallery(false_positives, evaluation),
        f"<h2>False negatives ({len(false_negatives)})</h2>",
        _gallery(false_negatives, evaluation),
        f"<h2>Refused as invalid ({len(evaluation.invalid)})</h2><ul>{invalid}</ul>"
        if evaluation.invalid else "",
        "</body></html>",
    ])


def _summary_table(evaluation: Evaluation, normal: int, anomalous: int) -> str:
    """The figures, and under those the threshold's shares are figures of, where they
    could lie (`Evaluation.intervals`; the AUROC's standard error under the AUROC)."""
    bounds = evaluation.intervals
    error = evaluation.auroc_standard_error

    def share(name: str, value: float | None) -> tuple[str, str, str]:
        found = bounds[name]
        below = "" if found is None else f"{found[0]:.2f}&ndash;{found[1]:.2f}"
        return Evaluation.SHARE_LABELS[name], _figure(value), below

    columns = [
        ("AUROC", _figure(evaluation.auroc),
         "" if error is None else f"&plusmn;&nbsp;{error:.3f}&nbsp;(SE)"),
        ("F1", _figure(evaluation.f1), ""),
        share("precision", evaluation.precision),
        share("recall", evaluation.recall),
        ("threshold", f"{evaluation.threshold:.3f}", ""),
        ("normal", str(normal), ""),
        ("anomaly", str(anomalous), ""),
        share("false_positive_rate", evaluation.false_positive_rate),
        share("miss_rate", evaluation.miss_rate),
        ("ms / image", f"{evaluation.ms_per_image:.1f}", ""),
    ]
    header, figures, below = ("".join(f"<{tag}>{column[i]}</{tag}>" for column in columns)
                              for i, tag in ((0, "th"), (1, "td"), (2, "td")))
    return (f"<table><tr>{header}</tr><tr>{figures}</tr>"
            f"<tr class='muted'>{below}</tr></table>")


def _figure(value: float | None) -> str:
    """A figure in the summary table; one that could not be computed is a dash.

    >>> _figure(0.96875), _figure(None)
    ('0.969', '&ndash;')
    """
    return "&ndash;" if value is None else f"{value:.3f}"


def _line_chart(title: str, xs: Sequence[float], ys: Sequence[float], x_label: str,
                y_label: str, diagonal: bool, size: int = 280) -> str:
    pad = 40
    inner = size - 2 * pad

    def point(x: float, y: float) -> str:
        return f"{pad + x * inner:.1f},{size - pad - y * inner:.1f}"

    path = " ".join(point(x, y) for x, y in zip(xs, ys, strict=True))
    extra = (f"<line x1='{pad}' y1='{size - pad}' x2='{size - pad}' y2='{pad}' "
             "stroke='#bbb' stroke-dasharray='4'/>" if diagonal else "")
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{size}' height='{size}' "
        f"role='img' aria-label='{title}'>"
        f"<text x='{size / 2}' y='18' text-anchor='middle' font-size='14'>{title}</text>"
        f"<rect x='{pad}' y='{pad}' width='{inner}' height='{inner}' fill='none' "
        "stroke='#888'/>" + extra +
        f"<polyline points='{path}' fill='none' stroke='#c0392b' stroke-width='2'/>"
        f"<text x='{size / 2}' y='{size - 8}' text-anchor='middle' font-size='11'>"
        f"{x_label}</text>"
        f"<text x='12' y='{size / 2}' font-size='11' text-anchor='middle' "
        f"transform='rotate(-90 12 {size / 2})'>{y_label}</text>"
        f"<text x='{pad}' y='{size - pad + 14}' font-size='10'>0</text>"
        f"<text x='{size - pad}' y='{size - pad + 14}' font-size='10'>1</text></svg>")


def _strip_chart(normal: Sequence[float], anomalous: Sequence[float], threshold: float,
                 width: int = 420, height: int = 280) -> str:
    pad = 40
    inner = width - 2 * pad

    def x(score: float) -> float:
        return pad + score * inner

    dots = [f"<circle cx='{x(s):.1f}' cy='{110 + (i % 7) * 6}' r='4' fill='#2e86c1' "
            "fill-opacity='.7'/>" for i, s in enumerate(normal)]
    dots += [f"<circle cx='{x(s):.1f}' cy='{190 + (i % 7) * 6}' r='4' fill='#c0392b' "
             "fill-opacity='.7'/>" for i, s in enumerate(anomalous)]
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        "role='img' aria-label='scores'>"
        f"<text x='{width / 2}' y='18' text-anchor='middle' font-size='14'>"
        "Normalised scores</text>"
        f"<line x1='{x(threshold):.1f}' y1='70' x2='{x(threshold):.1f}' y2='240' "
        "stroke='#555' stroke-dasharray='4'/>"
        f"<text x='{x(threshold):.1f}' y='64' text-anchor='middle' font-size='10'>"
        f"threshold {threshold:.2f}</text>"
        "<text x='4' y='125' font-size='11'>normal</text>"
        "<text x='4' y='205' font-size='11'>anomaly</text>"
        f"<line x1='{pad}' y1='250' x2='{width - pad}' y2='250' stroke='#888'/>"
        f"<text x='{pad}' y='266' font-size='10'>0</text>"
        f"<text x='{width - pad}' y='266' font-size='10'>1</text>"
        + "".join(dots) + "</svg>")


def _gallery(images: Sequence[ScoredImage], evaluation: Evaluation) -> str:
    if not images:
        return "<p class='muted'>none</p>"
    figures = []
    for image in sorted(images, key=lambda item: item.score):
        source = ("data:image/png;base64," + base64.b64encode(image.heatmap_png).decode()
                  if image.heatmap_png else "")
        figures.append(
            f"<figure><img src='{source}' alt='heatmap of {html.escape(image.path)}'>"
            f"<figcaption>{html.escape(evaluation.shown(image.path))}<br>"
            f"score {image.score:.3f}, "
            f"confidence {image.confidence:.2f}, area {image.anomaly_area:.1f}%"
            "</figcaption></figure>")
    return "<div class='gallery'>" + "".join(figures) + "</div>"
