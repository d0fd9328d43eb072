"""The second training source (BoneFractureYolo8): label parsing, the split by original name,
masks at the decoded size, and the source-balanced crop sampler."""

import numpy as np
import pytest

from fracture.bone_fracture_yolo8 import (
    VALID_SHARE,
    BoneFractureYolo8,
    original_name,
    parse_label_file,
    split_of_original,
)


def test_original_name_strips_the_export_suffix():
    assert original_name("distal-humerus-fracture-1_jpg.rf.234153519323ba2b9aa2e603b0a43771") == "distal-humerus-fracture-1"
    assert original_name("image1_141_png.rf.19b1953e56b0ea23673af26baabb7fca") == "image1_141"
    assert original_name("a_jpeg.rf.0f") == "a"
    assert original_name("plain-name") == "plain-name"


def test_split_rule_is_stable_and_near_its_share():
    names = [f"xray-{i}" for i in range(4000)]
    valid = [n for n in names if split_of_original(n) == "valid"]
    assert valid == [n for n in names if split_of_original(n) == "valid"]  # deterministic
    assert abs(len(valid) / len(names) - VALID_SHARE) < 0.02


def test_label_lines_become_normalised_polygons_and_bad_lines_are_named(tmp_path, caplog):
    f = tmp_path / "x.txt"
    f.write_text("2 0.1 0.2 0.3 0.2 0.3 0.4\n\n5 0.5 0.5 0.6\nfoo bar\n3 0.1 0.1 1.5 0.1 0.2 0.2\n")
    instances, part = parse_label_file(f)
    assert part == "forearm" and len(instances) == 1
    np.testing.assert_allclose(instances[0].polygons[0], [[0.1, 0.2], [0.3, 0.2], [0.3, 0.4]], atol=1e-6)
    assert instances[0].box == pytest.approx((0.1, 0.2, 0.3, 0.4))
    assert sum("x.txt line" in r.getMessage() for r in caplog.records) == 3


def _fake_export(root, originals):
    """A tiny export: each original with two augmented copies; 'neg*' originals have empty labels."""
    import cv2

    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "labels").mkdir(parents=True)
    (root / "data.yaml").write_text("nc: 7\n")
    for o in originals:
        for h in ("aa", "bb"):
            stem = f"{o}_jpg.rf.{h}"
            cv2.imwrite(str(root / "train" / "images" / f"{stem}.jpg"), np.full((40, 80), 100, np.uint8))
            label = "" if o.startswith("neg") else "0 0.25 0.25 0.75 0.25 0.75 0.75 0.25 0.75\n"
            (root / "train" / "labels" / f"{stem}.txt").write_text(label)


def test_the_index_splits_by_original_and_keeps_unverified_negatives_out(tmp_path):
    originals = [f"frac-{i}" for i in range(30)] + ["neg-1", "neg-2"]
    _fake_export(tmp_path, originals)
    ds = BoneFractureYolo8(tmp_path)
    train, valid = ds.records("train"), ds.records("valid")
    assert {original_name(r.path.stem) for r in train}.isdisjoint({original_name(r.path.stem) for r in valid})
    assert len({original_name(r.path.stem) for r in valid}) == len(valid)  # one copy per original in valid
    assert all(r.fractured for r in train + valid)  # empty labels are not verified negatives
    assert len(train) == 2 * sum(split_of_original(o) == "train" for o in originals if o.startswith("frac"))
    with_neg = BoneFractureYolo8(tmp_path, unlabelled_as_negatives=True)
    n_neg = sum(split_of_original(o) == "train" for o in ("neg-1", "neg-2"))
    assert len(with_neg.records("train", fractured=False)) == 2 * n_neg
    assert with_neg.records("valid", fractured=False) == []
    rec = train[0]
    assert (rec.width, rec.height) == (80, 40)
    mask = rec.mask(40, 80)
    assert mask.sum() == pytest.approx(0.5 * 80 * 0.5 * 40, rel=0.15)
    assert mask[20, 40] == 1 and mask[2, 2] == 0
    np.testing.assert_allclose(rec.boxes(), [[20, 10, 60, 30]], atol=1e-4)


def test_the_real_export_split(yolo8_dir):
    ds = BoneFractureYolo8(yolo8_dir)
    train, valid = ds.records("train"), ds.records("valid")
    assert len(train) + len(valid) > 1000 and len(valid) > 50
    assert {original_name(r.path.stem) for r in train}.isdisjoint({original_name(r.path.stem) for r in valid})
    rec = valid[0]
    pixels = rec.load_pixels()
    m = rec.mask(*pixels.shape[:2])
    assert m.any()
    ys, xs = np.nonzero(m)
    x0, y0, x1, y1 = rec.boxes()[0]
    assert x0 - 1 <= xs.min() and xs.max() <= x1 + 1 and y0 - 1 <= ys.min() and ys.max() <= y1 + 1


def _two_source_split():
    """Source A: 2 fractured + 10 negative dark images; source B: 40 fractured bright ones."""
    from fracture.native import NativeSplit, concat_splits

    def split(n_frac, n_neg, value):
        imgs = [np.full((64, 64), value, np.uint8) for _ in range(n_frac + n_neg)]
        masks = [np.pad(np.ones((8, 8), np.uint8), 28) if i < n_frac else np.zeros((64, 64), np.uint8) for i in range(n_frac + n_neg)]
        return NativeSplit(imgs, masks, [f"i{i}" for i in range(len(imgs))], np.arange(len(imgs)) < n_frac,
                           np.ones(len(imgs)), [])

    return concat_splits({"A": split(2, 10, 50), "B": split(40, 0, 200)})


def _share_from_a(sampler) -> float:
    x, _ = sampler.batch(np.random.default_rng(0), 400)
    return float(np.mean(x[:, 16, 16, 0] < 0.5))  # A's images are dark, B's bright


def test_the_sampler_gives_each_source_half_of_the_fracture_crops():
    from fracture.native import CropSampler

    merged = _two_source_split()
    assert list(merged.ids[:2]) == ["A/i0", "A/i1"] and merged.sources[-1] == "B"
    assert 0.4 < _share_from_a(CropSampler(merged, crop=32, fractured_share=1.0, aug=None)) < 0.6  # unbalanced: 2 / 42


def test_the_sampler_draws_the_named_share_of_fracture_crops_from_a_source():
    from fracture.native import CropSampler, source_share_table

    merged = _two_source_split()
    assert 0.69 < _share_from_a(CropSampler(merged, crop=32, fractured_share=1.0, aug=None, source_shares={"A": 0.75})) < 0.81
    assert _share_from_a(CropSampler(merged, crop=32, fractured_share=1.0, aug=None, source_shares={"A": 0.0})) == 0.0
    assert source_share_table(["A", "B", "C"], {"A": 0.5}) == {"A": 0.5, "B": 0.25, "C": 0.25}
    with pytest.raises(ValueError, match="no training source named D"):
        source_share_table(["A", "B"], {"D": 0.5})
    with pytest.raises(ValueError, match="sum to at most 1"):
        source_share_table(["A", "B"], {"A": 0.7, "B": 0.6})
