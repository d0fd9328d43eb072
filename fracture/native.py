"""FracAtlas at native pixel scale: decoded splits, fracture-centred crops, padding.

Why native scale: all 143 valid/test fractured images are 373x454 or 454x373, so
squeezing them to 256x256 shrinks the median fracture box to 15x15 px. Here an image
keeps its stored grid unless its long side exceeds ``CONFIG.native_long_side``, in
which case it is brought down to that (the same rule :func:`native_scale` applies to
uploads at prediction time, so train and test scale match). Training uses
``CONFIG.input_size`` crops of these images; prediction runs the fully convolutional
net on the whole image padded to a multiple of ``CONFIG.pad_multiple``.
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
from imaging.image_io import ImageLoadError, native_scale, to_model_gray, to_native_gray
from important_variables import CONFIG

log = logging.getLogger(__name__)


@dataclass
class NativeSplit:
    """One split decoded at training scale.

    images[i]: (h_i, w_i) uint8 grey; masks[i]: (h_i, w_i) uint8 in {0, 1};
    scales[i]: factor from the stored grid to this one; fractured: (N,) bool;
    sources: (N,) str, the data source of each image (None: one source).
    """

    images: list[np.ndarray]
    masks: list[np.ndarray]
    ids: list[str]
    fractured: np.ndarray
    scales: np.ndarray
    skipped: list[str]
    sources: np.ndarray | None = None


def concat_splits(parts: dict[str, NativeSplit]) -> NativeSplit:
    """One training split from several sources (``{source name: split}``), ``sources`` filled in."""
    out = NativeSplit([], [], [], np.zeros(0, bool), np.zeros(0), [], np.zeros(0, dtype=object))
    for name, sp in parts.items():
        out.images += sp.images
        out.masks += sp.masks
        out.ids += [f"{name}/{i}" for i in sp.ids]
        out.skipped += sp.skipped
        out.fractured = np.concatenate([out.fractured, sp.fractured])
        out.scales = np.concatenate([out.scales, sp.scales])
        out.sources = np.concatenate([out.sources, np.full(len(sp.ids), name, dtype=object)])
    return out


def _decode(rec: Record) -> tuple[np.ndarray, np.ndarray, float]:
    gray = to_model_gray(rec.load_pixels())
    h, w = gray.shape
    mask = rec.mask(h, w)
    s = native_scale(h, w)
    g8 = np.clip(gray * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if s < 1.0:
        g8 = to_native_gray(g8)
        mask = cv2.resize(mask, (g8.shape[1], g8.shape[0]), interpolation=cv2.INTER_NEAREST)
    return g8, mask, s


def _pack(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    shapes = np.array([a.shape for a in arrays], np.int64).reshape(-1, 2)
    flat = np.concatenate([a.ravel() for a in arrays]) if arrays else np.zeros(0, np.uint8)
    return flat, shapes


def _unpack(flat: np.ndarray, shapes: np.ndarray) -> list[np.ndarray]:
    out, pos = [], 0
    for h, w in shapes:
        out.append(flat[pos : pos + h * w].reshape(h, w))
        pos += h * w
    return out


def load_native_split(ds: FracAtlas, split: str, limit: int | None = None, use_cache: bool = True) -> NativeSplit:
    """Decode every image of ``split`` at training scale, skipping unreadable ones (logged, counted).

    Cached in ``.cache/`` as uint8 (never committed). ``limit`` keeps the first
    ``limit`` fractured and ``limit`` negative images (tests; not cached).
    """
    frac, neg = ds.records(split, fractured=True), ds.records(split, fractured=False)
    if limit is not None:
        frac, neg = frac[:limit], neg[:limit]
        use_cache = False
    records = frac + neg
    key = hashlib.sha256(f"{Path(ds.root).resolve()}|{CONFIG.native_long_side}|native-v1|".encode() + "|".join(r.image_id for r in records).encode())
    cache_file = CONFIG.cache_dir / f"{getattr(ds, 'name', 'FracAtlas').lower()}_{split}_native_{key.hexdigest()[:16]}.npz"
    if use_cache and cache_file.is_file():
        z = np.load(cache_file, allow_pickle=False)
        out = NativeSplit(_unpack(z["images"], z["shapes"]), _unpack(z["masks"], z["shapes"]), list(z["ids"]),
                          z["fractured"], z["scales"], list(z["skipped"]))
        log.info("%s: %d native-scale images from cache (%d unreadable skipped)", split, len(out.ids), len(out.skipped))
        return out

    def work(rec):
        try:
            return rec, _decode(rec), None
        except ImageLoadError as exc:
            return rec, None, str(exc)

    imgs, masks, ids, fractured, scales, skipped = [], [], [], [], [], []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for rec, out, err in pool.map(work, records):
            if err is not None:
                log.warning("skipping unreadable image: %s", err)
                skipped.append(err)
                continue
            imgs.append(out[0])
            masks.append(out[1])
            scales.append(out[2])
            ids.append(rec.image_id)
            fractured.append(rec.fractured)
    log.info("%s: %d images decoded at native scale, %d unreadable skipped", split, len(ids), len(skipped))
    result = NativeSplit(imgs, masks, ids, np.array(fractured, bool), np.array(scales, np.float64), skipped)
    if use_cache:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        flat_i, shapes = _pack(imgs)
        flat_m, _ = _pack(masks)
        # Per process: runs started side by side decode the same split and must not share a partial file.
        tmp = cache_file.with_name(f"{cache_file.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, images=flat_i, masks=flat_m, shapes=shapes, ids=np.array(ids), fractured=result.fractured,
                 scales=result.scales, skipped=np.array(skipped, dtype=str))
        os.replace(tmp, cache_file)
    return result


#: A fracture-holding crop keeps its fracture pixel at least this far from its border.
FRACTURE_EDGE_PX = 24


@dataclass(frozen=True)
class CropAugment:
    """Augmentation of a training crop (the defaults are the recipe's: flips, ±12°, ±10 % scale, contrast and
    brightness jitter; gamma, blur and noise off). Intensities act on [0, 1] grey values; ``blur_sigma`` in pixels
    of the crop, ``noise_std`` in grey-value units."""

    max_rotation_deg: float = 12.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    hflip_p: float = 0.5
    vflip_p: float = 0.5
    contrast_range: tuple[float, float] = (0.8, 1.2)
    brightness_range: tuple[float, float] = (-0.08, 0.08)
    gamma_range: tuple[float, float] = (1.0, 1.0)
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    noise_p: float = 0.0
    noise_std: tuple[float, float] = (0.005, 0.03)


#: Training augmentations by name (``train.py --augment``). ``strong`` widens the geometry and adds what differs
#: between X-ray sources: pixel spacing (scale), exposure and display curve (gamma, contrast), detector
#: sharpness and noise (blur, Gaussian noise).
AUGMENTS: dict[str, CropAugment] = {
    "recipe": CropAugment(),
    "strong": CropAugment(max_rotation_deg=20.0, scale_range=(0.75, 1.33), contrast_range=(0.7, 1.3),
                          brightness_range=(-0.1, 0.1), gamma_range=(0.6, 1.6), blur_p=0.25, noise_p=0.25),
}


def fracture_pixels(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ys, xs) int arrays of the fracture pixels of ``mask`` (computed once per image by :class:`CropSampler`)."""
    return np.nonzero(mask)


def sample_crop(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, crop: int, centre_on_fracture: bool,
                aug: CropAugment | None, pixels: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One ``crop`` x ``crop`` training view of a native-scale image.

    image (h, w) uint8, mask (h, w) uint8. Returns (crop, crop) float32 in [0, 1] and
    (crop, crop) uint8 mask. With ``centre_on_fracture`` (and fracture pixels present)
    the crop holds a random fracture pixel at a uniform position at least
    ``FRACTURE_EDGE_PX`` from its border, else the crop is uniform over the image.
    Outside the image is black (as the zero padding at prediction time). ``pixels``:
    :func:`fracture_pixels` of ``mask`` when the caller has them already.
    """
    h, w = image.shape
    half = crop / 2.0
    ys, xs = pixels if pixels is not None else (fracture_pixels(mask) if centre_on_fracture else ((), ()))
    if centre_on_fracture and len(ys):
        k = rng.integers(len(ys))
        # Anywhere in the crop, not near its centre: a fracture always near the
        # centre teaches a position prior that whole-image prediction does not have
        # (the first epochs of the run marked bone everywhere).
        j = max(half - FRACTURE_EDGE_PX, 0.0)
        cx, cy = xs[k] + rng.uniform(-j, j), ys[k] + rng.uniform(-j, j)
    else:
        cx = rng.uniform(half, w - half) if w > crop else w / 2.0
        cy = rng.uniform(half, h - half) if h > crop else h / 2.0
    angle = rng.uniform(-aug.max_rotation_deg, aug.max_rotation_deg) if aug else 0.0
    scale = rng.uniform(*aug.scale_range) if aug else 1.0
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), angle, scale)
    m[:, 2] += (half - cx, half - cy)
    img = cv2.warpAffine(image, m, (crop, crop), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    msk = cv2.warpAffine(mask, m, (crop, crop), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    img = img.astype(np.float32) * np.float32(1 / 255)
    if aug:
        if rng.random() < aug.hflip_p:
            img, msk = img[:, ::-1], msk[:, ::-1]
        if rng.random() < aug.vflip_p:
            img, msk = img[::-1], msk[::-1]
        c, b = rng.uniform(*aug.contrast_range), rng.uniform(*aug.brightness_range)
        mean = float(img.mean())
        img = np.clip((img - mean) * c + mean + b, 0.0, 1.0)
        img = _source_jitter(img, rng, aug)
    return np.ascontiguousarray(img), np.ascontiguousarray(msk)


def _source_jitter(img: np.ndarray, rng: np.random.Generator, aug: CropAugment) -> np.ndarray:
    """Gamma, blur and noise of ``aug`` on a (crop, crop) float32 [0, 1] image (a flipped view is fine). Each draws
    from ``rng`` only when it is switched on, so the recipe's augmentation draws the same crops as before these
    existed, and without copying the crop."""
    if aug.gamma_range != (1.0, 1.0):
        img = np.power(img, np.float32(rng.uniform(*aug.gamma_range)), dtype=np.float32)
    if aug.blur_p and rng.random() < aug.blur_p:
        img = cv2.GaussianBlur(np.ascontiguousarray(img), (0, 0), float(rng.uniform(*aug.blur_sigma)))
    if aug.noise_p and rng.random() < aug.noise_p:
        noise = rng.normal(0.0, rng.uniform(*aug.noise_std), img.shape).astype(np.float32)
        img = np.clip(img + noise, 0.0, 1.0)
    return img


def source_share_table(names: list[str], named: dict[str, float]) -> dict[str, float]:
    """Share of the fracture-holding crops per source: those in ``named`` (each in [0, 1], summing to at most 1)
    get theirs, the others split the rest equally. Raises ValueError on a share out of range or a name not in ``names``."""
    unknown = sorted(set(named) - set(names))
    if unknown:
        raise ValueError(f"no training source named {', '.join(unknown)} (have {', '.join(names)})")
    if any(not 0.0 <= v <= 1.0 for v in named.values()) or sum(named.values()) > 1.0 + 1e-9:
        raise ValueError(f"source shares must lie in [0, 1] and sum to at most 1: {named}")
    rest = [n for n in names if n not in named]
    left = max(1.0 - sum(named.values()), 0.0)
    return {n: named.get(n, left / len(rest) if rest else 0.0) for n in names}


class CropSampler:
    """Training batches of a split: the 50/50 sampler of the recipe, one batch per call.

    A sample is a fracture-holding crop of a random fractured image with probability
    ``fractured_share``, else a random crop of a random negative image. Stateless per
    call (the caller passes the generator), so several threads may draw batches at once.
    """

    def __init__(self, split: NativeSplit, crop: int = CONFIG.input_size, fractured_share: float = 0.5,
                 aug: CropAugment | None = CropAugment(), source_shares: dict[str, float] | None = None):
        self.split, self.crop, self.fractured_share, self.aug = split, crop, fractured_share, aug
        self.frac = np.flatnonzero(split.fractured)
        self.neg = np.flatnonzero(~split.fractured)
        self._pixels = {int(i): fracture_pixels(split.masks[i]) for i in self.frac}
        # Several sources: each gives the same share of the fracture-holding crops (or the share
        # ``source_shares`` names for it; the unnamed ones split the rest), so the larger one (with its
        # augmented copies) does not drown the other; negatives stay uniform.
        self.frac_p = None
        if split.sources is not None and len(self.frac) and len(set(split.sources[self.frac])) > 1:
            src = split.sources[self.frac]
            counts = {s: int((src == s).sum()) for s in set(src)}
            shares = source_share_table(sorted(counts), source_shares or {})
            p = np.array([shares[s] / counts[s] for s in src])
            self.frac_p = p / p.sum()

    def batch(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """x (B, crop, crop, 3) float32 in [0, 1] (grey replicated), y (B, crop, crop, 2) float32 one-hot."""
        c, ch = self.crop, CONFIG.fracture_channel
        x = np.empty((batch_size, c, c, CONFIG.input_channels), np.float32)
        y = np.zeros((batch_size, c, c, CONFIG.num_classes), np.float32)
        for b in range(batch_size):
            use_frac = len(self.frac) and (not len(self.neg) or rng.random() < self.fractured_share)
            i = int(rng.choice(self.frac, p=self.frac_p) if use_frac else rng.choice(self.neg))
            g, m = sample_crop(self.split.images[i], self.split.masks[i], rng, c, bool(use_frac), self.aug,
                               self._pixels.get(i, ((), ())))
            x[b] = g[..., None]
            y[b, ..., ch] = m
        y[..., 1 - ch] = 1.0 - y[..., ch]
        return x, y


def crop_batches(split: NativeSplit, batch_size: int, seed: int, start: int, crop: int = CONFIG.input_size,
                 fractured_share: float = 0.5, workers: int | None = None, source_shares: dict[str, float] | None = None,
                 aug: CropAugment | None = CropAugment()):
    """Endless ``keras.utils.PyDataset`` of :meth:`CropSampler.batch` batches (any Keras backend).

    Batch ``i`` is drawn with the generator seeded by (seed, start, i): reproducible with
    any number of worker threads, and a run resumed at another ``start`` epoch draws new
    crops instead of replaying the first ones. ``workers`` threads (default: the CPU count;
    OpenCV releases the GIL in the warps).
    """
    import keras

    sampler = CropSampler(split, crop, fractured_share, aug=aug, source_shares=source_shares)
    n_workers = workers or os.cpu_count() or 2

    class CropBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=n_workers, use_multiprocessing=False, max_queue_size=4 * n_workers)

        @property
        def num_batches(self):
            return None  # endless: fit's steps_per_epoch ends an epoch

        def __getitem__(self, index):
            return sampler.batch(np.random.default_rng([seed, start, int(index)]), batch_size)

    return CropBatches()
