"""Moving between the app's pages from inside a page, without the page modules importing each other.

A page's button calls :func:`request_page` (as its ``on_click``); the page functions
registered in ``application_pages`` call :func:`follow_request` first thing on each
run and switch there. So ``application_pages`` knows the pages, and the pages know only
this module: no import cycle.
"""

from __future__ import annotations

import streamlit as st

_REQUEST = "_nav_request"


def request_page(name: str) -> None:
    """Ask to go to page ``name`` ("home", "dashboard", "models") on the next run (a widget callback)."""
    st.session_state[_REQUEST] = name


def take_request() -> str | None:
    """The page asked for since the last run (and forget it), or None."""
    return st.session_state.pop(_REQUEST, None)
