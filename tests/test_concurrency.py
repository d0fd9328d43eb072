"""One shared Predictor used by 8 threads at once gives the serial results."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from imaging.image_io import read_image_file
from prediction import predict_image

pytestmark = pytest.mark.slow  # 8 threads x 25 full predictions

THREADS, PER_THREAD = 8, 25


def test_shared_predictor_8_threads_x_25(predictor_factory, real_xray_paths):
    pred = predictor_factory("unet")
    images = [read_image_file(p).pixels for p in real_xray_paths]
    serial = [predict_image(pred, img, 0.5) for img in images]

    def worker(t: int):
        out = []
        for k in range(PER_THREAD):
            i = (t + k) % len(images)  # threads hit different images at the same moment
            out.append((i, predict_image(pred, images[i], 0.5)))
        return out

    with ThreadPoolExecutor(THREADS) as pool:
        runs = [r for f in [pool.submit(worker, t) for t in range(THREADS)] for r in f.result()]

    assert len(runs) == THREADS * PER_THREAD
    for i, res in runs:
        ref = serial[i]
        assert np.array_equal(res.prob, ref.prob), f"image {i}: probabilities differ from the serial run"
        assert res.findings == ref.findings
