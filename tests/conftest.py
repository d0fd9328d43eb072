"""Shared fixtures. Tests that need FracAtlas skip without it, except when REQUIRE_DATA=1 (CI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from important_variables import CONFIG, is_fracatlas_dir, resolve_data_dir


def _require(what: str, reason: str):
    if os.environ.get("REQUIRE_DATA") == "1":
        pytest.fail(f"{what} is required under CI (REQUIRE_DATA=1): {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The FracAtlas directory ($FRACATLAS_DIR, else the default locations)."""
    d = resolve_data_dir(None)
    if not is_fracatlas_dir(d):
        _require("FracAtlas", f"FracAtlas not found; set ${CONFIG.data_env_var}")
    return d


@pytest.fixture(scope="session")
def atlas(data_dir):
    from fracture.dataset import FracAtlas

    return FracAtlas(data_dir)


@pytest.fixture(scope="session")
def real_xray_paths(atlas):
    """A few real test-split X-rays: 3 fractured, 3 without fracture (all readable)."""
    frac = [r.path for r in atlas.records("test", fractured=True)[:3]]
    neg = [r.path for r in atlas.records("test", fractured=False)[:3]]
    return frac + neg


@pytest.fixture(scope="session")
def shipped_model_path():
    """Path of a shipped model file; fails (not skips) when the weights are missing."""

    def get(name: str) -> Path:
        path = CONFIG.model_path(name)
        assert path.is_file(), f"shipped model {path} missing"
        return path

    return get


@pytest.fixture(scope="session")
def predictor_factory():
    """Loads each shipped model once per test session, behind the compiled forward pass."""
    from create_segmentation_model import load_named_model
    from prediction import Predictor

    cache = {}

    def get(name: str) -> Predictor:
        if name not in cache:
            cache[name] = Predictor(load_named_model(name), name)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def yolo8_dir() -> Path:
    """The BoneFractureYolo8 directory ($BONEFRACTURE_YOLO8_DIR, else the default locations)."""
    from important_variables import is_yolo8_dir, resolve_yolo8_dir

    d = resolve_yolo8_dir(None)
    if not is_yolo8_dir(d):
        _require("BoneFractureYolo8", f"BoneFractureYolo8 not found; set ${CONFIG.yolo8_env_var}")
    return d
