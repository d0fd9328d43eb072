"""Reading the FracAtlas layout: images, COCO polygons, dataset.csv and the official split.

Layout (see the data set's README.md)::

    <root>/dataset.csv
    <root>/images/{Fractured,Non_fractured}/IMGnnnnnnn.jpg
    <root>/Annotations/COCO JSON/COCO_fracture_masks.json
    <root>/Utilities/Fracture Split/{train,valid,test}.csv

Fractured images follow the official split files. Non-fractured images have none;
every tool uses this rule on the numeric id n of IMGnnnnnnn.jpg:
``n % 10 == 0`` → test, ``n % 10 == 1`` → valid, otherwise train.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from important_variables import is_fracatlas_dir

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
#: The source name of FracAtlas's images: reports' ``source``, a merged split's ``NativeSplit.sources``.
SOURCE_NAME = "FracAtlas"
BODY_PARTS = ("hand", "leg", "hip", "shoulder")
COCO_RELPATH = Path("Annotations") / "COCO JSON" / "COCO_fracture_masks.json"
SPLIT_DIR = Path("Utilities") / "Fracture Split"
_ID_RE = re.compile(r"IMG(\d+)\.jpe?g$", re.IGNORECASE)


class DatasetError(RuntimeError):
    """The data set directory is missing or not laid out as FracAtlas."""


def negative_split(image_id: str) -> str:
    """Split of a non-fractured image by the id rule (n % 10: 0 test, 1 valid, else train)."""
    m = _ID_RE.search(image_id)
    if not m:
        raise ValueError(f"not a FracAtlas image id: {image_id!r}")
    r = int(m.group(1)) % 10
    return "test" if r == 0 else "valid" if r == 1 else "train"


@dataclass(frozen=True)
class Instance:
    """One annotated fracture: polygons in original pixel coordinates and its box."""

    polygons: tuple[np.ndarray, ...]  # each (K, 2) float32, x/y, K >= 3
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in original pixels


@dataclass(frozen=True)
class Record:
    image_id: str
    path: Path
    fractured: bool
    split: str
    body_part: str  # one of BODY_PARTS, "mixed" or "unknown"
    width: int | None = None  # from the COCO entry, when annotated
    height: int | None = None
    instances: tuple[Instance, ...] = field(default_factory=tuple)

    def mask(self, height: int, width: int) -> np.ndarray:
        """Binary fracture mask (height, width) uint8 in {0, 1}, all instances merged.

        Polygons are given for the COCO image size; if the decoded image differs
        (it should not), they are scaled to it.
        """
        mask = np.zeros((height, width), np.uint8)
        sx = width / self.width if self.width else 1.0
        sy = height / self.height if self.height else 1.0
        for inst in self.instances:
            for poly in inst.polygons:
                pts = np.round(poly * np.array([sx, sy], np.float32)).astype(np.int32)
                cv2.fillPoly(mask, [pts], 1)
        return mask

    def load_pixels(self) -> np.ndarray:
        """The stored image as decoded by image_io, *without* EXIF rotation; raises ImageLoadError.

        The COCO polygons and sizes refer to the stored pixel grid (all 717 COCO sizes
        equal the stored sizes, while 2 fractured files carry EXIF orientation 3 and 8),
        so masks only line up with the unrotated pixels.
        """
        from imaging.image_io import read_image_file

        return read_image_file(self.path, exif_orientation=False).pixels

    def boxes(self) -> np.ndarray:
        """Instance boxes, (N, 4) float32 x0, y0, x1, y1 in original pixels."""
        if not self.instances:
            return np.zeros((0, 4), np.float32)
        return np.array([i.box for i in self.instances], np.float32)


class FracAtlas:
    """Index of a FracAtlas directory. Reads only CSV/JSON at construction, no images."""

    name = SOURCE_NAME

    def __init__(self, root: Path | str):
        self.root = Path(root)
        if not is_fracatlas_dir(self.root):
            raise DatasetError(f"{self.root}: not a FracAtlas directory (dataset.csv not found)")
        self.skipped_annotations: list[str] = []
        self._tags = self._read_tags()
        self._instances, self._coco_size = self._read_coco()
        self._split_of_fractured = self._read_splits()
        self._paths = self._index_images()

    # -- reading -------------------------------------------------------------
    def _read_tags(self) -> dict[str, dict[str, str]]:
        with open(self.root / "dataset.csv", newline="", encoding="utf-8") as fh:
            return {row["image_id"]: row for row in csv.DictReader(fh)}

    def _read_splits(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for split in SPLITS:
            path = self.root / SPLIT_DIR / f"{split}.csv"
            if not path.is_file():
                raise DatasetError(f"{path}: official split file missing")
            with open(path, newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    out[row["image_id"].strip()] = split
        return out

    def _read_coco(self):
        path = self.root / COCO_RELPATH
        if not path.is_file():
            raise DatasetError(f"{path}: COCO annotation file missing")
        with open(path, encoding="utf-8") as fh:
            coco = json.load(fh)
        images = {}
        for im in coco.get("images", []):
            try:
                images[im["id"]] = (im["file_name"], int(im["width"]), int(im["height"]))
            except (KeyError, TypeError, ValueError):
                self._skip(f"image entry {str(im)[:60]}: missing id/file_name/width/height")
        instances: dict[str, list[Instance]] = {name: [] for name, _, _ in images.values()}
        for ann in coco.get("annotations", []):
            inst = self._parse_annotation(ann, images)
            if inst is not None:
                instances[images[ann["image_id"]][0]].append(inst)
        sizes = {name: (w, h) for name, w, h in images.values()}
        return instances, sizes

    def _parse_annotation(self, ann, images) -> Instance | None:
        ann_id = ann.get("id", "?") if isinstance(ann, dict) else "?"
        try:
            file_name = images[ann["image_id"]][0]
        except (KeyError, TypeError):
            self._skip(f"annotation {ann_id}: unknown or missing image_id")
            return None
        polys = []
        for seg in ann.get("segmentation") or []:
            try:
                pts = np.asarray(seg, np.float32).reshape(-1, 2)
            except (ValueError, TypeError):
                self._skip(f"annotation {ann_id} ({file_name}): malformed polygon")
                continue
            if len(pts) < 3 or not np.isfinite(pts).all():
                log.warning("annotation %s (%s): polygon with %d points skipped (< 3)", ann_id, file_name, len(pts))
                continue
            polys.append(pts)
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
            box = (x, y, x + w, y + h)
        except (KeyError, TypeError, ValueError):
            if not polys:
                self._skip(f"annotation {ann_id} ({file_name}): neither a usable polygon nor a box")
                return None
            allpts = np.concatenate(polys)
            box = (*allpts.min(0).tolist(), *allpts.max(0).tolist())
        if not polys:
            self._skip(f"annotation {ann_id} ({file_name}): no usable polygon, box kept for detection only")
        return Instance(polygons=tuple(polys), box=box)

    def _skip(self, message: str) -> None:
        log.warning("skipping %s", message)
        self.skipped_annotations.append(message)

    def _index_images(self) -> dict[str, Path]:
        paths = {}
        for sub in ("Fractured", "Non_fractured"):
            d = self.root / "images" / sub
            if d.is_dir():
                for p in d.iterdir():
                    if _ID_RE.search(p.name):
                        paths[p.name] = p
        if not paths:
            raise DatasetError(f"{self.root / 'images'}: no IMGnnnnnnn.jpg images found")
        return paths

    # -- queries -------------------------------------------------------------
    def _body_part(self, image_id: str) -> str:
        row = self._tags.get(image_id)
        if not row:
            return "unknown"
        parts = [p for p in BODY_PARTS if row.get(p, "0").strip() == "1"]
        if row.get("mixed", "0").strip() == "1" or len(parts) > 1:
            return "mixed"
        return parts[0] if parts else "unknown"

    def record(self, image_id: str) -> Record:
        path = self._paths[image_id]
        fractured = image_id in self._split_of_fractured
        split = self._split_of_fractured[image_id] if fractured else negative_split(image_id)
        size = self._coco_size.get(image_id)
        return Record(
            image_id=image_id,
            path=path,
            fractured=fractured,
            split=split,
            body_part=self._body_part(image_id),
            width=size[0] if size else None,
            height=size[1] if size else None,
            instances=tuple(self._instances.get(image_id, ())) if fractured else (),
        )

    def records(self, split: str, fractured: bool | None = None) -> list[Record]:
        """Records of ``split`` sorted by id; ``fractured`` True/False filters, None keeps both.

        Fractured = listed in the official split files (717 images, 574/82/61).
        """
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        out = []
        for image_id in sorted(self._paths):
            rec = self.record(image_id)
            if rec.split == split and (fractured is None or rec.fractured == fractured):
                out.append(rec)
        return out
