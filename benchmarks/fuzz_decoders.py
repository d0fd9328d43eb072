"""Decoder fuzzing at scale: unhandled exceptions, worst time and memory per file.

    python benchmarks/fuzz_decoders.py [--cases 2000] [--seed 0] [--failures DIR] [--no-limits] [--repeats 3]
                                       [--json FILE]

Runs ``--cases`` Hypothesis-generated files (the strategies of
``tests/fuzz_strategies.py``, shared with the CI tests: arbitrary bytes, mutated
real files, DICOMs with arbitrary headers, in equal shares) through
``check_case``: ``load_image``, the decoder contract, and the model's preprocessing.
Every case must end in a valid image or an ``ImageLoadError``; anything else is an
unhandled exception: its type, message and recipe are printed, its bytes are saved
under ``--failures`` with a one-line reproducer command, and the exit status is 1.

Then (unless ``--no-limits``) the largest files the limits let through (60 million
pixels; 50 MB for uncompressed DICOM) are measured the same way, ``--repeats`` times
each, since fuzzed files are small and the worst time/memory comes from size, not damage.

Per file: wall time of ``check_case`` (decode + checks + preprocessing), and peak
memory as the growth of the process's peak resident set (VmHWM, reset before each
file through /proc/self/clear_refs; it counts every allocation, Pillow's and
OpenCV's C buffers included, which tracemalloc does not see). Where
/proc/self/clear_refs cannot be written (not Linux), tracemalloc's peak is used and
the report says so. Timings depend on machine load: the JSON records the load average.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import sys
import time
import tracemalloc
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from important_variables import CONFIG  # noqa: E402
from tests.fuzz_strategies import (  # noqa: E402
    FuzzCase,
    arbitrary_files,
    check_case,
    dicom_bytes,
    dicom_files,
    mutated_files,
    seed_files,
)

MB = 2**20


# --------------------------------------------------------------------------- measuring
class PeakMemory:
    """Peak memory growth of one call: VmHWM via /proc/self/clear_refs, else tracemalloc."""

    def __init__(self):
        self.method = "rss" if self._rss_available() else "tracemalloc"

    @staticmethod
    def _status_kb(field: str) -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise KeyError(field)

    def _rss_available(self) -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self._status_kb("VmHWM")
            return True
        except (OSError, KeyError):
            return False

    def measure(self, fn):
        """Run ``fn()``; return (result or exception, seconds, peak growth in bytes)."""
        if self.method == "rss":
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # resets VmHWM to the current RSS
            before = self._status_kb("VmRSS")
        else:
            tracemalloc.start()
        t = time.perf_counter()
        try:
            out = fn()
        except Exception as exc:  # reported by the caller
            out = exc
        seconds = time.perf_counter() - t
        if self.method == "rss":
            peak = max(self._status_kb("VmHWM") - before, 0) * 1024
        else:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        return out, seconds, peak


# --------------------------------------------------------------------------- fuzzing
def run_fuzz(n_cases: int, seed: int, meter: PeakMemory, failures_dir: Path) -> dict:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    outcomes: Counter = Counter()
    by_kind: Counter = Counter()
    kind_outcomes: Counter = Counter()
    unhandled: list[dict] = []
    worst_time: list[tuple[float, int, FuzzCase]] = []  # (seconds, case number, case)
    worst_mem: list[tuple[int, str]] = []
    times, mems = [], []

    def one(case: FuzzCase):
        out, seconds, peak = meter.measure(lambda: check_case(case))
        times.append(seconds)
        mems.append(peak)
        by_kind[case.kind] += 1
        kind_outcomes[f"{case.kind} {out if isinstance(out, str) else 'unhandled'}"] += 1
        worst_time.append((seconds, len(times), case))
        worst_mem.append((peak, case.recipe))
        if len(worst_time) > 50:  # keep the 5 worst without holding every recipe
            worst_time.sort(reverse=True)
            del worst_time[5:]
            worst_mem.sort(reverse=True)
            del worst_mem[5:]
        if isinstance(out, Exception):
            unhandled.append(_report_failure(case, out, failures_dir, len(unhandled)))
            outcomes["unhandled"] += 1
        else:
            outcomes[out] += 1

    t0 = time.time()
    # Equal shares per strategy (st.one_of would not split them evenly).
    strategies = (arbitrary_files(), mutated_files(), dicom_files())
    for k, strategy in enumerate(strategies):
        n = n_cases // len(strategies) + (k < n_cases % len(strategies))
        if n:
            run = given(strategy)(one)
            run = settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
                           suppress_health_check=list(HealthCheck))(run)
            hypothesis_seed(seed + k)(run)()
    worst_time.sort(reverse=True)
    worst_mem.sort(reverse=True)
    return {
        "cases": sum(outcomes.values()),
        "outcomes": dict(outcomes),
        "by_kind": dict(by_kind),
        "outcomes_by_kind": dict(sorted(kind_outcomes.items())),
        "unhandled_exceptions": len(unhandled),
        "failures": unhandled,
        "worst_time_ms": round(max(times) * 1000, 1) if times else None,
        "p99_time_ms": round(float(np.percentile(times, 99)) * 1000, 2) if times else None,
        "worst_peak_mb": round(max(mems) / MB, 1) if mems else None,
        "p99_peak_mb": round(float(np.percentile(mems, 99)) / MB, 2) if mems else None,
        # The 5 slowest cases timed again (best of 3): a one-off pause of a loaded machine
        # or of the garbage collector shows as a fast re-run, a slow file as a slow one.
        "slowest": [{"ms": round(s * 1000, 1), "rerun_ms": _best_of(c, meter, 3), "recipe": c.recipe}
                    for s, _, c in worst_time[:5]],
        "largest_memory": [{"mb": round(m / MB, 1), "recipe": r} for m, r in worst_mem[:5]],
        "wall_s": round(time.time() - t0, 1),
    }


def _best_of(case: FuzzCase, meter: PeakMemory, runs: int) -> float:
    return round(min(meter.measure(lambda: check_case(case))[1] for _ in range(runs)) * 1000, 2)


def _report_failure(case: FuzzCase, exc: Exception, failures_dir: Path, k: int) -> dict:
    failures_dir.mkdir(parents=True, exist_ok=True)
    path = failures_dir / f"case{k:04d}{Path(case.name).suffix or '.bin'}"
    path.write_bytes(case.data)
    repro = (f"{sys.executable} -c \"import sys; sys.path.insert(0, '{ROOT}'); from imaging.image_io import load_image; "
             f"load_image(open('{path}', 'rb').read(), '{case.name}')\"")
    msg = str(exc).splitlines()[0] if str(exc) else ""
    sys.stdout.write(f"UNHANDLED {type(exc).__name__}: {msg}\n  recipe: {case.recipe}\n  reproduce: {repro}\n")
    return {"type": type(exc).__name__, "message": msg, "recipe": case.recipe, "file": str(path), "reproduce": repro}


# --------------------------------------------------------------------------- size limits
def limit_cases() -> list[FuzzCase]:
    """The largest files the limits let through, one per decoder path (generated in memory)."""
    from PIL import Image

    side = int(CONFIG.max_image_pixels**0.5)  # 7745: 59,985,025 px
    y, x = np.ogrid[0:side, 0:side]
    grey = ((x + 3 * y) % 251).astype(np.uint8)  # a pattern zlib/JPEG cannot shrink to nothing

    def pil(img, fmt, **kw) -> bytes:
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        return buf.getvalue()

    cases = [
        FuzzCase("max_grey.png", pil(Image.fromarray(grey), "PNG", compress_level=1), f"limit: PNG 8-bit grey {side}x{side}"),
        FuzzCase("max_grey16.png", pil(Image.fromarray(grey.astype(np.uint16) * 257), "PNG", compress_level=1),
                 f"limit: PNG 16-bit grey {side}x{side}"),
        FuzzCase("max_grey.jpg", pil(Image.fromarray(grey), "JPEG", quality=90), f"limit: JPEG grey {side}x{side}"),
    ]
    rgba = np.dstack([grey, grey[::-1], grey[:, ::-1], np.full_like(grey, 200)])
    cases.append(FuzzCase("max_rgba.png", pil(Image.fromarray(rgba, "RGBA"), "PNG", compress_level=1),
                          f"limit: PNG RGBA {side}x{side}"))
    cases.append(FuzzCase("max_rgb.jpg", pil(Image.fromarray(rgba[..., :3]), "JPEG", quality=90),
                          f"limit: JPEG RGB {side}x{side}"))
    del rgba, grey
    budget = CONFIG.max_upload_mb * MB - 4096  # room for the header
    s16 = int((budget / 2) ** 0.5)
    g16 = ((np.arange(s16, dtype=np.uint32)[None, :] * 7 + np.arange(s16, dtype=np.uint32)[:, None]) % 4096).astype(np.uint16)
    cases.append(FuzzCase("max_16bit.dcm", dicom_bytes(g16, bits_stored=12, extra={
        "RescaleSlope": "1.5", "RescaleIntercept": "-1024", "WindowCenter": "1000", "WindowWidth": "3000"}),
        f"limit: DICOM 16-bit MONOCHROME2 {s16}x{s16}, rescale + window"))
    del g16
    s_rgb = int((budget / 3) ** 0.5)
    rgb = np.random.default_rng(0).integers(0, 256, (s_rgb, s_rgb, 3), dtype=np.uint8)
    cases.append(FuzzCase("max_rgb.dcm", dicom_bytes(rgb, photometric="RGB"), f"limit: DICOM RGB 8-bit {s_rgb}x{s_rgb}"))
    return cases


def run_limits(meter: PeakMemory, repeats: int) -> list[dict]:
    """Each limit case ``repeats`` times: median and worst time, worst peak memory."""
    rows = []
    for case in limit_cases():
        runs = [meter.measure(lambda c=case: check_case(c)) for _ in range(repeats)]
        outs = {r[0] if isinstance(r[0], str) else f"UNHANDLED {type(r[0]).__name__}: {r[0]}" for r in runs}
        secs = [r[1] for r in runs]
        rows.append({"recipe": case.recipe, "file_mb": round(len(case.data) / MB, 1), "outcome": " / ".join(sorted(outs)),
                     "median_ms": round(float(np.median(secs)) * 1000, 1), "worst_ms": round(max(secs) * 1000, 1),
                     "peak_mb": round(max(r[2] for r in runs) / MB, 1)})
        del case, runs
    return rows


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=2000, help="number of fuzzed files (default: 2000)")
    p.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default: 0; same seed, same cases)")
    p.add_argument("--failures", type=Path, default=CONFIG.reports_dir / "fuzz_failures",
                   help="where unhandled cases are saved (default: reports/fuzz_failures)")
    p.add_argument("--no-limits", action="store_true", help="skip the largest-allowed-file measurements")
    p.add_argument("--repeats", type=int, default=3, help="runs per largest-allowed file (default: 3)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.cases < 1:
        p.error("--cases must be at least 1")
    # Damaged files make pydicom and Pillow warn and log for nearly every case; the outcome is what counts.
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)

    meter = PeakMemory()
    # Seeds generated and every decoder's lazy imports (pydicom, Pillow plugins) done
    # once before measuring: an import is a one-off cost, not a file's.
    for name, data in seed_files().items():
        check_case(FuzzCase(name, data, "warm-up"))
    res = {"load_avg_start": [round(v, 2) for v in os.getloadavg()], "cpus": os.cpu_count(),
           "python": platform.python_version(), "memory_method": meter.method, "seed": args.seed}
    res["fuzz"] = run_fuzz(args.cases, args.seed, meter, args.failures)
    if not args.no_limits:
        res["limits"] = run_limits(meter, max(args.repeats, 1))
    res["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]

    f = res["fuzz"]
    mem = "peak RSS growth" if meter.method == "rss" else "tracemalloc peak (Python/numpy allocations only)"
    out = sys.stdout
    out.write(f"cases run: {f['cases']} ({', '.join(f'{k} {v}' for k, v in sorted(f['by_kind'].items()))}) "
              f"in {f['wall_s']} s\n")
    out.write(f"outcomes: {', '.join(f'{k} {v}' for k, v in sorted(f['outcomes'].items()))} "
              f"({', '.join(f'{k} {v}' for k, v in f['outcomes_by_kind'].items())})\n")
    out.write(f"unhandled exceptions: {f['unhandled_exceptions']}\n")
    out.write(f"worst time per file: {f['worst_time_ms']} ms (p99 {f['p99_time_ms']} ms)\n")
    out.write(f"worst memory per file ({mem}): {f['worst_peak_mb']} MB (p99 {f['p99_peak_mb']} MB)\n")
    for row in f["slowest"]:
        out.write(f"  slow case: {row['ms']} ms, re-run {row['rerun_ms']} ms: {row['recipe']}\n")
    for row in res.get("limits", []):
        out.write(f"{row['recipe']:58s} {row['file_mb']:6.1f} MB file  {row['outcome']:8s} median {row['median_ms']:7.1f} ms"
                  f"  worst {row['worst_ms']:7.1f} ms  {row['peak_mb']:7.1f} MB peak\n")
    out.write(f"load average start {res['load_avg_start']} end {res['load_avg_end']} on {res['cpus']} CPUs\n")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    bad_limits = [r for r in res.get("limits", []) if r["outcome"].startswith("UNHANDLED")]
    return 1 if f["unhandled_exceptions"] or bad_limits else 0


if __name__ == "__main__":
    sys.exit(main())
