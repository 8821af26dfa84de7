"""Screenshot of a sweep in the MLflow UI (docs/mlflow_ui_sweep.png), from a real store.

    python docs/screenshot_mlflow.py sqlite:///runs/mlflow.db docs/mlflow_ui_sweep.png

Starts `mlflow ui` on a free port on 127.0.0.1, opens the experiment in headless Chromium
(Debian's /usr/bin/chromium, driven by Playwright), expands the newest sweep's parent run so its
children show, and saves the page. Needs `pip install playwright` and `apt-get install chromium`;
not a dependency of expkit.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

from mlflow.tracking import MlflowClient


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(uri: str, out: str) -> None:
    from playwright.sync_api import sync_playwright

    experiment = MlflowClient(uri).get_experiment_by_name("expkit")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync", "--no-first-run"],
            )  # fmt: skip
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            page.goto(f"{base}/#/experiments/{experiment.experiment_id}/runs")
            page.wait_for_timeout(6000)
            close = page.locator("button[aria-label='Close']")
            if close.count():  # the assistant side panel
                close.first.click()
                page.wait_for_timeout(500)
            # the newest parent run's "+" (the run name cell's first button) shows its children
            page.locator("button[data-component-id*='runnamecellrenderer']").first.click()
            page.wait_for_timeout(2000)
            header = page.locator(".ag-header-cell", has_text="Run Name").first
            box = header.bounding_box()
            if box:  # widen the run name column (drag its right edge) so the names read whole
                x, y = box["x"] + box["width"] - 2, box["y"] + box["height"] / 2
                page.mouse.move(x - 20, y)
                page.wait_for_timeout(300)
                page.mouse.move(x, y)
                page.wait_for_timeout(300)
                page.mouse.down()
                for dx in range(0, 340, 20):
                    page.mouse.move(x + dx, y)
                    page.wait_for_timeout(30)
                page.mouse.up()
                page.wait_for_timeout(1000)
            page.screenshot(path=out, full_page=False)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
