"""Training-speed benchmark: images/s per model and precision on the native-scale 256-px crops.

    python benchmarks/bench_training.py [--data DIR] [--steps 30] [--warmup-steps 3] [--batch-size 8]
                                        [--precisions float32 mixed_bfloat16] [--quick]

For each model and Keras dtype policy it runs the real training input pipeline
(``fracture.native.crop_batches``: 50/50 sampler, augmentation included) into
``model.fit`` of a freshly built model with the training loss, and times ``--steps``
batches after ``--warmup-steps`` (tracing) batches. It also times the input pipeline
alone (one thread; the trainer draws batches on every core), so a slow step can be attributed. ``mixed_bfloat16`` is measured only where the
CPU has native bf16 instructions (``amx_bf16`` or ``avx512_bf16``), unless ``--force-bf16``: elsewhere bf16
is emulated, and the trainer never picks it. The allocator matters on CPU: run it once plain and once with
``LD_PRELOAD=libtcmalloc_minimal.so.4`` to compare (the JSON records ``LD_PRELOAD``). Only ``--limit`` fractured + ``--limit`` negative train images
are decoded (speed does not depend on which). Prints a table and the JSON.
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

from important_variables import ARCHITECTURES, TRAINED_MODELS  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

log = logging.getLogger("bench_training")


def _batches(split, batch_size: int):
    from fracture.native import crop_batches

    return crop_batches(split, batch_size, seed=1337, start=0)


def bench_pipeline(split, batch_size: int, steps: int) -> float:
    """Input pipeline alone, one thread: images/s."""
    data = _batches(split, batch_size)
    data[0]
    t = time.perf_counter()
    for i in range(steps):
        data[i + 1]
    return batch_size * steps / (time.perf_counter() - t)


def bench_fit(name: str, split, precision: str, batch_size: int, warmup: int, steps: int) -> dict:
    import keras

    import utils
    from create_segmentation_model import build_model
    from important_variables import CONFIG

    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(precision)
    model = build_model(name, input_shape=(None, None, CONFIG.input_channels))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=utils.ce_dice_fractured_loss)
    times: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.t = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.t)

    t0 = time.perf_counter()
    model.fit(_batches(split, batch_size), epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[Clock()])
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
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", help="FracAtlas directory (default: $FRACATLAS_DIR, then the usual places)")
    ap.add_argument("--models", nargs="+", choices=ARCHITECTURES, default=list(TRAINED_MODELS), help="models to time")
    ap.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"], help="Keras dtype policies to time")
    ap.add_argument("--force-bf16", action="store_true", help="time mixed_bfloat16 even without AMX (emulated)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps")
    ap.add_argument("--warmup-steps", type=int, default=3, help="untimed first steps (tracing)")
    ap.add_argument("--batch-size", type=int, default=8, help="crops per step")
    ap.add_argument("--limit", type=int, default=48, help="fractured and negative train images decoded (each)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 5 steps, 2 warm-up, 16 images")
    ap.add_argument("--json", help="also write the JSON here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.quick:
        args.steps, args.warmup_steps, args.limit = 5, 2, 16

    from create_segmentation_model import cpu_bf16_flags
    from fracture.dataset import FracAtlas
    from fracture.native import load_native_split
    from important_variables import is_fracatlas_dir, resolve_data_dir

    data_dir = resolve_data_dir(args.data)
    if not is_fracatlas_dir(data_dir):
        ap.error("FracAtlas not found: pass --data or set $FRACATLAS_DIR")
    split = load_native_split(FracAtlas(data_dir), "train", limit=args.limit)
    amx = bool(cpu_bf16_flags())
    res = {"load_avg_start": [round(v, 2) for v in os.getloadavg()], "cpus": os.cpu_count(), "bf16_flags": sorted(cpu_bf16_flags()),
           "ld_preload": os.environ.get("LD_PRELOAD", ""),
           "batch_size": args.batch_size, "images": len(split.ids), "results": [], "skipped": []}
    pipe = bench_pipeline(split, args.batch_size, args.steps)
    for precision in args.precisions:
        if precision == "mixed_bfloat16" and not (amx or args.force_bf16):
            res["skipped"].append("mixed_bfloat16: this CPU has no native bf16 (amx_bf16, avx512_bf16); bf16 would be emulated (--force-bf16 to time it)")
            continue
        for name in args.models:
            log.info("%s, %s ...", name, precision)
            r = bench_fit(name, split, precision, args.batch_size, args.warmup_steps, args.steps)
            res["results"].append({"model": name, "precision": precision, "size": 256, "pipeline_images_per_s": round(pipe, 1), **r})
    res["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    print(f"{'model':16s} {'precision':15s} {'img/s':>7s} {'ms/step':>8s} {'pipeline img/s':>15s}")
    for r in res["results"]:
        print(f"{r['model']:16s} {r['precision']:15s} {r['images_per_s']:7.1f} {r['ms_per_step_median']:8.1f} {r['pipeline_images_per_s']:15.1f}")
    for line in res["skipped"]:
        print("skipped:", line)
    print(f"load average: start {res['load_avg_start']}, end {res['load_avg_end']} ({res['cpus']} CPUs)")
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
