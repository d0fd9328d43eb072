"""Streamlit entry point: ``streamlit run app.py``.

Routes to the three pages of ``application_pages`` with ``st.navigation``; the
pages themselves hold all the UI.
"""

import streamlit as st

from add_style import add_style
from application_pages import pages

st.set_page_config(page_title="Bone-fracture localization", page_icon=":material/radiology:", layout="wide")
add_style()
st.navigation(list(pages().values())).run()
