"""Pure helpers behind the Streamlit pages: no Streamlit, no disk writes.

Kept apart from ``application_pages.py`` so that the UI stays thin and these can
be unit-tested without a running app. Everything works on bytes and arrays in
memory; uploads are never written anywhere.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping

import cv2
import numpy as np

from important_variables import CONFIG

#: Longest side, in pixels, of images sent to the browser. Results are computed and
#: downloaded at full resolution; only the on-screen copy is reduced.
DISPLAY_MAX_SIDE = 1024

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def content_hash(data: bytes) -> str:
    """SHA-256 hex of an upload's bytes: the key of its cached probability maps."""
    return hashlib.sha256(data).hexdigest()


def escape_markdown(text: str) -> str:
    """Make user text (file names, messages quoting them) inert in Streamlit markdown.

    Streamlit renders st.error/st.subheader text as markdown; a file called
    ``![x](http://host/pixel)`` would otherwise fetch an image, ``<b>`` could be read as
    markup. Backslash-escaping every markdown/HTML-significant character shows the
    text literally. Newlines are flattened so one name stays one line.
    """
    flat = " ".join(str(text).split())
    return _MARKDOWN_SPECIAL.sub(r"\\\1", flat)


def safe_stem(file_name: str, max_len: int = 60) -> str:
    """A download-safe base name from an uploaded file's name.

    Drops any directory part and the extension, folds accents to ASCII and keeps
    only ``[A-Za-z0-9._-]``, so the name cannot carry a path, a control character or
    a leading dot into the user's download folder. Never empty.
    """
    base = re.split(r"[\\/]", str(file_name))[-1]
    stem = base.rsplit(".", 1)[0] if "." in base.strip(".") else base
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_stem).strip("._-")
    return cleaned[:max_len] or "xray"


def download_names(file_name: str, model: str) -> dict[str, str]:
    """File names of the three downloads for one upload and model."""
    stem = f"{safe_stem(file_name)}_{safe_stem(model)}"
    return {"png": f"{stem}_annotated.png", "json": f"{stem}_findings.json", "mask": f"{stem}_mask.png"}


def findings_json(result_dict: Mapping) -> bytes:
    """The findings download: ``result_to_dict`` output as UTF-8 JSON."""
    return json.dumps(result_dict, indent=2, ensure_ascii=False).encode("utf-8")


def fit_for_display(image: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """Downscale (never upscale) so the longer side is at most ``max_side``."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


#: Column names of the findings table: the value that made a region a finding, and the one findings are ranked by.
PEAK_COLUMN = "peak score (reached the threshold)"
RANK_COLUMNS = {"mean": "ranking score (region mean)", "max": "ranking score (region peak)"}


def findings_rows(findings, rule=None) -> list[dict]:
    """Rows of the findings table, one per finding: number, box, the region's peak score (what reached
    the threshold), the score findings are ranked by (``rule.score``: region mean or peak) and area."""
    rank = RANK_COLUMNS["mean" if rule is not None and rule.score == "mean" else "max"]
    return [
        {
            "#": f.index,
            "box (x0, y0, x1, y1)": ", ".join(str(v) for v in f.box),
            PEAK_COLUMN: round(float(f.score if f.peak is None else f.peak), 3),
            rank: round(float(f.score), 3),
            "area (px)": int(f.area_px),
        }
        for f in findings
    ]


def finding_score_caption(rule) -> str:
    """What the findings table's two scores are, for ``rule`` (a ``inference.findings.FindingRule`` or None)."""
    if rule is not None and rule.score == "mean":
        return ("Peak score: the highest fracture score in the region; a region becomes a finding when it reaches the "
                "threshold. Ranking score: the mean fracture score over the region (so it can be below the threshold); "
                "findings are numbered by it.")
    return ("Peak score: the highest fracture score in the region; a region becomes a finding when it reaches the "
            "threshold. Findings are ranked and numbered by it.")


def load_upload(name: str, data: bytes):
    """Decode one upload from memory (``imaging.image_io.load_image``) after the app's size limit.

    Returns an ``imaging.image_io.LoadedImage``; raises ``ImageLoadError`` (one line naming the file).
    """
    from imaging.image_io import ImageLoadError, load_image

    if len(data) > CONFIG.max_upload_mb * 1024 * 1024:
        raise ImageLoadError(f"{name}: file is {len(data) / 2**20:.1f} MB, over the {CONFIG.max_upload_mb} MB limit")
    return load_image(data, name)
