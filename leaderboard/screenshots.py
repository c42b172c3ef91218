"""Regenerate the leaderboard screenshots in ``docs/`` from a results database, in headless Chromium.

Builds the site from ``--db`` into a scratch folder, serves it on localhost, opens ``index.html`` at 1440x900 and
390x844 (mobile emulation) and saves ``leaderboard-1440.png`` and ``leaderboard-390.png``; exits 1 when the page
logs a console error. Needs Chromium and its driver (``make browser``) and selenium (``pip install
'steerboard[browser]'``)::

    python -m steerboard.leaderboard.screenshots --db results.duckdb --out docs/
"""

from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import sys
import tempfile
import threading
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


def screenshots(db: str | Path, out: str | Path, listing_path: str | None = None) -> list[str]:
    """Build the site from ``db`` and save one screenshot per size into ``out``.

    Returns:
        The console errors the pages logged (empty when clean).

    Raises:
        FileNotFoundError: Chromium or its driver is missing.
    """
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        raise FileNotFoundError(f"headless Chromium not found ({CHROMIUM}, {CHROMEDRIVER}): run `make browser`")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as ex:
        raise FileNotFoundError("selenium is not installed: pip install 'steerboard[browser]'") from ex

    from steerboard.leaderboard.build import build_site
    from steerboard.leaderboard.listing import resolve_listing

    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="steerboard-shots-"))
    errors: list[str] = []
    httpd = None
    drv = None
    try:
        build_site(db, scratch / "site", listing=resolve_listing(listing_path))
        handler = functools.partial(_Quiet, directory=str(scratch / "site"))
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in (*FLAGS, "--window-size=1440,900", f"--user-data-dir={scratch / 'profile'}"):
            opts.add_argument(flag)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        drv.set_page_load_timeout(60)
        url = f"http://127.0.0.1:{httpd.server_address[1]}/index.html"
        for width, height, mobile in SIZES:
            drv.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
            )
            drv.get(url)
            errors += [
                f"{width}px: {e.get('message')}" for e in drv.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")
            ]
            drv.save_screenshot(str(outp / f"leaderboard-{width}.png"))
    finally:
        if drv is not None:
            drv.quit()
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
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
