"""The README's "Adding a method" section, run as written on the tiny test model.

The section's ```python block becomes ``mypkg/method.py`` and its ```toml block goes into that package's
``pyproject.toml``, as the README says; the package is pip-installed into a fresh folder (not into the
project's environment). The ```bash block's lines then run from the repository root with these changes only:
``pip install -e ...`` is the install above; ``inspect eval`` runs on the tiny model (``smollm2-135m``
replaced) with ``--limit 2 --max-tokens 4 -T judge=strmatch``; ``steerboard run`` gets ``--dry-run`` (the
submission suite is ~3,300 samples) and the tiny model; ``steerboard submit check`` is not run (it needs the
full suite's logs). What the README says the method does -- append the reminder to the last user message -- is
checked on the method the installed provider builds.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import run_python

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Adding a method"
BIN = Path(sys.executable).parent


def section_blocks(text: str, heading: str = HEADING) -> dict[str, str]:
    """The fenced code blocks of the README section under ``heading``, by language (the first of each).

    Raises:
        ValueError: the heading is missing, or the section has no python, toml or bash block.
    """
    start = text.find("\n" + heading + "\n")
    if start < 0:
        raise ValueError(f"README.md has no {heading!r} heading")
    body = text[start + len(heading) + 2 :]
    nxt = re.search(r"^## ", body, flags=re.M)
    body = body[: nxt.start()] if nxt else body
    blocks: dict[str, str] = {}
    for lang, code in re.findall(r"^```([a-z]+)\n(.*?)^```", body, flags=re.S | re.M):
        blocks.setdefault(lang, code)
    missing = [lang for lang in ("python", "toml", "bash") if lang not in blocks]
    if missing:
        raise ValueError(f"the README's {heading!r} section has no {', '.join(missing)} block")
    return blocks


def entry_point(toml_block: str) -> tuple[str, str, str]:
    """(method name, module, class) of the one ``steerboard.methods`` entry point the toml block declares."""
    m = re.search(r'^\[project\.entry-points\."steerboard\.methods"\]\s*\n(\w+)\s*=\s*"([\w.]+):(\w+)"',
                  toml_block, flags=re.M)
    if m is None:
        raise ValueError("the toml block declares no steerboard.methods entry point")
    return m.group(1), m.group(2), m.group(3)


def command_lines(bash_block: str) -> list[list[str]]:
    """The bash block's commands as words, comments dropped."""
    out = []
    for raw in bash_block.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            out.append(shlex.split(line))
    return out


def test_the_section_holds_a_method_its_entry_point_and_commands() -> None:
    blocks = section_blocks((ROOT / "README.md").read_text())
    name, module, cls = entry_point(blocks["toml"])
    assert re.search(rf"^class {cls}\(Method\):", blocks["python"], flags=re.M)
    assert re.search(rf'^\s+name = "{name}"$', blocks["python"], flags=re.M)  # provider name = entry-point name
    commands = command_lines(blocks["bash"])
    assert [c[:2] for c in commands] == [
        ["pip", "install"], ["inspect", "eval"], ["steerboard", "run"], ["steerboard", "submit"],
    ]
    assert f"{name}/smollm2-135m" in commands[1] and commands[2][commands[2].index("--method") + 1] == name
    with pytest.raises(ValueError, match="no 'toml' block|no toml"):
        section_blocks("x\n## Adding a method\n\n```python\npass\n```\n\n```bash\nls\n```\n## Next\n")
    with pytest.raises(ValueError, match="no '## Adding a method' heading"):
        section_blocks("# nothing here\n")


def _install(blocks: dict[str, str], module: str, dest: Path) -> Path:
    """The README's package (python block as ``<module>.py``, toml block in its pyproject), pip-installed into
    a fresh folder; returns the folder to put on PYTHONPATH."""
    pkg = module.split(".")[0]
    src = dest / "src"
    (src / pkg).mkdir(parents=True)
    (src / pkg / "__init__.py").write_text("")
    (src / (module.replace(".", "/") + ".py")).write_text(blocks["python"])
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=77"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "{pkg}"\nversion = "0.1.0"\n\n'
        f'[tool.setuptools]\npackages = ["{pkg}"]\n\n' + blocks["toml"]
    )
    target = dest / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--target", str(target), str(src)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    return target


def _as_tested(words: list[str], tiny: str, logs: Path) -> list[str] | None:
    """A bash-block command as this test runs it (see the module docstring), or None for one it does not run."""
    if words[:2] == ["inspect", "eval"]:
        out, skip = [], False
        for w in words:
            if skip:
                skip = False
            elif w == "--limit":
                skip = True
            else:
                out.append(w.replace("/smollm2-135m", f"/{tiny}") if w.endswith("/smollm2-135m") else w)
        return out + ["--limit", "2", "--max-tokens", "4", "-T", "judge=strmatch", "--display", "none",
                      "--log-dir", str(logs)]
    if words[:2] == ["steerboard", "run"]:
        out = [str(logs) if w in ("logs/", "logs") else w for w in words]
        return out + ["--dry-run", "--model", tiny]
    return None  # pip install -e (replaced by the install), submit check (needs the full suite's logs)


@pytest.mark.slow
def test_readme_method_runs_as_written_on_the_tiny_model(tiny_model_dir: str, tmp_path: Path) -> None:
    blocks = section_blocks((ROOT / "README.md").read_text())
    name, module, cls = entry_point(blocks["toml"])
    site = _install(blocks, module, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSPECT_")}
    env["PYTHONPATH"] = str(site)
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    logs = tmp_path / "logs"
    ran: dict[str, subprocess.CompletedProcess[str]] = {}
    for words in command_lines(blocks["bash"]):
        cmd = _as_tested(words, tiny_model_dir, logs)
        if cmd is None:
            continue
        res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, f"{shlex.join(cmd)}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        ran[words[0]] = res
    assert set(ran) == {"inspect", "steerboard"}

    # Inspect picked the method up through the entry point and ran it
    from inspect_ai.log import list_eval_logs, read_eval_log

    (info,) = list_eval_logs(str(logs))
    log = read_eval_log(info.name)
    assert log.status == "success" and log.eval.model == f"{name}/{tiny_model_dir}"
    assert log.samples is not None and len(log.samples) == 2
    prov = log.eval.metadata["steerboard"]
    assert prov["method"] == name

    # the suite plans the method on every task of the submission suite (a dry run prints one line per pair)
    planned = re.findall(rf"^\s*to run\s+{name}\s+\{{\}}\s+(\S+)", ran["steerboard"].stdout, flags=re.M)
    assert len(planned) >= 9 and {"xstest", "mmlu", "truthfulqa"} <= set(planned), ran["steerboard"].stdout

    # what the README says the method does: the reminder goes after the last user message, nothing else changes
    code = (
        "import json\nfrom inspect_ai.model import get_model\n"
        f"m = get_model({f'{name}/{tiny_model_dir}'!r}, memoize=False).api.method\n"
        "conv = [{'role': 'system', 'content': 'S'}, {'role': 'user', 'content': 'first'},\n"
        "        {'role': 'assistant', 'content': 'A'}, {'role': 'user', 'content': 'last'}]\n"
        "out = m.messages(conv)\n"
        "print(json.dumps([type(m).__module__, m.config.reminder, out, conv[-1]['content']]))\n"
    )
    mod, reminder, out, original_last = json.loads(run_python(code, env=env).strip().splitlines()[-1])
    assert mod == module and reminder in blocks["python"] and prov["config"]["reminder"] == reminder
    assert out == [
        {"role": "system", "content": "S"}, {"role": "user", "content": "first"},
        {"role": "assistant", "content": "A"}, {"role": "user", "content": "last\n\n" + reminder},
    ]
    assert original_last == "last"  # the caller's conversation is left as it was
