"""Generate the synthetic sample images: machined discs with holes, normal and defective.

    python -m scripts.make_samples [--out resources/samples] [--force]

Deterministic (numpy + Pillow, fixed seed): the same command writes the same bytes. Each
image is a grey steel disc with a centre bore and six bolt holes on a slightly varying
background, shifted and rotated a little (pose jitter). Defective parts carry one of:
a scratch, a missing hole, a blob (stain or burr) or a crack. Layout:
`{train,test}/{normal,anomaly}/*.jpg`. Skips an existing set unless `--force`.
"""

from __future__ import annotations

import argparse
import math
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "resources" / "samples"
DEFECTS = ("scratch", "missing_hole", "blob", "crack")
SEED = 7
SIZE = 256
COUNTS = {("train", "normal"): 30, ("train", "anomaly"): 10,
          ("test", "normal"): 12, ("test", "anomaly"): 12}


def make_part(rng: np.random.Generator, defect: str | None = None,
              size: int = SIZE) -> Image.Image:
    """One part photo; `defect` is None or one of `DEFECTS`."""
    scale = 2  # draw large, then downsample: smooth edges
    big = size * scale
    ramp = np.linspace(0.0, 1.0, big, dtype=np.float32)
    tint = rng.uniform(-8, 8, 3).astype(np.float32)
    background = (70 + 25 * ramp[None, :, None] + 15 * ramp[:, None, None]) + tint
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)

    cx = big / 2 + rng.normal(0, 1.2) * scale
    cy = big / 2 + rng.normal(0, 1.2) * scale
    angle = rng.normal(0, 2.0) * math.pi / 180
    radius = 0.36 * big
    steel = int(rng.uniform(170, 182))
    draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=(steel,) * 3,
                 outline=(120, 120, 125), width=3 * scale)
    draw.ellipse([cx - 0.8 * radius, cy - 0.8 * radius, cx + 0.8 * radius,
                  cy + 0.8 * radius], outline=(150, 150, 155), width=scale)
    holes = [(cx + 0.6 * radius * math.cos(angle + k * math.pi / 3),
              cy + 0.6 * radius * math.sin(angle + k * math.pi / 3)) for k in range(6)]
    missing = int(rng.integers(0, 6)) if defect == "missing_hole" else -1
    hole = 0.09 * radius
    for k, (hx, hy) in enumerate(holes):
        if k != missing:
            draw.ellipse([hx - hole, hy - hole, hx + hole, hy + hole], fill=(35, 35, 40))
    bore = 0.22 * radius
    draw.ellipse([cx - bore, cy - bore, cx + bore, cy + bore], fill=(30, 30, 34))

    if defect == "scratch":
        theta = rng.uniform(0, math.pi)
        r0 = rng.uniform(0.3, 0.55) * radius
        length = rng.uniform(0.35, 0.5) * radius
        sx, sy = cx + r0 * math.cos(theta + 1.0), cy + r0 * math.sin(theta + 1.0)
        draw.line([(sx, sy), (sx + length * math.cos(theta), sy + length * math.sin(theta))],
                  fill=(70, 70, 75), width=2 * scale)
    elif defect == "blob":
        theta, r0 = rng.uniform(0, 2 * math.pi), rng.uniform(0.35, 0.7) * radius
        bx, by = cx + r0 * math.cos(theta), cy + r0 * math.sin(theta)
        rx, ry = rng.uniform(0.07, 0.12, 2) * radius
        draw.ellipse([bx - rx, by - ry, bx + rx, by + ry], fill=(120, 85, 50))
    elif defect == "crack":
        theta = rng.uniform(0, 2 * math.pi)
        points = [(cx + radius * math.cos(theta), cy + radius * math.sin(theta))]
        for _ in range(6):
            px, py = points[-1]
            heading = theta + math.pi + rng.normal(0, 0.5)
            step = 0.08 * radius
            points.append((px + step * math.cos(heading), py + step * math.sin(heading)))
        draw.line(points, fill=(45, 45, 50), width=int(1.5 * scale))

    noise = rng.normal(0, 3.0, (size, size, 3))
    small = image.resize((size, size), Image.Resampling.BOX).filter(ImageFilter.SMOOTH)
    pixels = np.asarray(small, np.float32) * rng.uniform(0.96, 1.04) + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def generate(out: Path = DEFAULT_OUT, *, counts: dict[tuple[str, str], int] | None = None,
             seed: int = SEED, size: int = SIZE, force: bool = False) -> int:
    """Write the sample set under `out`; returns how many images were written (0 if the set
    was already there and `force` is False)."""
    counts = COUNTS if counts is None else counts
    if out.is_dir() and any(out.rglob("*.jpg")) and not force:
        return 0
    if force and out.is_dir():
        for split, _ in counts:
            shutil.rmtree(out / split, ignore_errors=True)
    written = 0
    for (split, label), count in counts.items():
        folder = out / split / label
        folder.mkdir(parents=True, exist_ok=True)
        # One generator per (split, label): changing one count leaves the others' images.
        split_seed = [seed, ["train", "test"].index(split), ["normal", "anomaly"].index(label)]
        rng = np.random.default_rng(split_seed)
        for index in range(count):
            defect = DEFECTS[index % len(DEFECTS)] if label == "anomaly" else None
            name = f"{label}-{index + 1:03d}" + (f"-{defect}" if defect else "") + ".jpg"
            make_part(rng, defect, size).save(folder / name, "JPEG", quality=88)
            written += 1
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--force", action="store_true", help="regenerate an existing set")
    args = parser.parse_args(argv)
    written = generate(args.out, force=args.force)
    if written:
        total = sum(path.stat().st_size for path in args.out.rglob("*.jpg"))
        print(f"wrote {written} images to {args.out} ({total / 1024:.0f} KB)")
    else:
        print(f"{args.out} already has samples; use --force to regenerate")


if __name__ == "__main__":
    main()
