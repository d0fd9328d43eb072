"""Applies ``style/style.css`` for what the theme in ``.streamlit/config.toml`` cannot do."""

from __future__ import annotations

import logging
from pathlib import Path

import streamlit as st

from important_variables import CONFIG

log = logging.getLogger(__name__)


def add_style(path: Path | None = None) -> None:
    """Read the stylesheet now (not at import) and inject it; a missing file only logs."""
    path = path or CONFIG.style_dir / "style.css"
    try:
        css = path.read_text(encoding="utf-8")
    except OSError as exc:
        # The app works without its cosmetics; say why it looks plain instead of failing.
        log.warning("stylesheet %s not applied: %s", path, exc)
        return
    # st.html sends a style-only block without an empty element; our own file, no user input.
    st.html(f"<style>{css}</style>")
