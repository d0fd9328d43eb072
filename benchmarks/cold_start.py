"""First upload after a server start: how long until the result, and when the first feedback shows.

    python benchmarks/cold_start.py [--entry server.py|app.py] [--image PATH] [--repeat N]

Starts ``streamlit run <entry>`` on a free port, opens the dashboard in headless Chromium
as soon as the server answers, uploads one image and prints, per run: seconds from the
upload to the result image, and to the first "Loading the … model" progress (None when
the model was already loaded, so no progress was needed). Every run is a fresh server.
Needs /usr/bin/chromium and Playwright (as tests/test_browser.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.app_server import streamlit_server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def one_run(entry: str, image: Path, timeout_s: float = 300.0) -> dict:
    from playwright.sync_api import sync_playwright

    with streamlit_server(entry, timeout_s=timeout_s) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(f"{server.url}/dashboard")
        page.locator("input[type=file]").wait_for(state="attached")
        t = time.monotonic()
        page.locator("input[type=file]").set_input_files(str(image))
        feedback = None
        while not page.get_by_text("U-Net, threshold").count():  # polled every 50 ms
            if feedback is None and page.get_by_text("Loading the").count():
                feedback = round(time.monotonic() - t, 2)
            if time.monotonic() - t > timeout_s:
                raise TimeoutError("no result")
            page.wait_for_timeout(50)
        result_s = round(time.monotonic() - t, 2)
        browser.close()
    return {"entry": entry, "server_up_s": round(server.up_s, 2), "upload_to_result_s": result_s,
            "upload_to_progress_s": feedback}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--entry", default="server.py", choices=("server.py", "app.py"), help="what `streamlit run` starts")
    p.add_argument("--image", default=str(ROOT / "assets" / "home.png"), help="the image to upload")
    p.add_argument("--repeat", type=int, default=1, help="fresh servers to measure")
    args = p.parse_args(argv)
    for _ in range(args.repeat):
        print(json.dumps(one_run(args.entry, Path(args.image))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
