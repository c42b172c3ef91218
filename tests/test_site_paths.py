"""The built site holds no absolute local path: every output file (pages, data, scripts, styles) is searched for
the repository root, the working and home folders, the build's own folders and any ``/tmp/``, ``/home/``,
``/root/`` or ``/work/`` path, after a build from logs whose settings and model names carry such paths."""

from __future__ import annotations

import os
import re
from pathlib import Path

from _helpers import synthetic_database

from steerboard.leaderboard.build import build_site
from steerboard.leaderboard.listing import parse_listing
from steerboard.leaderboard.synthetic import SYNTHETIC_LISTING, SyntheticRun

ROOT = Path(__file__).resolve().parents[1]
# an absolute path starting at one of these folders, not part of a URL or a longer path
LOCAL_PATH = re.compile(r"(?<![\w.:/~-])/(?:tmp|home|root|work)/")


def _runs(tmp: Path) -> list[SyntheticRun]:
    home = Path.home()
    settings = {
        "base": {},
        "sae": {"strength": 4, "sae_path": f"{ROOT}/methods/artifacts/sae.safetensors"},
        "actadd": {"vectors_file": f"{home}/.cache/steerboard/actadd/directions.pt"},
        "prompt": {"system_prompt_file": "/root/prompts/safety.txt", "pairs_file": f"{tmp}/pairs.jsonl"},
    }
    runs = []
    for i, (method, cfg) in enumerate(settings.items()):
        for j, task in enumerate(("xstest", "crescendo", "mmlu")):
            task_args = {"data_file": f"{os.getcwd()}/data/{task}.jsonl"} if method == "prompt" else {}
            runs.append(SyntheticRun(task=task, method=method, model_args=cfg, n_samples=60, seed=10 * i + j,
                                     task_args=task_args))
    # Inspect's own provider on local model folders: no steerboard record, the model named by its path
    for k, model in enumerate((f"{ROOT}/models/SmolLM2-135M-Instruct", "/home/someone/models/Tiny-Llama")):
        runs += [SyntheticRun(task=t, method="hf", model=model, n_samples=60, seed=100 + 10 * k + j, precision=None)
                 for j, t in enumerate(("xstest", "crescendo", "mmlu"))]
    return runs


def test_no_output_file_of_the_site_holds_a_local_path(tmp_path: Path) -> None:
    listing = parse_listing(SYNTHETIC_LISTING)
    site = tmp_path / "site"
    build_site(synthetic_database(tmp_path, _runs(tmp_path), listing), site, listing=listing)

    files = [f for f in site.rglob("*") if f.is_file()]
    assert len(files) > 10  # index, one page per run, assets
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "Tiny-Llama" in index and "SmolLM2-135M-Instruct" in index  # the path-named models are on the board
    # the path-bearing settings are on the site (so the search below has something to find), shortened
    every = "".join(f.read_text(encoding="utf-8", errors="replace") for f in files)
    for name in ("sae.safetensors", "directions.pt", "safety.txt", "pairs.jsonl", "xstest.jsonl"):
        assert name in every, name
    needles = {str(ROOT), os.getcwd(), str(Path.home()), str(tmp_path), str(tmp_path / "logs")} - {"/"}
    leaks = []
    for f in files:
        text = f.read_text(encoding="utf-8", errors="replace")
        leaks += [(f.name, n) for n in sorted(needles) if n in text]
        leaks += [(f.name, text[max(0, m.start() - 40) : m.end() + 40]) for m in LOCAL_PATH.finditer(text)]
    assert leaks == []


def test_the_path_pattern_finds_what_it_must() -> None:
    """The search above is only as good as its pattern: it catches local paths, not URLs or relative paths."""
    for text in ('"/tmp/x.eval"', "model /home/me/m", "at /root/.cache/a", "(/work/main/logs/a.eval)"):
        assert LOCAL_PATH.search(text), text
    for text in ("https://example.org/tmp/x", "runs/tmp/a.html", "~/home/x", "./root/y"):
        assert LOCAL_PATH.search(text) is None, text
