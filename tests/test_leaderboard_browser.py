"""The built leaderboard in real headless Chromium (Debian ``chromium`` + ``chromium-driver``, via selenium).

Needs ``make browser`` (installs the two Debian packages). Screenshots go to ``tests/_screenshots/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from _helpers import synthetic_database

from steerboard.leaderboard.build import build_site, run_page_name
from steerboard.leaderboard.listing import load_listing_file
from steerboard.leaderboard.screenshots import console_errors, serve_folder
from steerboard.leaderboard.synthetic import (
    SYNTHETIC_LISTING,
    SyntheticRun,
    benchmark_runs,
)

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).parent / "_screenshots"
# Payloads that would set a sentinel global or open a dialog if any log string reached the DOM as markup.
HOSTILE_METHOD = "<script>window.__pwned=1;alert(1)</script>"
HOSTILE_TEXT = '<img src=x onerror="window.__pwned=2;alert(2)"><script>window.__pwned=3</script>'


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, hostile_run) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("browser")
    runs = benchmark_runs(3 * 12, 40)  # one model: base, prompt, an sae strength sweep, an actadd sweep
    hostile = hostile_run(HOSTILE_METHOD, HOSTILE_TEXT, n_samples=10, seed=4242, settings_key="cfg", model="model-0")
    out = _build(root, [*runs, hostile])
    import duckdb

    con = duckdb.connect(str(root / "r.duckdb"), read_only=True)
    hostile_key = con.execute("SELECT run_key FROM runs WHERE method LIKE '<script>%'").fetchone()[0]
    con.close()
    return {
        "dir": out,
        "hostile_page": run_page_name(hostile_key),
        "n_rows": 12 + 1 + 3,
    }  # measured + hostile + reported rows with values in these columns (O'Brien et al.: clamp 0, 12, 10)


def _demo_like_runs() -> list[SyntheticRun]:
    """Rows shaped like the project's demo: a control, a prompt, an SAE sweep and preset, gated variants,
    ActAdd, DINM and DPO on three tasks, plus a short XSTest-only run (different coverage)."""
    methods: list[tuple[str, dict[str, Any]]] = [
        ("base", {}),
        ("prompt", {}),
        ("sae", {"strength": 15}),
        ("sae", {"strength": 30}),
        ("sae", {"preset": "smollm2-135m"}),
        ("sae", {"preset": "smollm2-135m", "gate": "text"}),
        ("actadd", {"coefficient": 4}),
        ("actadd", {"coefficient": 4, "gate": "text"}),
        ("dinm", {}),
        ("dpo", {"beta": 0.1}),
    ]
    runs = [
        SyntheticRun(task=t, method=m, model_args=cfg, n_samples=120, seed=100 * k + j)
        for k, (m, cfg) in enumerate(methods)
        for j, t in enumerate(("xstest", "crescendo", "mmlu"))
    ]
    runs.append(
        SyntheticRun(task="xstest", method="randdir", model_args={"alpha": 6}, n_samples=12, seed=999)
    )
    return runs


def _build(root: Path, runs: list[SyntheticRun]) -> Path:
    """``runs`` ingested into ``root/r.duckdb`` under the synthetic listing (written to ``root/listing.yaml``),
    the site built into ``root/site``; returns the site folder."""
    listing_path = root / "listing.yaml"
    listing_path.write_text(yaml.safe_dump(SYNTHETIC_LISTING, sort_keys=False))
    listing = load_listing_file(listing_path)
    build_site(synthetic_database(root, runs, listing), root / "site", listing=listing)
    return root / "site"


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory, site: dict[str, Any]) -> dict[str, Path]:
    """Extra sites served beside the main one: a demo-like board, and one with no control run whose only
    strength-like config is a one-point sweep."""
    demo = _build(tmp_path_factory.mktemp("demo"), _demo_like_runs())
    lone = _build(
        tmp_path_factory.mktemp("lone"),
        [
            SyntheticRun(task=t, method="sae", model_args={"strength": 8}, n_samples=10, seed=i)
            for i, t in enumerate(("xstest", "mmlu"))
        ],
    )
    return {"demo": demo, "lone": lone}


@pytest.fixture(scope="module")
def server(site: dict[str, Any], sites: dict[str, Path]) -> Iterator[str]:
    import shutil

    for name, d in sites.items():
        shutil.copytree(d, site["dir"] / name)
    with serve_folder(site["dir"]) as base:
        yield base


def _no_alert(drv: Any) -> bool:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        _ = drv.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


def _column(drv: Any, idx: int) -> list[str]:
    from selenium.webdriver.common.by import By

    rows = drv.find_elements(By.CSS_SELECTOR, "#board tbody tr")
    return [
        r.find_elements(By.TAG_NAME, "td")[idx].get_attribute("data-sort") for r in rows if r.is_displayed()
    ]


def test_index_loads_without_console_errors_and_screenshot(
    chromium: Any, server: str, site: dict[str, Any]
) -> None:
    from selenium.webdriver.common.by import By

    chromium.get(server + "/index.html")
    assert chromium.title == "steerboard leaderboard"
    rows = chromium.find_elements(By.CSS_SELECTOR, "#board tbody tr")
    assert len(rows) == site["n_rows"]
    assert chromium.find_elements(By.CSS_SELECTOR, "svg circle")  # scatter rendered
    assert console_errors(chromium) == []
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / "leaderboard_index.png"
    assert chromium.save_screenshot(str(path)) and path.stat().st_size > 10_000


def test_clicking_a_header_sorts(chromium: Any, server: str) -> None:
    from selenium.webdriver.common.by import By

    chromium.get(server + "/index.html")
    headers = chromium.find_elements(By.CSS_SELECTOR, "#board thead th")
    idx = next(i for i, h in enumerate(headers) if "Refusal on unsafe" in h.text)
    before = _column(chromium, idx)
    headers[idx].click()
    asc = [float(x) for x in _column(chromium, idx) if x]
    assert asc == sorted(asc) and len(asc) >= 10
    assert "sort-asc" in headers[idx].get_attribute("class")
    headers[idx].click()
    desc = [float(x) for x in _column(chromium, idx) if x]
    assert desc == sorted(desc, reverse=True)
    assert sorted(before, key=str) == sorted(_column(chromium, idx), key=str)  # same rows, reordered
    # a text column sorts too
    method_idx = next(i for i, h in enumerate(headers) if h.text.strip() == "Method")
    headers[method_idx].click()
    names = [
        r.find_elements(By.TAG_NAME, "td")[method_idx].text.lower()
        for r in chromium.find_elements(By.CSS_SELECTOR, "#board tbody tr")
    ]
    assert names == sorted(names)
    assert console_errors(chromium) == []


def test_filter_box_filters(chromium: Any, server: str, site: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    chromium.get(server + "/index.html")
    box = chromium.find_element(By.ID, "filter")
    box.send_keys("actadd")
    visible = [r for r in chromium.find_elements(By.CSS_SELECTOR, "#board tbody tr") if r.is_displayed()]
    assert len(visible) == 4 and all("actadd" in r.text for r in visible)
    glance = [r for r in chromium.find_elements(By.CSS_SELECTOR, "#glance tbody tr") if r.is_displayed()]
    assert len(glance) == 4 and all("actadd" in r.text for r in glance)  # one box filters both tables
    box.clear()
    box.send_keys(" ")  # clear() does not fire 'input'; whitespace-only query shows every row
    visible = [r for r in chromium.find_elements(By.CSS_SELECTOR, "#board tbody tr") if r.is_displayed()]
    assert len(visible) == site["n_rows"]


def test_hostile_log_executes_no_script(chromium: Any, server: str, site: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    for page in ("/index.html", "/" + site["hostile_page"]):
        chromium.get(server + page)
        assert _no_alert(chromium), page
        assert chromium.execute_script("return typeof window.__pwned") == "undefined", page
        body = chromium.execute_script("return document.body.textContent")  # text nodes only, no line wraps
        # shown as text: the model string on the run page, its method part (up to the first "/") on the board
        shown = HOSTILE_METHOD if page != "/index.html" else HOSTILE_METHOD.split("/")[0]
        assert shown in body, page
        assert not chromium.find_elements(By.CSS_SELECTOR, "main img")  # the <img onerror> stayed text
    assert "<img src=x onerror=" in chromium.find_element(By.TAG_NAME, "body").text
    SCREENSHOTS.mkdir(exist_ok=True)
    chromium.save_screenshot(str(SCREENSHOTS / "leaderboard_hostile_run.png"))
    assert console_errors(chromium) == []


def test_run_page_reads(chromium: Any, server: str, site: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    chromium.get(server + "/index.html")
    link = chromium.find_element(By.CSS_SELECTOR, "#board tbody td.num a")
    link.click()
    assert "Settings that differ from the method's defaults" in chromium.find_element(By.TAG_NAME, "body").text
    assert chromium.find_elements(By.CSS_SELECTOR, ".sample")
    chromium.save_screenshot(str(SCREENSHOTS / "leaderboard_run.png"))
    assert console_errors(chromium) == []


def _viewport(drv: Any, width: int, height: int, mobile: bool) -> None:
    drv.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )


_GEOMETRY = """
const vw = window.innerWidth, vh = window.innerHeight;
const page = document.documentElement.scrollWidth;
const row = document.querySelector('#glance tbody tr');
const cells = Array.from(row.cells).slice(1, 4).map(c => c.getBoundingClientRect());
const plot = document.querySelector('svg.plot').getBoundingClientRect();
const labels = document.querySelectorAll('svg.plot text.pt-label').length;
return {vw: vw, vh: vh, page: page, cells: cells.map(r => [r.left, r.right, r.top, r.bottom]),
        plotTop: plot.top, plotLeft: plot.left, plotRight: plot.right, labels: labels};
"""


@pytest.mark.parametrize(("width", "height", "mobile"), [(1440, 900, False), (390, 844, True)])
def test_index_at_a_glance_at_both_widths(
    chromium: Any, server: str, width: int, height: int, mobile: bool
) -> None:
    """First screen: every row's safety, over-refusal and capability scores with intervals; the plot near the
    top with labelled points; no sideways panning of the page."""
    from selenium.webdriver.common.by import By

    _viewport(chromium, width, height, mobile)
    try:
        chromium.get(server + "/demo/index.html")
        g = chromium.execute_script(_GEOMETRY)
        assert g["vw"] == width and g["page"] <= width, g  # the page itself never scrolls sideways
        for left, right, _top, bottom in g["cells"]:  # the three scores of the first row, on screen
            assert 0 <= left and right <= width and bottom <= height, g
        head = [th.text for th in chromium.find_elements(By.CSS_SELECTOR, "#glance thead th")][1:4]
        assert [h.split()[0] for h in head] == ["Safety", "Over-", "Capability"] or "Capa" in head[2]
        first = chromium.find_elements(By.CSS_SELECTOR, "#glance tbody tr")[0].text
        assert first.count("\u2013") >= 3  # each score with its interval (low-high)
        assert "partial" not in first and "below chance" not in first
        assert g["labels"] >= 11  # one label per plotted point, drawn without hovering
        assert 0 <= g["plotLeft"] and g["plotRight"] <= width + 1, g
        if not mobile:
            assert g["plotTop"] < height, g  # the plot is on the first screen
        assert console_errors(chromium) == []
        SCREENSHOTS.mkdir(exist_ok=True)
        chromium.save_screenshot(str(SCREENSHOTS / f"leaderboard-{width}.png"))
        # run pages on a phone: the page does not pan; the metrics table scrolls inside its own box
        chromium.get(
            server
            + "/demo/"
            + chromium.find_element(By.CSS_SELECTOR, "#board tbody td.num a")
            .get_attribute("href")
            .rsplit("/", 1)[-1]
        )
        page = chromium.execute_script("return document.documentElement.scrollWidth")
        assert page <= width
        box = chromium.execute_script(
            "const w = document.querySelector('table.metrics').parentElement;"
            "return [getComputedStyle(w).overflowX, w.getBoundingClientRect().right];"
        )
        assert box[0] == "auto" and box[1] <= width  # the table scrolls inside its own box
        heads = [th.text for th in chromium.find_elements(By.CSS_SELECTOR, "table.metrics thead th")]
        assert heads[1:8] == ["Value", "95 % CI", "Δ vs base", "Δ 95 % CI", "p", "p (Holm)", "MDE (80 % power)"]
        assert console_errors(chromium) == []
        chromium.save_screenshot(str(SCREENSHOTS / f"leaderboard-run-{width}.png"))
    finally:
        chromium.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_no_control_and_one_point_sweep_site_has_no_console_errors(chromium: Any, server: str) -> None:
    from selenium.webdriver.common.by import By

    chromium.get(server + "/lone/index.html")
    assert len(chromium.find_elements(By.CSS_SELECTOR, "#glance tbody tr")) == 1
    assert "No method has been run at several strengths yet." in chromium.find_element(By.TAG_NAME, "body").text
    assert console_errors(chromium) == []
    chromium.find_element(By.CSS_SELECTOR, "#board tbody td.num a").click()
    assert "Settings that differ from the method's defaults" in chromium.find_element(By.TAG_NAME, "body").text
    assert console_errors(chromium) == []


def test_no_base_one_point_sweep_and_unrecorded_site_has_no_console_errors(
    chromium: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A board with no base/ run, one point of a strength sweep and a log without recorded settings."""
    from selenium.webdriver.common.by import By

    site = _build(
        tmp_path_factory.mktemp("nobase"),
        [
            SyntheticRun(task="xstest", method="sae", model_args={"strength": 4}, seed=1),
            SyntheticRun(task="xstest", method="prompt", seed=2, precision=None),
        ],
    )
    with serve_folder(site) as base:
        chromium.get(base + "/index.html")
        body = chromium.find_element(By.TAG_NAME, "body").text
        assert "settings not recorded" in body
        assert console_errors(chromium) == []
        hrefs = [a.get_attribute("href") for a in chromium.find_elements(By.CSS_SELECTOR, "#board tbody td.cfg a")]
        assert len(hrefs) == 2
        for href in hrefs:  # each row's short config links its full settings
            chromium.get(href)
            text = chromium.find_element(By.TAG_NAME, "body").text
            assert "Settings that differ from the method's defaults" in text and "no deltas" in text
            assert console_errors(chromium) == []
