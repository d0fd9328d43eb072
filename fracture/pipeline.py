"""Model-ready arrays and the tf.data training / evaluation pipelines.

Images are decoded once per split, converted to the model's grey view
(:func:`image_io.to_model_gray`), resized to 256x256 (masks with nearest
neighbour) and cached as uint8 arrays in ``.cache/`` (never committed), so an
epoch costs only augmentation and the model's own work.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fracture.dataset import FracAtlas, Record
from image_io import ImageLoadError, resize_for_model, to_model_gray
from important_variables import CONFIG

log = logging.getLogger(__name__)


@dataclass
class SplitArrays:
    """Decoded split at model size.

    images: (N, S, S) uint8 grey; masks: (N, S, S) uint8 in {0, 1};
    ids: N image ids; fractured: (N,) bool; skipped: one message per unreadable file.
    """

    images: np.ndarray
    masks: np.ndarray
    ids: list[str]
    fractured: np.ndarray
    skipped: list[str]

    def subset(self, idx) -> SplitArrays:
        idx = np.asarray(idx, dtype=np.int64)
        return SplitArrays(self.images[idx], self.masks[idx], [self.ids[i] for i in idx], self.fractured[idx], self.skipped)


def decode_record(rec: Record, size: int = CONFIG.input_size) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 (S, S), mask uint8 (S, S)) for one record; raises ImageLoadError."""
    gray = to_model_gray(rec.load_pixels())
    h, w = gray.shape
    img = np.clip(resize_for_model(gray, size) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    mask = rec.mask(h, w)
    mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
    return img, mask


def _cache_key(root: Path, records: list[Record], size: int) -> str:
    h = hashlib.sha256(f"{root.resolve()}|{size}|v2".encode())
    for r in records:
        h.update(r.image_id.encode())
    return h.hexdigest()[:16]


def load_split_arrays(
    ds: FracAtlas,
    split: str,
    size: int = CONFIG.input_size,
    limit: int | None = None,
    use_cache: bool = True,
) -> SplitArrays:
    """Decode every image of ``split`` (fractured + negatives), skipping unreadable ones.

    Each skipped file gets one log line; the count is logged at the end.
    ``limit`` keeps only the first ``limit`` fractured and ``limit`` negative
    images (for tests and smoke runs; not cached).
    """
    frac = ds.records(split, fractured=True)
    neg = ds.records(split, fractured=False)
    if limit is not None:
        frac, neg = frac[:limit], neg[:limit]
        use_cache = False
    records = frac + neg
    cache_file = CONFIG.cache_dir / f"fracatlas_{split}_{size}_{_cache_key(ds.root, records, size)}.npz"
    if use_cache and cache_file.is_file():
        z = np.load(cache_file, allow_pickle=False)
        arrays = SplitArrays(z["images"], z["masks"], list(z["ids"]), z["fractured"], list(z["skipped"]))
        log.info("%s: %d images from cache %s (%d unreadable skipped)", split, len(arrays.ids), cache_file.name, len(arrays.skipped))
        return arrays

    def work(rec):
        try:
            return rec, decode_record(rec, size), None
        except ImageLoadError as exc:
            return rec, None, str(exc)

    images, masks, ids, fractured, skipped = [], [], [], [], []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for rec, out, err in pool.map(work, records):
            if err is not None:
                log.warning("skipping unreadable image: %s", err)
                skipped.append(err)
                continue
            images.append(out[0])
            masks.append(out[1])
            ids.append(rec.image_id)
            fractured.append(rec.fractured)
    log.info("%s: %d images decoded, %d unreadable skipped", split, len(ids), len(skipped))
    arrays = SplitArrays(
        np.stack(images) if images else np.zeros((0, size, size), np.uint8),
        np.stack(masks) if masks else np.zeros((0, size, size), np.uint8),
        ids,
        np.array(fractured, bool),
        skipped,
    )
    if use_cache:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp.npz")
        np.savez(tmp, images=arrays.images, masks=arrays.masks, ids=np.array(ids), fractured=arrays.fractured, skipped=np.array(skipped, dtype=str))
        os.replace(tmp, cache_file)
    return arrays


# --------------------------------------------------------------------------- augmentation
@dataclass(frozen=True)
class AugmentConfig:
    max_rotation_deg: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    hflip_p: float = 0.5
    vflip_p: float = 0.25
    contrast_range: tuple[float, float] = (0.8, 1.2)
    brightness_range: tuple[float, float] = (-0.1, 0.1)


def sample_view(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    crop: int,
    focus_fracture: bool,
    aug: AugmentConfig | None,
) -> tuple[np.ndarray, np.ndarray]:
    """One training view: an affine-augmented crop (or full frame when crop == 0).

    image: (S, S) uint8; mask: (S, S) uint8. Returns float32 (out, out) in [0, 1]
    and uint8 (out, out) mask, out = crop or S. With ``focus_fracture`` and a
    non-empty mask, the crop is centred near a random fracture pixel.
    """
    size = image.shape[0]
    out = crop or size
    half = out / 2.0
    if crop and focus_fracture and mask.any():
        ys, xs = np.nonzero(mask)
        k = rng.integers(len(ys))
        jitter = rng.uniform(-out / 4, out / 4, size=2)
        cx = float(np.clip(xs[k] + jitter[0], half, size - half))
        cy = float(np.clip(ys[k] + jitter[1], half, size - half))
    elif crop:
        cx, cy = rng.uniform(half, size - half, size=2)
    else:
        cx = cy = size / 2.0
    angle = rng.uniform(-aug.max_rotation_deg, aug.max_rotation_deg) if aug else 0.0
    scale = rng.uniform(*aug.scale_range) if aug else 1.0
    m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
    m[:, 2] += (half - cx, half - cy)
    img = cv2.warpAffine(image, m, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    msk = cv2.warpAffine(mask, m, (out, out), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    img = img.astype(np.float32) / 255.0
    if aug:
        if rng.random() < aug.hflip_p:
            img, msk = img[:, ::-1], msk[:, ::-1]
        if rng.random() < aug.vflip_p:
            img, msk = img[::-1], msk[::-1]
        c = rng.uniform(*aug.contrast_range)
        b = rng.uniform(*aug.brightness_range)
        mean = float(img.mean())
        img = np.clip((img - mean) * c + mean + b, 0.0, 1.0)
    return np.ascontiguousarray(img), np.ascontiguousarray(msk)


def to_model_arrays(gray: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(…, H, W) grey float → (…, H, W, 3) float32 input; mask → (…, H, W, 2) one-hot float32."""
    x = np.repeat(gray[..., None].astype(np.float32), CONFIG.input_channels, axis=-1)
    m = mask.astype(np.float32)
    y = np.stack([1.0 - m, m], axis=-1)
    return x, y


def epoch_indices(arrays: SplitArrays, neg_per_epoch: int, rng: np.random.Generator) -> np.ndarray:
    """All fractured images plus ``neg_per_epoch`` random negatives, shuffled."""
    frac = np.flatnonzero(arrays.fractured)
    neg = np.flatnonzero(~arrays.fractured)
    n_neg = min(neg_per_epoch, len(neg))
    chosen = np.concatenate([frac, rng.choice(neg, n_neg, replace=False) if n_neg else neg[:0]])
    rng.shuffle(chosen)
    return chosen


def make_train_dataset(
    arrays: SplitArrays,
    *,
    crop: int,
    batch_size: int,
    neg_per_epoch: int,
    focus_p: float,
    seed: int,
    epoch: int,
    aug: AugmentConfig | None = AugmentConfig(),
    steps: int | None = None,
):
    """tf.data pipeline of one epoch: (x (B, c, c, 3) float32, y (B, c, c, 2) float32).

    The order and the augmentation depend only on (seed, epoch), so a resumed run
    sees the same data as an uninterrupted one.
    """
    import tensorflow as tf

    rng = np.random.default_rng([seed, epoch])
    order = epoch_indices(arrays, neg_per_epoch, rng)
    if steps is not None:
        order = order[: steps * batch_size]
    out = crop or arrays.images.shape[1]

    def gen():
        for i in order:
            focus = rng.random() < focus_p
            g, m = sample_view(arrays.images[i], arrays.masks[i], rng, crop, focus, aug)
            yield to_model_arrays(g, m)

    sig = (
        tf.TensorSpec((out, out, CONFIG.input_channels), tf.float32),
        tf.TensorSpec((out, out, CONFIG.num_classes), tf.float32),
    )
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig)
    return ds.batch(batch_size, drop_remainder=False).prefetch(tf.data.AUTOTUNE)


def full_frame_arrays(arrays: SplitArrays) -> tuple[np.ndarray, np.ndarray]:
    """Whole split as model input / one-hot target: (N, S, S, 3), (N, S, S, 2) float32."""
    return to_model_arrays(arrays.images.astype(np.float32) / 255.0, arrays.masks)
