"""The FracAtlas reader: official split, the negatives rule, masks, unreadable files."""

import json
import shutil

import numpy as np
import pytest

from fracture.dataset import FracAtlas, negative_split
from important_variables import CONFIG


def test_negative_split_rule():
    assert negative_split("IMG0000010.jpg") == "test"
    assert negative_split("IMG0000021.jpg") == "valid"
    assert negative_split("IMG0000022.jpg") == "train"
    assert negative_split("IMG0004029.jpg") == "train"
    with pytest.raises(ValueError):
        negative_split("foo.jpg")


def test_official_split_sizes(atlas):
    counts = {s: len(atlas.records(s, fractured=True)) for s in ("train", "valid", "test")}
    assert counts == {"train": 574, "valid": 82, "test": 61}
    negs = sum(len(atlas.records(s, fractured=False)) for s in ("train", "valid", "test"))
    assert negs == 4083 - 717
    for r in atlas.records("test", fractured=False):
        assert int(r.image_id[3:10]) % 10 == 0


def test_every_fractured_image_has_instances_and_boxes(atlas):
    n_inst = 0
    for split in ("train", "valid", "test"):
        for r in atlas.records(split, fractured=True):
            assert r.instances, r.image_id
            n_inst += len(r.instances)
            b = r.boxes()
            assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    assert n_inst == 922


def test_mask_rasterises_polygons_inside_their_box(atlas):
    r = atlas.records("valid", fractured=True)[0]
    m = r.mask(r.height, r.width)
    assert m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1}
    ys, xs = np.nonzero(m)
    assert len(ys) > 0
    boxes = r.boxes()
    assert xs.min() >= boxes[:, 0].min() - 2 and xs.max() <= boxes[:, 2].max() + 2
    assert ys.min() >= boxes[:, 1].min() - 2 and ys.max() <= boxes[:, 3].max() + 2


def test_truncated_jpegs_are_skipped_with_a_message(atlas):
    from imaging.image_io import ImageLoadError, read_image_file

    truncated = atlas.root / "images" / "Non_fractured" / "IMG0004028.jpg"
    with pytest.raises(ImageLoadError, match="IMG0004028.jpg: truncated"):
        read_image_file(truncated)


@pytest.mark.slow
def test_native_splits_skip_all_59_truncated_files(atlas):
    from fracture.native import load_native_split

    skipped = []
    for split in ("train", "valid", "test"):
        arr = load_native_split(atlas, split)
        assert len(arr.ids) == len(arr.fractured) == len(arr.images) == len(arr.masks)
        for img, msk in zip(arr.images, arr.masks, strict=True):
            assert img.dtype == np.uint8 and msk.shape == img.shape and max(img.shape) <= CONFIG.native_long_side
        skipped += arr.skipped
        # every fractured image has fracture pixels at training scale, negatives none
        assert all(m.max() == 1 for m, f in zip(arr.masks, arr.fractured, strict=True) if f)
        assert all(m.max() == 0 for m, f in zip(arr.masks, arr.fractured, strict=True) if not f)
    assert len(skipped) == 59
    assert all("truncated" in s for s in skipped)


def test_corrupt_annotation_entries_are_skipped_and_named(data_dir, tmp_path, caplog):
    root = tmp_path / "atlas"
    shutil.copytree(data_dir, root, ignore=shutil.ignore_patterns("*.jpg", "*.txt"))
    (root / "images" / "Fractured").mkdir(parents=True, exist_ok=True)
    coco_path = root / "Annotations" / "COCO JSON" / "COCO_fracture_masks.json"
    coco = json.loads(coco_path.read_text())
    first = coco["images"][0]
    (root / "images" / "Fractured" / first["file_name"]).write_bytes(b"")
    anns = [a for a in coco["annotations"] if a["image_id"] == first["id"]]
    good = dict(anns[0])
    coco["annotations"] = [
        good,
        {"id": 9001, "image_id": first["id"], "segmentation": [[1, 2, 3, 4]], "bbox": [1, 2, 3, 4]},  # 2 points
        {"id": 9002, "image_id": 424242, "segmentation": [[1, 2, 3, 4, 5, 6]], "bbox": [0, 0, 1, 1]},  # unknown image
        {"id": 9003, "image_id": first["id"], "segmentation": "garbage", "bbox": "nope"},
    ]
    coco_path.write_text(json.dumps(coco))
    atlas = FracAtlas(root)
    rec = atlas.record(first["file_name"])
    assert len(rec.instances) == 2  # the good one + the 2-point one kept as a box
    assert len(rec.instances[0].polygons) >= 1 and rec.instances[1].polygons == ()
    joined = " | ".join(atlas.skipped_annotations)
    assert "annotation 9002" in joined and "annotation 9003" in joined
    assert "9001" in caplog.text  # the polygon with < 3 points is warned about


def test_exif_rotated_data_set_images_keep_the_annotated_pixel_grid(atlas):
    """IMG0002628.jpg carries EXIF orientation 8 (a 90° turn): its annotation is on the
    stored 373x454 grid, so the data set reader must not rotate it (users' uploads are)."""
    from imaging.image_io import read_image_file

    rec = atlas.record("IMG0002628.jpg")
    assert rec.load_pixels().shape[:2] == (rec.height, rec.width) == (454, 373)
    assert read_image_file(rec.path).pixels.shape[:2] == (373, 454)  # upright for a user
