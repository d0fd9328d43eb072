"""Streamlit's own settings agree with the app's (one limit, one number)."""

from __future__ import annotations

import tomllib

from important_variables import CONFIG

STREAMLIT_CONFIG = CONFIG.repo_root / ".streamlit" / "config.toml"


def test_streamlit_upload_limit_is_the_apps_limit():
    # Streamlit refuses bigger uploads before the app sees them, the app refuses bigger
    # files itself: if the two differed, one limit would be dead and the help text wrong.
    with open(STREAMLIT_CONFIG, "rb") as fh:
        server = tomllib.load(fh)["server"]
    assert server["maxUploadSize"] == CONFIG.max_upload_mb, (
        f"{STREAMLIT_CONFIG}: server.maxUploadSize = {server['maxUploadSize']} MB but "
        f"important_variables.CONFIG.max_upload_mb = {CONFIG.max_upload_mb} MB; change both together"
    )
