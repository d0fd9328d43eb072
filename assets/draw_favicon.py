"""Draws ``assets/favicon.png``, the page icon: a bone with an amber fracture line (no patient data).

Run once by hand (``python assets/draw_favicon.py``); the PNG is committed. The app
serves it itself, so no page load asks an outside host for an icon.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

SIZE = 64


def draw(out: Path) -> None:
    img = np.zeros((SIZE, SIZE, 4), np.uint8)  # BGRA, transparent
    cv2.rectangle(img, (2, 2), (SIZE - 3, SIZE - 3), (48, 34, 27, 255), -1, cv2.LINE_AA)  # dark tile (#1b2230)
    bone = (238, 230, 223, 255)
    cv2.line(img, (18, 46), (46, 18), bone, 9, cv2.LINE_AA)  # shaft
    for cx, cy in ((14, 44), (20, 50), (44, 14), (50, 20)):  # the two ends
        cv2.circle(img, (cx, cy), 6, bone, -1, cv2.LINE_AA)
    cv2.polylines(img, [np.array([[27, 29], [32, 33], [30, 36], [36, 38]], np.int32)], False,
                  (46, 184, 245, 255), 3, cv2.LINE_AA)  # the fracture, in the theme's amber (#f5b82e)
    cv2.imwrite(str(out), img)


if __name__ == "__main__":
    draw(Path(__file__).resolve().parent / "favicon.png")
