"""Streamlit entry point: ``streamlit run app.py``.

Routes to the three pages of ``application_pages`` with ``st.navigation``; the
pages themselves hold all the UI. The first run of the process starts loading both
models in the background (``ui.page_dashboard.model_pool``), so they are ready by the
time a user has picked a file.
"""

import streamlit as st

from add_style import add_style
from application_pages import pages
from important_variables import CONFIG
from ui.page_dashboard import model_pool

# The page icon is served by the app itself (no outside host is asked for a favicon).
st.set_page_config(page_title="Bone-fracture localization", page_icon=str(CONFIG.assets_dir / "favicon.png"), layout="wide")
add_style()
model_pool()
st.navigation(list(pages().values())).run()
