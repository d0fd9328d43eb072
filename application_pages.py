"""The app's three pages: Home here, Dashboard in ``page_dashboard``, Models in ``page_models``.

Thin UI only: each ``*_ui()`` helper draws widgets and returns what the user chose;
decoding is in ``image_io``, prediction and drawing in ``prediction``, and the small
pure helpers in ``ui.support``. Uploads stay in memory (Streamlit keeps them in
RAM, we decode from bytes and never write a file).

Nothing runs at import: Streamlit calls the page functions on each rerun.
"""

from __future__ import annotations

import streamlit as st

from important_variables import CONFIG
from ui import page_dashboard, page_models
from ui.nav import take_request
from ui.text import CREDIT, DISCLAIMER, HOME_SCOPE, PRIVACY


def pages() -> dict[str, st.Page]:
    """The app's pages, keyed by short name (built on demand, not at import)."""
    return {
        "home": st.Page(home_page, title="Home", icon=":material/home:", url_path="home", default=True),
        "dashboard": st.Page(dashboard_page, title="Dashboard", icon=":material/radiology:", url_path="dashboard"),
        "models": st.Page(models_page, title="Models", icon=":material/query_stats:", url_path="models"),
    }


def _follow_request() -> None:
    """Switch to the page a button asked for (``ui.nav.request_page``), if any."""
    target = take_request()
    if target in ("home", "dashboard", "models"):
        st.switch_page(pages()[target])


def dashboard_page() -> None:
    _follow_request()
    page_dashboard.dashboard_page()


def models_page() -> None:
    _follow_request()
    page_models.models_page()


def home_page() -> None:
    _follow_request()
    st.title("Bone-fracture localization")
    text, picture = st.columns([3, 2], gap="large")
    with text:
        st.markdown(
            "Upload an X-ray, pick one of three small segmentation models or their ensemble (or compare them all), "
            "and get the image back with the regions that look like a fracture marked: an outline, numbered boxes "
            "and a score for each finding; a *borderline* note when a region came close to the "
            "threshold; or, when nothing reaches it, *no finding at the threshold* with how often the model "
            "misses a fracture there: never an all-clear."
        )
        st.markdown(HOME_SCOPE)
        st.warning(DISCLAIMER, icon=":material/medical_information:")
        st.success(PRIVACY, icon=":material/lock:")
        go_dashboard, go_models = st.columns(2)
        if go_dashboard.button("Open the dashboard", key="home_to_dashboard", type="primary", icon=":material/upload:"):
            st.switch_page(pages()["dashboard"])
        if go_models.button("About the models", key="home_to_models", icon=":material/query_stats:"):
            st.switch_page(pages()["models"])
    with picture:
        st.image(str(CONFIG.assets_dir / "home.png"), caption="Illustration (drawn, not a patient image)")
    st.caption(CREDIT)
