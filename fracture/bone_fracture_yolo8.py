"""Reading the BoneFractureYolo8 layout: a second source of upper-extremity fracture X-rays.

Roboflow Universe export "bone-fracture-detection-daoon" v4 (workspace "veda"), CC BY 4.0,
train split only (see the data set's README.md)::

    <root>/data.yaml                       # class names (every class is a fracture region)
    <root>/train/images/<name>.jpg         # 2,994 images, about 400-512 px on the long side
    <root>/train/labels/<name>.txt         # YOLO segmentation: "class x1 y1 ... xn yn", normalised

Splits are carved here, **by original name** (the part before ``_jpg.rf.`` / ``_png.rf.`` /
``_jpeg.rf.``, shared by the export's augmented copies): an original goes to valid when the
first byte of SHA-256 of its name is below ``VALID_SHARE`` x 256, else to train, so copies of
one X-ray never land on both sides and the split does not depend on the file listing. Valid
keeps one copy per original (the first by name), so no X-ray counts several times in a metric.

An empty label file is *not* a verified negative (nobody checked it): such images have
``fractured=False`` and are kept out of every split unless ``unlabelled_as_negatives`` asks
for them (training only; never scored as true negatives).
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import numpy as np

from fracture.dataset import DatasetError, Instance, Record
from important_variables import is_yolo8_dir

log = logging.getLogger(__name__)

ENV_VAR = "BONEFRACTURE_YOLO8_DIR"
SOURCE_NAME = "BoneFractureYolo8"
SPLITS = ("train", "valid")
#: Share of originals carved out as valid (by the hash rule above).
VALID_SHARE = 0.15
_ORIGINAL_RE = re.compile(r"_(jpe?g|png)\.rf\.[0-9a-f]+$", re.IGNORECASE)
#: Class id → body part (data.yaml's names; "humerus" is used as "humerus fracture").
BODY_PARTS = ("elbow", "fingers", "forearm", "humerus", "humerus", "shoulder", "wrist")


def original_name(stem: str) -> str:
    """``distal-humerus-fracture-1_jpg.rf.<hash>`` → ``distal-humerus-fracture-1`` (unchanged if no suffix)."""
    return _ORIGINAL_RE.sub("", stem)


def split_of_original(original: str) -> str:
    """'valid' for about ``VALID_SHARE`` of originals (stable SHA-256 rule), else 'train'."""
    return "valid" if hashlib.sha256(original.encode("utf-8")).digest()[0] < VALID_SHARE * 256 else "train"


def parse_label_file(path: Path) -> tuple[tuple[Instance, ...], str]:
    """(instances with polygons in normalised [0, 1] x/y, body part of the first region) of one label file.

    A line with fewer than 3 points or values outside [0, 1] (beyond a 1 % rounding slack)
    is skipped with a warning naming the file and line.
    """
    instances, part = [], "unknown"
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        vals = line.split()
        if not vals:
            continue
        try:
            cls, coords = int(float(vals[0])), np.array([float(v) for v in vals[1:]], np.float32)
        except ValueError:
            log.warning("%s line %d: not a YOLO segmentation line, skipped", path.name, n)
            continue
        if coords.size < 6 or coords.size % 2 or not np.all((coords >= -0.01) & (coords <= 1.01)):
            log.warning("%s line %d: not a polygon of >= 3 normalised points, skipped", path.name, n)
            continue
        poly = np.clip(coords.reshape(-1, 2), 0.0, 1.0)
        x0, y0 = poly.min(axis=0)
        x1, y1 = poly.max(axis=0)
        instances.append(Instance((poly,), (float(x0), float(y0), float(x1), float(y1))))
        if part == "unknown" and 0 <= cls < len(BODY_PARTS):
            part = BODY_PARTS[cls]
    return tuple(instances), part


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header; a file that cannot be opened gives (1, 1) and fails later, named, at decoding."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # noqa: BLE001 (the decoder reports the file when it is read)
        return 1, 1


class BoneFractureYolo8:
    """Index of the export. Reads only the label files at construction, no images.

    ``records`` gives ``fracture.dataset.Record`` objects, so the native-scale loader, the
    inference loop and the scoring take this source as they take FracAtlas: polygons and
    boxes in stored pixels, the size read from each labelled image's header (no decoding).
    """

    name = SOURCE_NAME

    def __init__(self, root: Path | str, unlabelled_as_negatives: bool = False):
        self.root = Path(root)
        if not is_yolo8_dir(self.root):
            raise DatasetError(f"{self.root}: not a BoneFractureYolo8 directory (data.yaml or train/labels not found)")
        self.unlabelled_as_negatives = unlabelled_as_negatives
        self._records = self._index()

    def _index(self) -> list[Record]:
        images = self.root / "train" / "images"
        labels = self.root / "train" / "labels"
        out, seen_valid = [], set()
        for img in sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
            label = labels / f"{img.stem}.txt"
            instances, part = parse_label_file(label) if label.is_file() else ((), "unknown")
            width = height = None
            if instances:
                width, height = _image_size(img)
                scale = np.array([width, height], np.float32)
                instances = tuple(Instance(tuple(p * scale for p in inst.polygons),
                                           (inst.box[0] * width, inst.box[1] * height, inst.box[2] * width, inst.box[3] * height))
                                  for inst in instances)
            original = original_name(img.stem)
            split = split_of_original(original)
            if split == "valid":
                if original in seen_valid:
                    continue
                seen_valid.add(original)
            out.append(Record(image_id=img.name, path=img, fractured=bool(instances), split=split, body_part=part,
                              width=width, height=height, instances=instances))
        return out

    def records(self, split: str, fractured: bool | None = None) -> list[Record]:
        """Records of ``split`` sorted by name; ``fractured`` True/False filters, None keeps both.

        Unlabelled images (empty label file) appear as negatives only when the index was built
        with ``unlabelled_as_negatives`` and ``split`` is 'train'.
        """
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        keep_negatives = self.unlabelled_as_negatives and split == "train"
        return [r for r in self._records if r.split == split and (r.fractured or keep_negatives)
                and (fractured is None or r.fractured == fractured)]
