"""Draws ``assets/home.png``: a stylised bone with a marked fracture (no patient data).

Run once by hand (``python assets/draw_home_picture.py``); the PNG is committed.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Circle, FancyBboxPatch, Polygon, Rectangle  # noqa: E402


def draw(out: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 6), dpi=120)
    fig.patch.set_facecolor("#05070c")
    ax.set_facecolor("#05070c")
    # A soft "film" glow behind the bone.
    yy, xx = np.mgrid[0:1:300j, 0:1:250j]
    glow = np.exp(-(((xx - 0.5) / 0.45) ** 2 + ((yy - 0.5) / 0.6) ** 2))
    ax.imshow(glow, extent=(0, 10, 0, 12), cmap="bone", alpha=0.35, vmin=0, vmax=1.6, zorder=0)
    bone = "#dfe6ee"
    # Shaft, tilted, with the two epiphyses as pairs of circles.
    ax.add_patch(FancyBboxPatch((4.2, 2.6), 1.6, 6.8, boxstyle="round,pad=0.1", fc=bone, ec="none", zorder=2))
    for cx, cy in [(4.3, 9.7), (5.7, 9.7), (4.3, 2.3), (5.7, 2.3)]:
        ax.add_patch(Circle((cx, cy), 0.95, fc=bone, ec="none", zorder=2))
    # Medullary canal, darker.
    ax.add_patch(Rectangle((4.75, 3.2), 0.5, 5.6, fc="#b9c4d0", ec="none", zorder=3))
    # The fracture line: a zigzag across the shaft.
    crack_x = np.array([4.1, 4.5, 4.8, 5.1, 5.4, 5.9])
    crack_y = np.array([6.35, 6.0, 6.3, 5.9, 6.2, 5.85])
    ax.plot(crack_x, crack_y, color="#05070c", lw=2.2, zorder=4)
    # What the app draws: semi-transparent mask, outline, numbered box.
    mask = Polygon([[4.0, 6.6], [6.0, 6.3], [6.0, 5.55], [4.0, 5.9]], closed=True, fc="#ff2a2a", alpha=0.45, ec="#ffdc00", lw=2, zorder=5)
    ax.add_patch(mask)
    ax.add_patch(Rectangle((3.8, 5.35), 2.4, 1.45, fill=False, ec="#00ffff", lw=2.2, zorder=6))
    ax.text(3.85, 6.95, " 1 ", color="#00ffff", fontsize=14, fontweight="bold", va="bottom",
            bbox=dict(fc="black", ec="none", pad=1.5), zorder=7)
    ax.text(6.4, 6.05, "score 0.87", color="#00ffff", fontsize=11, va="center", zorder=7)
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 12)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.subplots_adjust(0, 0, 1, 1)
    fig.savefig(out, facecolor=fig.get_facecolor())
    plt.close(fig)


if __name__ == "__main__":
    draw(Path(__file__).resolve().parent / "home.png")
