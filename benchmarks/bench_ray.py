"""Batch prediction benchmark: the local engine and the Ray engine side by side, in one run.

    python benchmarks/bench_ray.py [--data DIR] [--images 40] [--model unet] [--batch-size 8]
                                   [--actor-cpus 1] [--json FILE]

On ``--images`` readable FracAtlas test X-rays (fractured first), with the PNGs written to
a temporary folder (deleted at the end), as ``predict.py --out`` does:

- local: ``predict.run`` in this process, the model loaded beforehand (its load time is
  printed apart);
- ray: a local Ray on this machine's cores (``cli.batch_ray.connect``: its start-up cost is
  printed apart), then two jobs through ``cli.batch_ray.predict_dataset``: one file (what every
  job pays before predicting: its actors start, import TensorFlow, load the model) and all
  the files. Printed: the whole job's images/s (its start-up included) and the net rate,
  (files - 1) / (all-files job - one-file job).

Both engines must give the same records (checked, printed). Timings depend on machine load:
the load average at start and end is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pick_images(data_dir: Path, n: int) -> list[Path]:
    """``n`` readable test-split images, fractured first (the release's truncated JPEGs skipped)."""
    from fracture.dataset import FracAtlas
    from imaging.image_io import ImageLoadError, read_image_file

    atlas = FracAtlas(data_dir)
    out = []
    for r in atlas.records("test", fractured=True) + atlas.records("test", fractured=False):
        if len(out) >= n:
            break
        try:
            read_image_file(r.path)
        except ImageLoadError:
            continue
        out.append(r.path)
    return out


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bench_local(files, choice, threshold, out_dir: Path, batch_size: int) -> dict:
    import predict
    from cli import quiet_tf

    quiet_tf.import_tensorflow()
    t = time.perf_counter()
    predictor = predict.load_predictor(choice)
    load_s = time.perf_counter() - t
    entry = dict(choice.entry.data) if choice.entry is not None else {}
    t = time.perf_counter()
    records = predict.run(files, predictor, choice.name, threshold, out_dir, batch_size, progress=False, entry=entry)
    wall = time.perf_counter() - t
    return {"model_load_s": round(load_s, 2), "wall_s": round(wall, 2), "images_per_s": round(len(files) / wall, 2),
            "records": records}


def _ray_job(files, model, threshold, out_dir: Path, batch_size: int, actor_cpus: int) -> tuple[float, list[dict]]:
    """One Ray job over ``files`` (actors start, load the model, predict): (wall seconds, records in input order)."""
    import predict
    from cli import batch_ray

    stems = predict.output_stems(files)
    items = [{"index": i, "file": str(f), "path": str(f.resolve()), "stem": s} for i, (f, s) in enumerate(zip(files, stems, strict=True))]
    t = time.perf_counter()
    ds = batch_ray.predict_dataset(items, model, threshold, out_dir, predict.write_outputs, batch_size=batch_size,
                                   actor_cpus=actor_cpus)
    lines = {int(row["index"]): json.loads(str(row["line"])) for row in ds.iter_rows()}
    wall = time.perf_counter() - t
    return wall, [batch_ray.record_of(lines[i]) for i in range(len(files))]


def bench_ray(files, choice, threshold, out_dir: Path, batch_size: int, actor_cpus: int) -> dict:
    import ray

    from cli import batch_ray

    t = time.perf_counter()
    batch_ray.connect(progress=False)
    start_s = time.perf_counter() - t
    cpus = ray.cluster_resources().get("CPU")
    model = batch_ray.BatchModel(choice.name, str(choice.path.resolve()), choice.sha256, choice.entry)
    try:
        # A one-file job first: its wall time is what every job pays before predicting (actors start,
        # import TensorFlow, load and warm up the model), plus one image.
        (out_dir / "one").mkdir()
        one_s, _ = _ray_job(files[:1], model, threshold, out_dir / "one", batch_size, actor_cpus)
        wall, records = _ray_job(files, model, threshold, out_dir, batch_size, actor_cpus)
    finally:
        ray.shutdown()
    net = wall - one_s
    return {"ray_start_s": round(start_s, 2), "cluster_cpus": cpus, "actor_cpus": actor_cpus, "one_file_job_s": round(one_s, 2),
            "wall_s": round(wall, 2), "images_per_s": round(len(files) / wall, 2),
            "images_per_s_net": round((len(files) - 1) / net, 2) if net > 0 else None, "records": records}


def main(argv: list[str] | None = None) -> int:
    from cli.common import positive_int, require_data_dir
    from important_variables import MODEL_NAMES

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="FracAtlas folder (default: $FRACATLAS_DIR or the default places)")
    ap.add_argument("--images", type=positive_int, default=40)
    ap.add_argument("--model", choices=MODEL_NAMES, default="unet")
    ap.add_argument("--batch-size", type=positive_int, default=8)
    ap.add_argument("--actor-cpus", type=positive_int, default=1)
    ap.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = ap.parse_args(argv)

    import predict

    files = pick_images(require_data_dir(args.data), args.images)
    choice = predict.resolve_model(args.model, None, False)
    threshold = choice.threshold
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        (Path(tmp) / "local").mkdir()
        (Path(tmp) / "ray").mkdir()
        local = bench_local(files, choice, threshold, Path(tmp) / "local", args.batch_size)
        ray_ = bench_ray(files, choice, threshold, Path(tmp) / "ray", args.batch_size, args.actor_cpus)
    same = local.pop("records") == ray_.pop("records")
    out = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_name(), "cores": os.cpu_count(),
           "model": args.model, "images": len(files), "batch_size": args.batch_size, "local": local, "ray": ray_,
           "same_records": same, "loadavg_start": [round(x, 2) for x in load_start],
           "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
    print(f"{len(files)} FracAtlas test X-rays, model {args.model}, batch {args.batch_size}, {os.cpu_count()} cores ({out['cpu']}), "
          f"load average {out['loadavg_start'][0]} at start, {out['loadavg_end'][0]} at end")
    print(f"{'':34}{'local':>10}{'ray':>10}")
    print(f"{'images/s, whole run':34}{local['images_per_s']:>10}{ray_['images_per_s']:>10}")
    print(f"{'wall s, whole run':34}{local['wall_s']:>10}{ray_['wall_s']:>10}")
    print(f"{'images/s net of start-up':34}{local['images_per_s']:>10}{str(ray_['images_per_s_net']):>10}")
    print(f"start-up: local loads the model in {local['model_load_s']} s (before its run, not in its wall time); "
          f"ray.init {ray_['ray_start_s']} s once, then {ray_['one_file_job_s']} s per job for one file "
          f"(actors start, load the model; in the whole run's wall time); {ray_['actor_cpus']} core(s) per actor")
    print(f"same records from both engines: {same}")
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
