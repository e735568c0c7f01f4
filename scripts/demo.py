"""`make demo`: the whole pipeline on this machine, end to end, then show what happened.

1. make the sample images if missing, 2. train the embedded detector if needed,
3. start the local stack, 4. upload through the API with scripts/uploadImages.py over
2 lines x 2 cameras (plus two unusable files, to show how they are recorded),
5. wait for every result, lake row and alert, 6. print a per-line/camera table,
7. write out/demo/summary.json and the HTML report. Exit non-zero unless
uploaded = results = lake rows.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from scripts.local_stack import REPO, LocalStack, Topology
from scripts.observe import (
    AlertTap,
    all_records,
    lake_rows,
    summarize,
    wait_for_alerts,
    wait_until,
)
from scripts.uploadImages import EXTENSIONS

console = Console(width=None if Console().is_terminal else 110)
UPLOADER = REPO / "scripts" / "uploadImages.py"


def ensure_samples(samples: Path) -> None:
    if (samples / "train" / "normal").is_dir() and (samples / "test").is_dir():
        return
    console.print(f"making sample images in {samples} ...")
    subprocess.run([sys.executable, "-m", "scripts.make_samples", "--out", str(samples)],
                   check=True, cwd=REPO)


def ensure_model(samples: Path, model: Path) -> None:
    if (model / "model.json").exists():
        console.print(f"using the trained model in {model}")
        return
    from pipeline.detector.training import train_model
    from scripts.cli_detector import progress_bar

    console.print(f"training the embedded detector on {samples / 'train'} ...")
    with progress_bar() as progress:
        report = train_model(samples, model, progress=progress)
    auroc = "-" if report.cv_auroc is None else f"{report.cv_auroc:.3f}"
    console.print(f"trained {report.method} (cross-validated AUROC {auroc}; "
                  f"{report.n_normal} normal, {report.n_anomaly} anomalous images): model "
                  f"{report.model_version} in {report.train_seconds:.0f} s")


def demo_images(samples: Path) -> list[Path]:
    """The test images the demo uploads: samples/test/normal and /anomaly, JPEG or PNG."""
    images = sorted(p for folder in ("normal", "anomaly")
                    for p in (samples / "test" / folder).glob("*")
                    if p.is_file() and p.suffix.lower() in EXTENSIONS)
    if not images:
        raise FileNotFoundError(f"no .jpg, .jpeg or .png images in {samples / 'test'}/normal "
                                "or /anomaly")
    return images


def plan_uploads(samples: Path, out: Path, topology: Topology) -> dict[tuple[str, str], Path]:
    """Spread the test images over every line and camera, one folder per camera; add a
    text file named .jpg and a truncated JPEG to the last camera."""
    images = demo_images(samples)
    cameras = [(line, camera) for line, cams in topology.lines.items() for camera in cams]
    folders: dict[tuple[str, str], Path] = {}
    root = out / "uploads"
    shutil.rmtree(root, ignore_errors=True)
    for index, image in enumerate(images):
        line, camera = cameras[index % len(cameras)]
        folder = folders.setdefault((line, camera), root / line / camera)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, folder / f"{image.parent.name}-{image.name}")
    # fewer images than cameras: the last camera's folder holds only the unusable files
    bad = folders.setdefault(cameras[-1], root / cameras[-1][0] / cameras[-1][1])
    bad.mkdir(parents=True, exist_ok=True)
    (bad / "not-an-image.jpg").write_text("<html>this is not a photo</html>\n")
    (bad / f"truncated{images[0].suffix.lower()}").write_bytes(images[0].read_bytes()[:600])
    return folders


def upload_all(folders: dict[tuple[str, str], Path], api_url: str, camera_tokens: dict[str, str],
               out: Path) -> list[dict[str, Any]]:
    def run(item: tuple[tuple[str, str], Path]) -> list[dict[str, Any]]:
        (line, camera), folder = item
        manifest = out / "uploads" / f"{line}-{camera}.json"
        # The seed's positional arguments: DIRECTORY CAMERA_ID ASSEMBLY_LINE_ID
        # API_ENDPOINT AUTH_TOKEN TIME_BETWEEN_REQUESTS
        subprocess.run([sys.executable, str(UPLOADER), str(folder), camera, line,
                        f"{api_url}/getsignedurl", camera_tokens[f"{line}/{camera}"], "0",
                        "--concurrency", "4", "--manifest-out", str(manifest)],
                       check=False, cwd=REPO)
        return json.loads(manifest.read_text()) if manifest.exists() else []

    with ThreadPoolExecutor(max_workers=len(folders)) as pool:
        return [upload for batch in pool.map(run, folders.items()) for upload in batch]


def run_demo(out: Path, samples: Path, model: Path, timeout: float = 180.0,
             write_state: bool = True) -> int:
    started = time.monotonic()
    # Absolute paths: the uploader runs as a subprocess in the repository folder.
    out, samples, model = out.resolve(), samples.resolve(), model.resolve()
    out.mkdir(parents=True, exist_ok=True)
    ensure_samples(samples)
    demo_images(samples)  # before training and the stack: a clear error, not a KeyError
    ensure_model(samples, model)
    topology = Topology()
    with LocalStack(model, topology, write_state=write_state, quiet=True) as stack:
        info = stack.info
        assert info is not None
        console.print(f"local stack up: API {info.api_url}, AWS emulator {info.aws_endpoint_url}")
        folders = plan_uploads(samples, out, topology)
        # what the uploaders were given, so that one that died without a word still counts
        planned = sum(1 for folder in folders.values() for path in folder.iterdir()
                      if path.is_file())
        uploads = upload_all(folders, info.api_url, info.camera_tokens, out)
        uploaded = [u for u in uploads if u["ok"]]
        expected = {u["image_id"] for u in uploaded}
        ddb, s3 = stack.client("dynamodb"), stack.client("s3")
        tap = AlertTap(stack.client("sqs"), info.alerts_queue_url)
        console.print(f"uploaded {len(uploaded)} of {planned} files; waiting for results ...")

        def settled() -> bool:
            records = {r.image_id for r in all_records(ddb, info.table)}
            return expected <= records and len(lake_rows(s3, info.results_bucket)) >= len(records)

        finished = wait_until(settled, timeout)
        records = [r for r in all_records(ddb, info.table) if r.image_id in expected]
        rows = [r for r in lake_rows(s3, info.results_bucket) if r["ImageId"] in expected]
        # Every record whose alert decision said "send" must show up on the topic, once.
        wanted = sum(1 for r in records if r.alert_reason)
        alerts = wait_for_alerts(tap, stack.client("stepfunctions"), info.state_machine_arn,
                                 wanted)
        report_path = write_report(stack, out)
    table = summarize(records, rows, alerts)
    show(table)
    show_accuracy(uploaded, records)
    summary = {
        "planned": planned,
        "uploaded": len(uploaded),
        "results": len(records),
        "lake_rows": len(rows),
        "alerts": len(alerts),
        "alerts_due": wanted,
        "anomalous": sum(r.is_anomalous for r in records),
        "invalid": sum(r.status == "INVALID" for r in records),
        "report": str(report_path),
        "seconds": round(time.monotonic() - started, 1),
        "per_camera": {f"{line}/{camera}": counts for (line, camera), counts in table.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    ok = finished and went_through(summary)
    console.print(f"summary: {out / 'summary.json'}")
    console.print(f"report:  {report_path}")
    if ok:
        console.print(f"[green]all {len(uploaded)} uploads went through every stage[/green]")
        return 0
    console.print(f"[red]incomplete:[/red] uploaded {summary['uploaded']} of {planned}, results "
                  f"{summary['results']}, lake rows {summary['lake_rows']}, alerts "
                  f"{summary['alerts']} of {summary['alerts_due']} due")
    return 1


def went_through(summary: dict[str, Any]) -> bool:
    """Whether every file planned was uploaded, judged, written to the lake and alerted on
    as due. Planned, not reported by the uploaders: one that died without a manifest
    takes its camera's files out of every other count."""
    return (summary["planned"] == summary["uploaded"] == summary["results"]
            == summary["lake_rows"] and summary["alerts"] == summary["alerts_due"])


def write_report(stack: LocalStack, out: Path) -> Path:
    from scripts.cli_results import build_report_from_stack

    return build_report_from_stack(stack, out / "report.html")


def show_accuracy(uploaded: list[dict[str, Any]], records: list[Any]) -> None:
    """Compare verdicts with what the sample files are (their folder is in the name)."""
    verdicts = {r.image_id: r for r in records}
    counts = {"caught": 0, "missed": 0, "false_alarms": 0, "normal_ok": 0}
    for upload in uploaded:
        record = verdicts.get(upload["image_id"])
        name = Path(upload["file"]).name
        if record is None or record.status != "OK":
            continue
        if name.startswith("anomaly-"):
            counts["caught" if record.is_anomalous else "missed"] += 1
        elif name.startswith("normal-"):
            counts["false_alarms" if record.is_anomalous else "normal_ok"] += 1
    console.print(
        f"detector vs the samples' labels: {counts['caught']} of "
        f"{counts['caught'] + counts['missed']} defective parts caught, "
        f"{counts['false_alarms']} false alarm{'' if counts['false_alarms'] == 1 else 's'} on "
        f"{counts['false_alarms'] + counts['normal_ok']} good parts")


def show(table: dict[tuple[str, str], dict[str, int]]) -> None:
    view = Table(title="LineSight demo: what happened, per line and camera")
    for column in ("line", "camera", "processed", "anomalous", "low conf.", "invalid",
                   "alerts sent", "lake rows"):
        view.add_column(column, justify="left" if column in ("line", "camera") else "right")
    totals = dict.fromkeys(("processed", "anomalous", "low_confidence", "invalid", "alerts",
                            "lake_rows"), 0)
    for (line, camera), counts in table.items():
        view.add_row(line, camera, *(str(counts[k]) for k in totals))
        for key in totals:
            totals[key] += counts[key]
    view.add_row("[b]all[/b]", "", *(f"[b]{totals[k]}[/b]" for k in totals))
    console.print(view)
