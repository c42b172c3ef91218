"""The README's "one evaluation" commands, run as written (with small limits) in a fresh folder, then a site built.

Which commands: the first fenced ``bash`` block after the line ``<!-- readme-test: one-evaluation -->`` in
README.md; without that marker, the first fenced block under the heading "## Run one evaluation". Each line
is run in a shell from a fresh copy of the repository's tracked files (with this checkout's ``.venv``), after
these changes only: ``inspect eval`` lines get ``--limit 2 --max-tokens 8`` (replacing their own ``--limit``),
``inspect view`` is skipped (it serves a web page until stopped) and ``. .venv/bin/activate`` is kept. The
logs they write are ingested and a site is built from them; every run must appear in it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- readme-test: one-evaluation -->"
HEADING = "## Run one evaluation"
LIMIT = 2
MAX_TOKENS = 8


def readme_block(text: str) -> list[str]:
    """The command lines of the README's marked block (or the "Run one evaluation" block), comments dropped.

    Raises:
        ValueError: no marker/heading, or no fenced block after it.
    """
    start = text.find(MARKER)
    if start < 0:
        start = text.find(HEADING)
    if start < 0:
        raise ValueError(f"README.md has neither {MARKER!r} nor a {HEADING!r} heading")
    m = re.search(r"^```[a-z]*\n(.*?)^```", text[start:], flags=re.S | re.M)
    if m is None:
        raise ValueError("no fenced code block after the README marker")
    lines = []
    for raw in m.group(1).splitlines():
        line = raw.split(" #", 1)[0].strip() if " #" in raw else raw.strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def small(line: str) -> str | None:
    """The line as the test runs it (see the module docstring), or None to skip it."""
    words = shlex.split(line)
    if words[:2] == ["inspect", "view"]:
        return None
    if words[:2] == ["inspect", "eval"]:
        out, skip = [], False
        for w in words:
            if skip:
                skip = False
                continue
            if w == "--limit":
                skip = True
                continue
            if w.startswith("--limit="):
                continue
            out.append(w)
        out += ["--limit", str(LIMIT), "--max-tokens", str(MAX_TOKENS), "--display", "none"]
        return shlex.join(out)
    return line


def test_readme_block_is_found_and_rewritten() -> None:
    text = "intro\n## Run one evaluation\n\n```bash\n. .venv/bin/activate\ninspect eval t.py --limit 20  # c\n" \
        "inspect view   # browse\n```\n"
    lines = readme_block(text)
    assert lines == [". .venv/bin/activate", "inspect eval t.py --limit 20", "inspect view"]
    assert small(lines[1]) == "inspect eval t.py --limit 2 --max-tokens 8 --display none"
    assert small(lines[2]) is None
    marked = f"{MARKER}\n```bash\ninspect eval a.py\n```\n" + text
    assert readme_block(marked) == ["inspect eval a.py"]
    with pytest.raises(ValueError, match="neither"):
        readme_block("no commands here")


def _fresh_copy(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    (dest / ".venv").symlink_to(ROOT / ".venv")


@pytest.mark.integration
@pytest.mark.slow
def test_readme_one_evaluation_commands_run_and_build_a_site(tmp_path: Path) -> None:
    if not (ROOT / ".venv" / "bin" / "inspect").exists():
        pytest.fail("no .venv in the checkout: run `make setup` first")
    lines = readme_block((ROOT / "README.md").read_text())
    evals = [small(x) for x in lines if x.startswith("inspect eval")]
    assert evals, "the README block holds no `inspect eval` command"
    repo = tmp_path / "clone"
    _fresh_copy(repo)
    script = "set -e\n" + "\n".join(s for s in map(small, lines) if s is not None) + "\n"
    script += "steerboard ingest --logs logs --db results.duckdb\nsteerboard build --db results.duckdb --out site\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSPECT_")}
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '')}"
    res = subprocess.run(["bash", "-c", script], cwd=repo, env=env, capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, f"{script}\n--- stdout\n{res.stdout[-4000:]}\n--- stderr\n{res.stderr[-4000:]}"
    logs = sorted((repo / "logs").glob("*.eval"))
    assert len(logs) == len(evals)
    index = (repo / "site" / "index.html").read_text()
    for cmd in evals:
        words = shlex.split(cmd)
        method = words[words.index("--model") + 1].split("/")[0]
        assert method in index, method
    assert len(list((repo / "site").rglob("*.html"))) > len(evals)  # index + one page per run
