"""Pure helpers behind the pages (no Streamlit, no models)."""

from __future__ import annotations

import json

import cv2
import numpy as np

from imaging.rendering import encode_png
from ui import support as sup


def test_escape_markdown_makes_names_inert():
    name = "![x](http://evil/p.png) <b>**bold**</b>\nsecond line.jpg"
    out = sup.escape_markdown(name)
    assert "\n" not in out
    for token in ("![", "](", "<b>", "**"):
        assert token not in out
    # Every special character is still there, only escaped.
    assert out.replace("\\", "") == " ".join(name.split())


def test_safe_stem_strips_paths_and_odd_characters():
    assert sup.safe_stem("IMG0000019.jpg") == "IMG0000019"
    assert sup.safe_stem("../../etc/passwd") == "passwd"
    assert sup.safe_stem("C:\\Users\\x\\Röntgen Bild (1).png") == "Rontgen_Bild_1"
    assert sup.safe_stem(".hidden") == "hidden"
    assert sup.safe_stem("\x00\n/..") == "xray"
    assert len(sup.safe_stem("a" * 500 + ".png")) <= 60


def test_download_names():
    names = sup.download_names("my x-ray.dcm", "unet")
    assert names == {"png": "my_x-ray_unet_annotated.png", "json": "my_x-ray_unet_findings.json",
                     "mask": "my_x-ray_unet_mask.png"}


def test_encode_png_roundtrip_keeps_colours_and_size():
    rgb = np.zeros((7, 11, 3), np.uint8)
    rgb[..., 0] = 200  # red stays red (RGB in, RGB meaning out)
    decoded = cv2.imdecode(np.frombuffer(encode_png(rgb), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (7, 11, 3) and decoded[0, 0, 2] == 200 and decoded[0, 0, 0] == 0
    mask = np.full((5, 4), 255, np.uint8)
    assert cv2.imdecode(np.frombuffer(encode_png(mask), np.uint8), cv2.IMREAD_UNCHANGED).shape == (5, 4)


def test_fit_for_display_only_downscales():
    big = np.zeros((3000, 1500, 3), np.uint8)
    assert sup.fit_for_display(big).shape == (1024, 512, 3)
    small = np.zeros((300, 200), np.uint8)
    assert sup.fit_for_display(small) is small


def test_findings_json_is_utf8_json():
    data = {"file": "ä.png", "model": "unet", "findings": [{"box": [1, 2, 3, 4], "score": 0.5, "area_px": 4}]}
    assert json.loads(sup.findings_json(data).decode("utf-8")) == data


def test_read_metrics_absent_or_broken(tmp_path):
    from inference.model_card import read_metrics

    assert read_metrics(tmp_path / "missing.json") is None
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert read_metrics(bad) is None


def test_the_findings_table_says_what_its_score_is():
    from inference.findings import FindingRule

    assert "mean fracture score" in sup.finding_score_caption(FindingRule(score="mean"))
    assert "highest fracture score" in sup.finding_score_caption(FindingRule())
    assert "highest fracture score" in sup.finding_score_caption(None)
