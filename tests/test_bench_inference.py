"""The inference benchmark runs every shipped model on real X-rays at the shape its net needs.

One timed call per path on two FracAtlas test images: what is checked is that each path of
``benchmarks/bench_inference.bench_model`` runs and reports, not its speed (timings are the
benchmark's job, not a test's).
"""

from __future__ import annotations

import pytest

from benchmarks import bench_inference
from create_segmentation_model import cpu_bf16_flags
from important_variables import MODEL_NAMES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def images(data_dir):
    paths, big = bench_inference.pick_images(data_dir, 2, 1)
    assert len(paths) == 2 and len(big) == 1
    return paths, big


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_bench_model_runs_each_path(images, name):
    paths, big = images
    out = bench_inference.bench_model(name, paths, big, warmup=0, runs=1, xla=False)
    for key in ("a_naive", "b_forward", "c_end_to_end_1024px_jpeg"):
        assert out[key]["median_ms"] > 0, key
    assert out["scale"] in ("native", "fixed 256x256")
    assert out["ratio_a_over_b"] > 0 and out["ratio_a_over_c"] > 0
    # The Lite0-UNet's batch norms (the ensemble's through its Lite0-UNet member) are folded for inference;
    # the unfolded forward is timed beside it.
    assert ("b_forward_unfolded" in out) == (name in ("lite0_unet", "ensemble"))
    # On a CPU with native bf16 both precisions are timed side by side, whichever the model runs in.
    # (The ensemble may run bf16 in some members only: "mixed_bfloat16 (encoder_decoder only)".)
    assert out["precision"] in ("float32", "mixed_bfloat16") or out["precision"].startswith("mixed_bfloat16 (")
    assert ("b_forward_bf16" in out) == ("b_forward_float32" in out) == bool(cpu_bf16_flags())
