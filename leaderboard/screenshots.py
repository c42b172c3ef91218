"""Regenerate the leaderboard screenshots in ``docs/`` from a results database, in headless Chromium.

Builds the site from ``--db`` into a scratch folder, serves it on localhost, opens ``index.html`` at 1440x900 and
390x844 (mobile emulation) and saves ``leaderboard-1440.png`` and ``leaderboard-390.png``; exits 1 when the page
logs a console error. Needs Chromium and its driver (``make browser``) and selenium (``pip install
'steerboard[browser]'``)::

    python -m steerboard.leaderboard.screenshots --db results.duckdb --out docs/
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import importlib.util
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
)
SIZES = ((1440, 900, False), (390, 844, True))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return None


@contextlib.contextmanager
def serve_folder(directory: str | Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP on a free localhost port while the block runs (no request log).

    Yields:
        The base URL (``http://127.0.0.1:PORT``, no trailing slash).
    """
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(directory)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def check_browser() -> None:
    """Raise FileNotFoundError, saying how to install it, when headless Chromium, its driver or selenium is
    missing."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        raise FileNotFoundError(f"headless Chromium not found ({CHROMIUM}, {CHROMEDRIVER}): run `make browser`")
    if importlib.util.find_spec("selenium") is None:
        raise FileNotFoundError("selenium is not installed: pip install 'steerboard[browser]'")


def headless_chromium(profile: str | Path, page_load_timeout: float = 60) -> Any:
    """A selenium driver for headless Chromium at 1440x900 that keeps the browser console log.

    Args:
        profile: the browser's user-data folder (a fresh one per driver).
        page_load_timeout: seconds a page may take to load.

    Raises:
        FileNotFoundError: Chromium, its driver or selenium is missing (:func:`check_browser`).
    """
    check_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (*FLAGS, "--window-size=1440,900", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(page_load_timeout)
    return drv


def console_errors(drv: Any) -> list[dict[str, Any]]:
    """The console entries of level SEVERE or ERROR logged since the last call (reading the log empties it)."""
    return [e for e in drv.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")]


def screenshots(db: str | Path, out: str | Path, listing_path: str | None = None) -> list[str]:
    """Build the site from ``db`` and save one screenshot per size into ``out``.

    Returns:
        The console errors the pages logged (empty when clean).

    Raises:
        FileNotFoundError: Chromium, its driver or selenium is missing.
    """
    check_browser()  # before the build

    from steerboard.leaderboard.build import build_site
    from steerboard.leaderboard.listing import resolve_listing

    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="steerboard-shots-"))
    errors: list[str] = []
    try:
        build_site(db, scratch / "site", listing=resolve_listing(listing_path))
        with serve_folder(scratch / "site") as base:
            drv = headless_chromium(scratch / "profile")
            try:
                for width, height, mobile in SIZES:
                    drv.execute_cdp_cmd(
                        "Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
                    )
                    drv.get(f"{base}/index.html")
                    errors += [f"{width}px: {e.get('message')}" for e in console_errors(drv)]
                    drv.save_screenshot(str(outp / f"leaderboard-{width}.png"))
            finally:
                drv.quit()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return errors


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", default="results.duckdb", help="results database (default: results.duckdb)")
    p.add_argument("--out", default="docs", help="folder for leaderboard-1440.png and -390.png (default: docs/)")
    p.add_argument("--listing", help="task listing YAML (default: the project's tasks/listing.yaml)")
    args = p.parse_args(argv)
    try:
        errors = screenshots(args.db, args.out, args.listing)
    except (FileNotFoundError, ValueError) as ex:
        print(f"screenshots: {ex}", file=sys.stderr)
        return 2
    for e in errors:
        print(f"console error: {e}", file=sys.stderr)
    print(f"wrote {Path(args.out) / 'leaderboard-1440.png'} and {Path(args.out) / 'leaderboard-390.png'}"
          + (f"; {len(errors)} console error(s)" if errors else "; no console errors"))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
