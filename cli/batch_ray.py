"""Archive-scale batch prediction on Ray Data: the engine behind ``predict.py --engine ray``.

For an archive (100k to millions of X-rays), or a new model re-run over one, on a local
Ray that uses every core of this machine or on an existing Ray cluster (``--address``).

How it runs: ``ray.data.from_items`` over the file list (index, name as given, absolute
path, output stem; no pixels), then ``map_batches`` over an actor pool
(:class:`PredictBatches`). Each actor loads the model once through
``create_segmentation_model.load_segmentation_model``, pinned to the SHA-256 the driver
checked (a node whose copy differs refuses to start, naming the node), and runs each block
of files through ``prediction.iter_predictions``: the one inference loop of the local
engine, the app and evaluation. Files are read and decoded in the actor's memory; pixels
never enter Ray's object store, only the paths and the JSON lines do. The per-file PNGs
are written by the ``write_outputs`` the caller hands in (``predict.write_outputs``), so
both engines write the same files.

The summary (``--summary``, default ``OUT/summary.jsonl``): one JSON object per line and
file, the local engine's record plus :data:`BOOKKEEPING` (the model file's SHA-256, the
SHA-256 of its manifest entry, the output stem). Lines are appended as results arrive, so
an interrupted job keeps what it finished; at the end the file is rewritten with one line
per file. A re-run skips every file whose line says it was done without error by the same
model file, manifest entry, threshold and output stem and whose PNGs are still there
(:func:`finished_earlier`); failed files are tried again.

Ray is optional (``requirements-ray.txt``): nothing here imports it at module level, and
the app never imports this module.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import socket
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from imaging.image_io import read_image_file
from inference.manifest import ModelEntry, ModelIntegrityError
from inference.reading import result_record
from prediction import Outcome, Source, iter_predictions

#: The project's folder (this module's): every Ray worker imports the project from here.
ROOT = Path(__file__).resolve().parents[1]
#: File name of the summary in the output folder when ``--summary`` is not given.
SUMMARY_NAME = "summary.jsonl"
#: Keys a summary line adds to the local engine's record: what a re-run compares.
BOOKKEEPING = ("model_sha256", "entry_sha256", "output_stem")
#: The files ``predict.write_outputs`` writes per stem; a re-run redoes a file when one is missing.
OUTPUT_SUFFIXES = ("_annotated.png", "_mask.png")
#: Model batches per Ray block. A block is one actor call: inside it decoding runs ahead and
#: PNG writing runs behind the model, as in the local engine, and Ray's per-block cost
#: (a few ms) stays small next to the block's seconds of compute.
BATCHES_PER_BLOCK = 4
#: How ``pip`` gets Ray, for the one-line error when it is missing.
INSTALL_HINT = "pip install -r requirements-ray.txt"


class EngineError(RuntimeError):
    """The Ray engine cannot run or stopped: Ray missing, cluster unreachable, model refused on a node,
    summary not writable, job interrupted. The message is one line."""


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


@dataclass(frozen=True)
class BatchModel:
    """What every actor loads: the model's name, its file (the same absolute path on every node),
    the SHA-256 the driver verified, and its manifest entry (None for an unlisted file)."""

    name: str
    path: str
    sha256: str
    entry: ModelEntry | None = None
    #: ``inference.model_card.reliability_by_source`` of the model: the likelihood's words, as ``predict.run`` gets them.
    by_source: tuple = ()

    @property
    def entry_data(self) -> dict:
        """The manifest entry as a plain dict ({} when unlisted): margin, calibration, finding rule."""
        return dict(self.entry.data) if self.entry is not None else {}

    @property
    def entry_sha256(self) -> str:
        """Hex SHA-256 of the entry as canonical JSON: a new calibration or finding rule redoes the files."""
        text = json.dumps(self.entry_data, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- the actor
class PredictBatches:
    """Ray Data actor: loads the model once, then turns blocks of files into summary lines.

    A batch (numpy format) holds ``index`` (int, position in the input list), ``file`` (the
    name as given: records and error lines), ``path`` (absolute, read on the worker) and
    ``stem`` (the output stem). It returns ``index`` and ``line`` (the summary line, JSON
    text) and, with ``with_prob``, ``prob``: the (H, W) float32 probability map as ``np.save``
    bytes (b"" for a file that failed).
    """

    def __init__(self, model: BatchModel, threshold: float, out_dir: Path | None,
                 write_outputs: Callable | None, batch_size: int = 8, cpus: int = 1, with_prob: bool = False):
        from cli import quiet_tf

        tf = quiet_tf.import_tensorflow()
        try:  # Ray reserves ``cpus`` cores for this actor; TensorFlow would size its pools to the whole node
            tf.config.threading.set_intra_op_parallelism_threads(cpus)
            tf.config.threading.set_inter_op_parallelism_threads(cpus)
        except RuntimeError:  # the runtime of this worker process already started: keep its pools
            pass
        from create_segmentation_model import load_segmentation_model
        from prediction import predictor_for

        try:
            keras_model = load_segmentation_model(model.path, model.sha256, compile=False, allow_unverified=True)
        except ModelIntegrityError as exc:
            raise ModelIntegrityError(f"on node {socket.gethostname()}: {exc}") from exc
        self.predictor = predictor_for(keras_model, model.name, model.entry)
        self.model = model
        self.entry = model.entry_data
        self.entry_sha256 = model.entry_sha256  # once per actor, not per file
        self.threshold = float(threshold)
        self.out_dir = out_dir
        self.write_outputs = write_outputs
        self.batch_size = batch_size
        self.with_prob = with_prob

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = zip(batch["index"].tolist(), batch["file"].tolist(), batch["path"].tolist(), batch["stem"].tolist(), strict=True)
        sources = [Source(file, (lambda path=path, file=file: read_image_file(path, name=file)), (index, stem))
                   for index, file, path, stem in rows]
        lines: list[tuple[int, dict]] = []
        probs: list[bytes] = []
        writes = []
        with ThreadPoolExecutor(max_workers=1) as writer:  # PNG encoding overlaps the next forward pass
            for o in iter_predictions(self.predictor, sources, self.threshold, self.batch_size, workers=1):
                index, stem = o.tag
                line = self.line(o, stem)
                if o.error is None and self.out_dir is not None:
                    writes.append((line, writer.submit(self.write_outputs, self.out_dir, stem, o.pixels, o.result,
                                                       line["review_box"])))
                lines.append((index, line))
                probs.append(_npy(o.result.prob) if self.with_prob and o.result is not None else b"")
            for line, fut in writes:
                try:
                    fut.result()
                except Exception as exc:  # disk full, permissions: this file's error, as in the local engine
                    line["error"] = _one_line(f"{line['file']}: cannot write its PNGs ({type(exc).__name__}: {exc})")
        out = {"index": np.array([i for i, _ in lines], np.int64),
               "line": np.array([json.dumps(line) for _, line in lines], dtype=object)}
        if self.with_prob:
            out["prob"] = np.array(probs, dtype=object)
        return out

    def line(self, o: Outcome, stem: str) -> dict:
        """The summary line of one outcome: the local engine's record (``predict.run``) + :data:`BOOKKEEPING`."""
        rec = result_record(o.result, o.name, self.model.name, self.entry, note=o.note, error=o.error,
                            by_source=self.model.by_source)
        rec.update(model_sha256=self.model.sha256, entry_sha256=self.entry_sha256,
                   output_stem=stem if self.out_dir is not None else None)
        return rec


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a, np.float32), allow_pickle=False)
    return buf.getvalue()


def prob_from_npy(data: bytes) -> np.ndarray:
    """The (H, W) float32 probability map of a ``prob`` column entry (see :class:`PredictBatches`)."""
    return np.load(io.BytesIO(data), allow_pickle=False)


# --------------------------------------------------------------------------- Ray
def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (the extra: pandas/pyarrow)
    except ImportError as exc:
        raise EngineError(f"--engine ray needs Ray, which is not installed in this Python ({exc}); {INSTALL_HINT}") from exc
    return ray


def machine_cpus() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def quiet_data_context(progress: bool) -> None:
    """Ray Data's progress bars (``progress``) and nothing else: no start banner, no stats dump."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    if not progress:  # in a pipe Ray Data logs its progress as INFO lines; no progress = none of them
        logging.getLogger("ray.data").setLevel(logging.ERROR)


def connect(address: str | None = None, num_cpus: int | None = None, progress: bool = True) -> bool:
    """Start a local Ray (``num_cpus``, default: this machine's cores) or join the cluster at ``address``.

    Reuses a Ray already initialised in this process (a test, a notebook). Quiet: no dashboard,
    no worker output forwarded, Ray's own logging at ERROR, usage statistics off unless the
    environment says otherwise. Returns True when this call started the connection (the
    caller then ends it with ``ray.shutdown()``). Raises :class:`EngineError` (one line).
    """
    ray = _import_ray()
    quiet_data_context(progress)
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing is reported to Ray's servers
    # The workers import this project (cli.batch_ray, prediction, ...) from the same folder as the
    # driver, whatever the driver's script or working directory; on a cluster that folder must
    # hold the same checkout on every node.
    code = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    quiet = dict(logging_level=logging.ERROR, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": code}})
    try:
        if address:
            _answers(address)
            ray.init(address=address, **quiet)
        else:
            ray.init(num_cpus=num_cpus or machine_cpus(), include_dashboard=False, **quiet)
    except Exception as exc:
        where = f"connect to the Ray cluster at {address}" if address else "start a local Ray"
        raise EngineError(f"cannot {where} ({type(exc).__name__}: {_first_line(exc)})") from exc
    quiet_data_context(progress)  # ray.init configures Ray Data's loggers again
    return True


def _answers(address: str, timeout_s: float = 5.0) -> None:
    """Fail at once when nothing listens at a ``HOST:PORT`` address: ``ray.init`` would retry for
    about 13 minutes. Other forms (``auto``, a ``ray://`` client address) are left to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in host or not host:
        return
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise OSError(f"nothing answers at {host}:{port}: {exc.strerror or exc}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return _one_line(text.splitlines()[0] if text else type(exc).__name__)


def predict_dataset(items: Sequence[dict], model: BatchModel, threshold: float, out_dir: Path | None,
                    write_outputs: Callable | None, *, batch_size: int = 8, actor_cpus: int = 1,
                    files_per_block: int | None = None, with_prob: bool = False):
    """The lazy Ray Dataset of summary lines for ``items`` ({index, file, path, stem}, see
    :class:`PredictBatches`); Ray must be connected (:func:`connect`).

    The actor pool has one actor per ``actor_cpus`` cores of the cluster, at most one per
    block. A block holds ``files_per_block`` files (default: :data:`BATCHES_PER_BLOCK` model
    batches, fewer for a small job so that every actor gets about two blocks, never less
    than one batch). Output rows come in completion order: ``index`` says whose line it is.
    """
    import ray
    import ray.data

    cpus = float(ray.cluster_resources().get("CPU", 0))
    if actor_cpus > cpus:  # the pool could never start: say so instead of waiting
        raise EngineError(f"--actor-cpus {actor_cpus} is more than the {cpus:g} cores of the Ray cluster")
    max_actors = max(1, int(cpus // actor_cpus))
    per_block = files_per_block or min(batch_size * BATCHES_PER_BLOCK, max(batch_size, math.ceil(len(items) / (2 * max_actors))))
    n_blocks = max(1, math.ceil(len(items) / per_block))
    size = min(n_blocks, max_actors)
    ds = ray.data.from_items(list(items), override_num_blocks=n_blocks)
    return ds.map_batches(
        PredictBatches,
        fn_constructor_kwargs=dict(model=model, threshold=threshold, out_dir=out_dir, write_outputs=write_outputs,
                                   batch_size=batch_size, cpus=actor_cpus, with_prob=with_prob),
        batch_size=per_block, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=size), num_cpus=actor_cpus,
    )


def _job_error(exc: BaseException, summary: Path | None) -> str:
    """One line for a job that stopped: the underlying error (e.g. a model refused on a node), not Ray's wrapper."""
    seen, cause = set(), exc
    while cause is not None and id(cause) not in seen:  # Ray wraps the actor's exception (RayTaskError.cause)
        seen.add(id(cause))
        if isinstance(cause, ModelIntegrityError):
            return f"model refused {cause}"
        cause = getattr(cause, "cause", None) or cause.__cause__
    return f"the Ray job stopped ({type(exc).__name__}: {_first_line(exc)}){_resume_hint(summary)}"


def _resume_hint(summary: Path | None) -> str:
    return f"; the files finished so far are in {summary}, run the same command again to go on" if summary else ""


# --------------------------------------------------------------------------- summary and resume
def read_summary(path: Path | None) -> dict[str, dict]:
    """The summary's lines by ``file`` (the last line of a file wins), in order of first appearance.

    {} when there is none; a line that is not a JSON object with a ``file`` (e.g. cut off by
    an interruption) is ignored, so that file is done again.
    """
    if path is None or not path.is_file():
        return {}
    lines: dict[str, dict] = {}
    with open(path, encoding="utf-8") as fh:
        for text in fh:
            try:
                line = json.loads(text)
            except ValueError:
                continue
            if isinstance(line, dict) and isinstance(line.get("file"), str):
                lines[line["file"]] = line
    return lines


def finished_earlier(earlier: dict[str, dict], files: Sequence[Path | str], stems: Sequence[str], model: BatchModel,
                     threshold: float, out_dir: Path | None) -> dict[int, dict]:
    """{input index: summary line} of the files a re-run skips.

    Skipped: the file's line has no error, the same model name, model file SHA-256, manifest
    entry SHA-256, threshold (as recorded, 4 decimals) and output stem (None without an output
    folder), and every PNG of that stem is still in ``out_dir``.
    """
    keep = {}
    want = {"model": model.name, "model_sha256": model.sha256, "entry_sha256": model.entry_sha256,
            "threshold": round(float(threshold), 4)}
    for i, (f, stem) in enumerate(zip(files, stems, strict=True)):
        line = earlier.get(str(f))
        if line is None or line.get("error") is not None or any(line.get(k) != v for k, v in want.items()):
            continue
        if line.get("output_stem") != (stem if out_dir is not None else None):
            continue
        if out_dir is not None and not all((Path(out_dir) / f"{stem}{s}").is_file() for s in OUTPUT_SUFFIXES):
            continue
        keep[i] = line
    return keep


def rewrite_summary(path: Path, earlier: dict[str, dict], lines: Sequence[dict]) -> None:
    """One line per file: the earlier lines of files not in this run, then this run's in input order.
    Atomic (temp file + rename), so an interruption leaves the old file or the new one."""
    merged = {f: line for f, line in earlier.items()}
    for line in lines:
        merged.pop(line["file"], None)
    merged.update((line["file"], line) for line in lines)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(line) + "\n" for line in merged.values()), encoding="utf-8")
    os.replace(tmp, path)


def record_of(line: dict) -> dict:
    """The local engine's record of a summary line (without :data:`BOOKKEEPING`)."""
    return {k: v for k, v in line.items() if k not in BOOKKEEPING}


def summary_path(summary: str | Path | None, out_dir: Path | None) -> Path | None:
    """``summary``, else ``out_dir/summary.jsonl``, else None (no summary, no resume)."""
    if summary:
        return Path(summary)
    return Path(out_dir) / SUMMARY_NAME if out_dir is not None else None


# --------------------------------------------------------------------------- the job
def run(files: Sequence[Path], stems: Sequence[str], model: BatchModel, threshold: float, out_dir: Path | None,
        write_outputs: Callable | None, *, summary: str | Path | None = None, address: str | None = None,
        batch_size: int = 8, actor_cpus: int = 1, progress: bool = True, stream: TextIO | None = None) -> list[dict]:
    """Predict ``files`` on Ray; one record per file, in input order, as ``predict.run`` returns them.

    stems: the output stem of each file (``predict.output_stems``). write_outputs:
    ``(out_dir, stem, pixels, result, review_box) -> None``, called on the actors when ``out_dir`` is set.
    Files finished earlier (:func:`finished_earlier`) are not sent to Ray; when none is left,
    Ray is not started. Each error line and, at the end, the count done / failed / skipped go
    to ``stream`` (stderr). Raises :class:`EngineError` (one line) when the job cannot run or stops.
    """
    stream = stream or sys.stderr
    out_dir = Path(out_dir).resolve() if out_dir is not None else None
    path = summary_path(summary, out_dir)
    earlier = read_summary(path)
    lines = finished_earlier(earlier, files, stems, model, threshold, out_dir)
    n_skipped = len(lines)
    items = [{"index": i, "file": str(f), "path": str(Path(f).resolve()), "stem": stem}
             for i, (f, stem) in enumerate(zip(files, stems, strict=True)) if i not in lines]
    if items:
        started = connect(address, progress=progress)
        try:
            with _appender(path) as fh:
                ds = predict_dataset(items, model, threshold, out_dir, write_outputs, batch_size=batch_size,
                                     actor_cpus=actor_cpus)
                _collect(ds, lines, fh, stream)
        except KeyboardInterrupt:
            raise EngineError(f"interrupted{_resume_hint(path)}") from None
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(_job_error(exc, path)) from exc
        finally:
            if started:
                import ray

                ray.shutdown()
    ordered = [lines[i] for i in range(len(files))]
    if path is not None:
        rewrite_summary(path, earlier, ordered)
    n_failed = sum(line["error"] is not None for line in ordered)
    stream.write(f"ray engine: {len(ordered) - n_skipped - n_failed} done, {n_failed} failed, {n_skipped} skipped "
                 f"(done earlier with this model) of {len(ordered)} files\n")
    return [record_of(line) for line in ordered]


@contextmanager
def _appender(path: Path | None):
    """The summary opened for appending (None without a summary); :class:`EngineError` when it cannot be."""
    if path is None:
        yield None
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise EngineError(f"{path}: cannot write the summary ({exc.strerror or exc})") from exc
    try:
        yield fh
    finally:
        fh.close()


def _collect(ds, lines: dict[int, dict], fh: TextIO | None, stream: TextIO) -> None:
    """Drain ``ds``: each summary line into ``lines`` and, at once, onto the summary; error lines to ``stream``."""
    for row in ds.iter_rows():
        text = str(row["line"])
        line = json.loads(text)
        lines[int(row["index"])] = line
        if fh is not None:  # flushed per line: an interrupted job keeps every file it finished
            fh.write(text + "\n")
            fh.flush()
        if line["error"] is not None:
            stream.write(f"error: {line['error']}\n")


__all__ = ["SUMMARY_NAME", "BOOKKEEPING", "OUTPUT_SUFFIXES", "EngineError", "BatchModel", "PredictBatches", "connect",
           "machine_cpus", "predict_dataset", "prob_from_npy", "read_summary", "finished_earlier", "rewrite_summary",
           "record_of", "summary_path", "run"]
