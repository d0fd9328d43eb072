"""Training-speed benchmark (issue 5): images/s per model, 256-px full frames and 128-px crops.

    python benchmarks/bench_training.py [--data DIR] [--steps 30] [--warmup-steps 3] [--batch-size 8] [--quick]

For each model and view (full 256x256 frame, 128x128 crop) it runs the real
training input pipeline (``fracture.pipeline.make_train_dataset``: augmentation
included) into ``model.fit`` of a freshly built model compiled by
``train.compile_model``, and times ``--steps`` batches after ``--warmup-steps``
(tracing) batches. It also times the input pipeline alone, so a slow step can be
attributed. Only ``--limit`` fractured + ``--limit`` negative train images are
decoded (speed does not depend on which). Prints a table and the JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

log = logging.getLogger("bench_training")


def _dataset(arrays, crop: int, batch_size: int, n_batches: int):
    from fracture.pipeline import make_train_dataset

    ds = make_train_dataset(arrays, crop=crop, batch_size=batch_size, neg_per_epoch=len(arrays.ids),
                            focus_p=0.7, seed=1337, epoch=0)
    # drop_remainder-like behaviour: every timed batch is full.
    return ds.unbatch().repeat().batch(batch_size, drop_remainder=True).take(n_batches)


def bench_pipeline(arrays, crop: int, batch_size: int, steps: int) -> float:
    """Input pipeline alone: images/s."""
    it = iter(_dataset(arrays, crop, batch_size, steps + 2))
    next(it)
    next(it)
    t = time.perf_counter()
    for _ in range(steps):
        next(it)
    return batch_size * steps / (time.perf_counter() - t)


def bench_fit(name: str, arrays, crop: int, batch_size: int, warmup: int, steps: int) -> dict:
    import keras

    from create_segmentation_model import build_model
    from important_variables import CONFIG
    from train import compile_model

    keras.backend.clear_session()
    model = compile_model(build_model(name, input_shape=(None, None, CONFIG.input_channels)), 1e-3)
    times: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.t = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.t)

    t0 = time.perf_counter()
    model.fit(_dataset(arrays, crop, batch_size, warmup + steps), epochs=1, verbose=0, shuffle=False, callbacks=[Clock()])
    total = time.perf_counter() - t0
    timed = times[warmup:]
    return {
        "images_per_s": round(batch_size * len(timed) / sum(timed), 1),
        "ms_per_step_median": round(1000 * sorted(timed)[len(timed) // 2], 1),
        "steps_timed": len(timed),
        "first_steps_s": round(sum(times[:warmup]), 2),
        "wall_s": round(total, 1),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data")
    ap.add_argument("--models", nargs="+", default=["unet", "encoder_decoder"])
    ap.add_argument("--crops", nargs="+", type=int, default=[0, 128], help="0 = full 256-px frame")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup-steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--limit", type=int, default=48, help="fractured and negative train images decoded (each)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 5 steps, 2 warm-up, 16 images")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.quick:
        args.steps, args.warmup_steps, args.limit = 5, 2, 16

    from fracture.dataset import FracAtlas
    from fracture.pipeline import load_split_arrays
    from important_variables import is_fracatlas_dir, resolve_data_dir

    data_dir = resolve_data_dir(args.data)
    if not is_fracatlas_dir(data_dir):
        ap.error("FracAtlas not found: pass --data or set $FRACATLAS_DIR")
    arrays = load_split_arrays(FracAtlas(data_dir), "train", limit=args.limit)
    res = {"load_avg_start": [round(v, 2) for v in os.getloadavg()], "cpus": os.cpu_count(),
           "batch_size": args.batch_size, "images": len(arrays.ids), "results": []}
    for crop in args.crops:
        size = crop or 256
        pipe = bench_pipeline(arrays, crop, args.batch_size, args.steps)
        for name in args.models:
            log.info("%s at %d px ...", name, size)
            r = bench_fit(name, arrays, crop, args.batch_size, args.warmup_steps, args.steps)
            res["results"].append({"model": name, "view": "full frame" if not crop else "crop", "size": size,
                                   "pipeline_images_per_s": round(pipe, 1), **r})
    res["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    print(f"{'model':16s} {'view':11s} {'px':>4s} {'img/s':>7s} {'ms/step':>8s} {'pipeline img/s':>15s}")
    for r in res["results"]:
        print(f"{r['model']:16s} {r['view']:11s} {r['size']:4d} {r['images_per_s']:7.1f} {r['ms_per_step_median']:8.1f} "
              f"{r['pipeline_images_per_s']:15.1f}")
    print(f"load average: start {res['load_avg_start']}, end {res['load_avg_end']} ({res['cpus']} CPUs)")
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
