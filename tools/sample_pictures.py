"""Write pictures that are not X-rays into a folder, to measure the "unlike the training images" check.

    python tools/sample_pictures.py --out DIR [--synthetic-only]

- scikit-image's bundled sample pictures (photos, drawings, text, micrographs, an
  astronomy image; ``skimage.data``, only the files shipped inside the package, nothing is
  downloaded), when scikit-image is installed (``pip install scikit-image``);
- always: 24 synthetic pictures made here (seeded): smooth gradients, noise textures,
  coloured shapes, line drawings, text on paper, checkerboards and a photo-like blurred
  scene, at sizes between 300 and 640 px.

Then: ``python tools/fit_ood.py --model unet --check pictures=DIR ...``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

#: skimage.data pictures bundled with the package (no download), by their loader name.
SKIMAGE_PICTURES = ("astronaut", "brick", "camera", "cat", "cell", "checkerboard", "chelsea", "clock", "coffee", "coins",
                    "colorwheel", "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo",
                    "microaneurysms", "moon", "page", "retina", "rocket", "text")


def skimage_pictures() -> dict[str, np.ndarray]:
    """{name: RGB or grey uint8} of the bundled scikit-image pictures; {} without scikit-image."""
    try:
        from skimage import data
    except ImportError:
        return {}
    out = {}
    for name in SKIMAGE_PICTURES:
        loader = getattr(data, name, None)
        if loader is None:
            continue
        try:
            img = np.asarray(loader())
        except Exception:  # a picture that would need a download: left out
            continue
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        if img.dtype != np.uint8:
            img = cv2.normalize(img.astype(np.float64), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
        if img.ndim == 3 and img.shape[2] == 4:
            img = img[..., :3]
        out[f"skimage_{name}"] = img
    return out


def synthetic_pictures(seed: int = 0) -> dict[str, np.ndarray]:
    """24 RGB uint8 pictures that are plainly not radiographs (seeded, no files read)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(24):
        h, w = int(rng.integers(300, 641)), int(rng.integers(300, 641))
        kind = i % 6
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        if kind == 0:  # colour gradient
            img = np.stack([xx / w, yy / h, 1 - xx / w], -1) * 255
        elif kind == 1:  # noise texture
            img = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), float(rng.uniform(1, 6))) * 255
        elif kind == 2:  # coloured shapes
            img = np.full((h, w, 3), rng.integers(0, 256, 3), np.uint8)
            for _ in range(12):
                c = tuple(int(v) for v in rng.integers(0, 256, 3))
                cv2.circle(img, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(10, 90)), c, -1)
                cv2.rectangle(img, tuple(int(v) for v in rng.integers(0, min(h, w), 2)),
                              tuple(int(v) for v in rng.integers(0, min(h, w), 2)), c, -1)
        elif kind == 3:  # line drawing on white
            img = np.full((h, w, 3), 255, np.uint8)
            for _ in range(40):
                cv2.line(img, tuple(int(v) for v in rng.integers(0, min(h, w), 2)),
                         tuple(int(v) for v in rng.integers(0, min(h, w), 2)), (0, 0, 0), int(rng.integers(1, 4)))
        elif kind == 4:  # text on paper
            img = np.full((h, w, 3), (235, 230, 215), np.uint8)
            for row in range(20, h - 10, 28):
                cv2.putText(img, "the quick brown fox jumps over", (10, row), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (20, 20, 20), 1,
                            cv2.LINE_AA)
        else:  # photo-like: sky, ground, blurred objects
            img = np.zeros((h, w, 3), np.uint8)
            img[: h // 2] = (135, 180, 235)
            img[h // 2 :] = (70, 120, 50)
            for _ in range(6):
                c = tuple(int(v) for v in rng.integers(0, 256, 3))
                cv2.ellipse(img, (int(rng.integers(0, w)), int(rng.integers(h // 3, h))), (int(rng.integers(20, 80)),
                            int(rng.integers(20, 80))), 0, 0, 360, c, -1)
            img = cv2.GaussianBlur(img, (0, 0), 2.0).astype(np.float32) + rng.normal(0, 6, img.shape)
        if kind == 1 and i % 12 == 1:  # a checkerboard instead of every other texture
            img = (((yy // 32 + xx // 32) % 2) * 255)[..., None].repeat(3, -1)
        out[f"synthetic_{i:02d}_{('gradient', 'texture', 'shapes', 'drawing', 'text', 'photo')[kind]}"] = np.clip(
            img, 0, 255).astype(np.uint8)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder to write the PNGs into")
    p.add_argument("--synthetic-only", action="store_true", help="leave scikit-image's pictures out")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pictures = {} if args.synthetic_only else skimage_pictures()
    n_sk = len(pictures)
    pictures.update(synthetic_pictures())
    for name, img in pictures.items():
        bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
        cv2.imwrite(str(out / f"{name}.png"), bgr)
    print(f"{len(pictures)} pictures in {out}: {n_sk} from scikit-image, {len(pictures) - n_sk} synthetic")
    return 0


if __name__ == "__main__":
    sys.exit(main())
