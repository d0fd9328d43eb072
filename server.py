"""Serving entry point: ``streamlit run server.py`` serves ``app.py`` and loads the models at server start.

``streamlit run app.py`` works too, but then the models start loading only with the
first page view. Here Streamlit's ``st.App`` lifespan hook starts the background load
(``ui.page_dashboard.model_pool``, the same cached pool the pages use) as soon as the server
starts, before any browser connects.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

import streamlit as st


@asynccontextmanager
async def lifespan(_app):
    from ui.page_dashboard import model_pool

    model_pool()  # returns at once; TensorFlow and the models load in the pool's thread
    yield


app = st.App("app.py", lifespan=lifespan)
