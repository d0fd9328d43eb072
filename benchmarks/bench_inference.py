"""Inference benchmark: naive path vs our forward pass vs our end-to-end path.

    python benchmarks/bench_inference.py [--data DIR] [--runs 20] [--cli-images 200] [--quick] [--json FILE]

Per model, on real FracAtlas test images, after warm-up, ``--runs`` timed runs each
(median and p95, milliseconds):

- (a) naive: ``model.predict`` on one preprocessed 256x256 image, then Python loops
  over the 256x256 probability pixels to find the region's box and score (what the
  original app did);
- (b) ours, forward only: ``Predictor.forward`` (compiled tf.function, fixed signature)
  on the same preprocessed image; ``--xla`` adds the XLA-compiled variant; for a model
  with batch norms, (b-) times the same forward with them not folded into the convs,
  alternating call by call with (b) so that both see the same machine load;
- (b32)/(b16): on a CPU with native bf16 instructions, the same forward in float32 and in bf16,
  alternating call by call (the model runs in the one its manifest check allows and that
  measures faster; the JSON's ``precision``);
- (c) ours, end-to-end: the bytes of a 1024-px JPEG (already in memory) → decode →
  result with findings at full resolution → overlay image.

Then ``predict.py`` on ``--cli-images`` test images in a fresh process: time from
process start to the first result, and images/s. Prints a table, then the JSON
(also written to ``--json``). Timings depend on machine load: the JSON records the
load average at start and end.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from important_variables import MODEL_NAMES  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

log = logging.getLogger("bench_inference")


def stats_ms(seconds: list[float]) -> dict:
    a = np.asarray(seconds) * 1000.0
    return {"median_ms": round(float(np.median(a)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2),
            "min_ms": round(float(a.min()), 2), "runs": int(a.size)}


def timed(fn, inputs: list, warmup: int, runs: int) -> dict:
    """Call ``fn(inputs[k % len])`` ``warmup`` times untimed, then ``runs`` times timed."""
    return timed_alternating([fn], inputs, warmup, runs)[0]


def timed_alternating(fns: list, inputs: list, warmup: int, runs: int) -> list[dict]:
    """:func:`timed` for several functions, called in turn on each input (a side-by-side comparison)."""
    for k in range(warmup):
        for fn in fns:
            fn(inputs[k % len(inputs)])
    times: list[list[float]] = [[] for _ in fns]
    for k in range(runs):
        x = inputs[k % len(inputs)]
        for fn, ts in zip(fns, times, strict=True):
            t = time.perf_counter()
            fn(x)
            ts.append(time.perf_counter() - t)
    return [stats_ms(ts) for ts in times]


def naive_region(prob: np.ndarray, threshold: float):
    """The original app's post-processing: Python loops over every pixel (box + max score)."""
    h, w = prob.shape
    x0, y0, x1, y1, best, count = w, h, -1, -1, 0.0, 0
    for y in range(h):
        for x in range(w):
            v = prob[y][x]
            if v >= threshold:
                count += 1
                x0, y0, x1, y1 = min(x0, x), min(y0, y), max(x1, x), max(y1, y)
                best = max(best, float(v))
    return (x0, y0, x1 + 1, y1 + 1, best, count) if count else None


def pick_images(data_dir: Path, n: int, n_big: int):
    """``n`` readable test-split images (fractured first) and ``n_big`` with a 1024-px longer side."""
    from PIL import Image

    from fracture.dataset import FracAtlas
    from imaging.image_io import ImageLoadError, read_image_file

    atlas = FracAtlas(data_dir)
    recs = atlas.records("test", fractured=True) + atlas.records("test", fractured=False)
    paths, big = [], []
    for r in recs:
        if len(paths) >= n and len(big) >= n_big:
            break
        with Image.open(r.path) as im:
            is_big = max(im.size) == 1024
        if len(paths) >= n and not (is_big and len(big) < n_big):
            continue
        try:
            read_image_file(r.path)
        except ImageLoadError:
            continue  # the release's truncated JPEGs
        if len(paths) < n:
            paths.append(r.path)
        if is_big and len(big) < n_big:
            big.append(r.path)
    return paths, big


def bench_model(name: str, paths: list[Path], big: list[Path], warmup: int, runs: int, xla: bool) -> dict:
    from create_segmentation_model import FoldedAway, cpu_bf16_flags, load_named_model
    from imaging.image_io import load_image, read_image_file
    from inference.manifest import model_entry, model_threshold
    from prediction import Predictor, analyse_image, predictor_for, preprocess

    threshold = model_threshold(name)
    model = load_named_model(name)
    # The shipped way to run it (native scale when the manifest says so), as the app and predict.py do.
    entry = model_entry(name)
    pred = predictor_for(model, name, entry)
    pixels = [read_image_file(p).pixels for p in paths[: max(runs, 8)]]
    # Forward timings on what the model really sees (the whole image at training scale when native).
    xs = [pred.model_input(px) for px in pixels]
    naive_xs = [preprocess(px)[None] for px in pixels]

    def naive(x):
        prob = model.predict(x, verbose=0)[0, :, :, 1]
        return naive_region(prob, threshold)

    out = {"threshold": threshold, "scale": "native" if pred.native else "fixed 256x256"}
    out["a_naive"] = timed(naive, naive_xs, warmup, runs)
    if not any(isinstance(layer, FoldedAway) for layer in pred.model.layers):
        out["b_forward"] = timed(pred.forward, xs, warmup, runs)  # no batch norm folded in this model
    else:
        unfolded = predictor_for(model, name, entry, fold=False)
        out["b_forward"], out["b_forward_unfolded"] = timed_alternating([pred.forward, unfolded.forward], xs, warmup, runs)
    if xla:
        out["b_forward_xla"] = timed(Predictor(pred.model, name, jit_compile=True).forward, xs, warmup, runs)
    out["precision"] = pred.precision
    if cpu_bf16_flags():
        # Native bf16: both precisions side by side, whichever the manifest's check lets the model run.
        # An ensemble's check may allow bf16 in some members only: the bf16 side runs those.
        members = ((entry.get("bf16_inference") or {}).get("members") if entry is not None else None) or None
        fp32 = pred if pred.precision == "float32" else predictor_for(model, name, entry, precision="float32")
        bf16 = pred if pred.precision != "float32" else predictor_for(model, name, entry, precision="mixed_bfloat16",
                                                                       bf16_members=members)
        out["b_forward_float32"], out["b_forward_bf16"] = timed_alternating([fp32.forward, bf16.forward], xs, warmup, runs)
        out["bf16_precision"] = bf16.precision
    blobs = [(p.name, p.read_bytes()) for p in big[: max(runs, 8)]]

    def end_to_end(item):
        fname, data = item
        return analyse_image(pred, load_image(data, fname).pixels, threshold)

    out["c_end_to_end_1024px_jpeg"] = timed(end_to_end, blobs, warmup, runs)
    out["c_images"] = sorted({n for n, _ in blobs})
    out["ratio_a_over_b"] = round(out["a_naive"]["median_ms"] / out["b_forward"]["median_ms"], 2)
    out["ratio_a_over_c"] = round(out["a_naive"]["median_ms"] / out["c_end_to_end_1024px_jpeg"]["median_ms"], 2)
    return out


def bench_cli(name: str, paths: list[Path], batch_size: int) -> dict:
    """predict.py in a fresh process on ``paths``: start → first result, and images/s."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(ROOT / "predict.py"), *map(str, paths), "--model", name, "--out", f"{tmp}/png",
               "--json", f"{tmp}/r.json", "--no-progress", "--timing", "--batch-size", str(batch_size)]
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        t_end = time.time()
    marks = next((json.loads(line[7:]) for line in proc.stderr.splitlines() if line.startswith("TIMING ")), None)
    if marks is None or proc.returncode not in (0, 1):
        raise RuntimeError(f"predict.py failed (exit {proc.returncode}): {proc.stderr[-1500:]}")
    n = marks["n_files"]
    first = marks["first_result_unix"] - t0
    steady = marks["end_unix"] - marks["first_result_unix"]
    return {
        "images": n,
        "failed": marks["n_failed"],
        "batch_size": batch_size,
        "start_to_first_result_s": round(first, 2),
        "model_load_s": marks["model_load_s"],
        "wall_s": round(t_end - t0, 2),
        "images_per_s_overall": round(n / (t_end - t0), 2),
        "images_per_s_after_first": round((n - 1) / steady, 2) if steady > 0 else None,
    }


def table(res: dict) -> str:
    lines = [f"{'model':16s} {'path':34s} {'median ms':>10s} {'p95 ms':>9s}"]
    for name, m in res["models"].items():
        for key, label in (("a_naive", "(a) naive predict + pixel loops"), ("b_forward", "(b) forward (tf.function)"),
                           ("b_forward_unfolded", "(b-) forward, batch norms unfolded"),
                           ("b_forward_xla", "(b') forward (XLA)"), ("b_forward_float32", "(b32) forward in float32"),
                           ("b_forward_bf16", "(b16) forward in bf16"), ("c_end_to_end_1024px_jpeg", "(c) 1024-px JPEG end-to-end")):
            if key in m:
                lines.append(f"{name:16s} {label:34s} {m[key]['median_ms']:10.1f} {m[key]['p95_ms']:9.1f}")
        lines.append(f"{name:16s} {'ratio (a)/(b), (a)/(c)':34s} {m['ratio_a_over_b']:10.2f} {m['ratio_a_over_c']:9.2f}")
        if name in res.get("cli", {}):
            c = res["cli"][name]
            lines.append(f"{name:16s} predict.py {c['images']} images: first result after {c['start_to_first_result_s']} s, "
                         f"{c['images_per_s_overall']} img/s overall, {c['images_per_s_after_first']} img/s after the first")
    lines.append(f"load average: start {res['load_avg_start']}, end {res['load_avg_end']} ({res['cpus']} CPUs)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="FracAtlas folder (default: $FRACATLAS_DIR, then the usual places)")
    ap.add_argument("--models", nargs="+", default=list(MODEL_NAMES))
    ap.add_argument("--runs", type=int, default=30, help="timed runs per measurement (>= 20 for the report)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--cli-images", type=int, default=200, help="predict.py run on this many test images (0: not run)")
    ap.add_argument("--batch-size", type=int, default=8, help="predict.py --batch-size")
    ap.add_argument("--xla", action="store_true", help="also time the XLA-compiled forward pass")
    ap.add_argument("--quick", action="store_true", help="smoke run: 5 runs, 2 warm-up, 16 CLI images")
    ap.add_argument("--json", help="also write the JSON here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.quick:
        args.runs, args.warmup, args.cli_images = 5, 2, 16

    from important_variables import is_fracatlas_dir, resolve_data_dir

    data_dir = resolve_data_dir(args.data)
    if not is_fracatlas_dir(data_dir):
        ap.error("FracAtlas not found: pass --data or set $FRACATLAS_DIR")
    import tensorflow as tf

    res = {"load_avg_start": [round(v, 2) for v in os.getloadavg()], "cpus": os.cpu_count(),
           "machine": platform.processor() or platform.machine(), "tensorflow": tf.__version__,
           "runs": args.runs, "warmup": args.warmup, "models": {}, "cli": {}}
    paths, big = pick_images(data_dir, max(args.cli_images, args.runs), max(args.runs, 8))
    log.info("%d test images (%d with a 1024-px side)", len(paths), len(big))
    for name in args.models:
        log.info("timing %s ...", name)
        res["models"][name] = bench_model(name, paths, big, args.warmup, args.runs, args.xla)
    for name in args.models if args.cli_images > 0 else ():
        log.info("predict.py %s on %d images ...", name, args.cli_images)
        res["cli"][name] = bench_cli(name, paths[: args.cli_images], args.batch_size)
    res["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    print(table(res))
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
