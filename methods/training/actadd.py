"""``steerboard actadd fit``: fit the ActAdd directions and choose (source, layer, coefficient) on the dev split.

The runtime (:class:`steerboard.methods.actadd.ActAddMethod`) loads the directions file and preset this writes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from steerboard.methods.actadd import (
    ARTIFACT_DIR,
    EMBEDDED_MODEL_NAMES,
    PRESET_DIR,
    SOURCES,
    ActAddSteerer,
    fit_directions,
    load_directions,
    save_directions,
)


def fit_and_choose(
    model: str = "smollm2-135m",
    *,
    layers: list[int] | None = None,
    fractions: list[float] | None = None,
    sources: list[str] | None = None,
    n_harmful: int = 24,
    n_benign: int = 24,
    max_tokens: int = 32,
    judge: str = "embed",
    overrefusal_weight: float = 0.5,
    out: Path | None = None,
    artifact_out: Path | None = None,
    reuse_directions: bool = False,
) -> dict[str, Any]:
    """Fit both directions, choose (source, layer, coefficient) on the dev split, write a preset.

    Coefficients are ``fraction x mean residual norm`` at the layer. Score = dev harmful refusal
    - ``overrefusal_weight`` x dev benign refusal - degenerate share.
    """
    from tqdm.auto import tqdm

    from steerboard.engine import Engine
    from steerboard.methods import fitdata
    from steerboard.methods.steering import gated_intervention as gi
    from steerboard.methods.training.gates import screen

    engine = Engine.load(model)
    n_layers = len(engine.decoder_layers())
    t0 = time.perf_counter()
    is_embedded = model in EMBEDDED_MODEL_NAMES
    artifact_out = artifact_out or (ARTIFACT_DIR / "actadd-smollm2-135m.safetensors" if is_embedded else Path("actadd-directions.safetensors"))
    if reuse_directions and artifact_out.is_file():
        dirs = load_directions(artifact_out)  # only re-run the dev-split choice
    else:
        dirs = fit_directions(engine)
        save_directions(dirs, artifact_out, meta={"model": model})
    t_fit = time.perf_counter() - t0
    layers = layers or sorted({max(0, round(n_layers * f)) for f in (0.2, 0.27, 0.33)})
    fractions = fractions or [0.25, 0.4, 0.55]
    sources = sources or list(SOURCES)
    harmful = fitdata.harmful_prompts("dev")[:n_harmful]
    benign = fitdata.benign_prompts("dev")[:n_benign]
    base = screen(engine, None, harmful, benign, max_tokens=max_tokens, judge=judge)
    rows: list[dict[str, Any]] = [{"source": None, "layer": None, "coefficient": 0.0, **_res(base, overrefusal_weight)}]
    grid = [(s, la, f) for s in sources for la in layers for f in fractions]
    for s, la, f in tqdm(grid, desc="actadd dev screen"):
        coef = round(float(dirs["resid_norm"][la]) * f, 1)
        st = ActAddSteerer(dirs[s][la], coef, "add")
        iv = gi(engine.model, engine.layer_module_name(la), st.apply, "both", None)
        res = screen(engine, iv, harmful, benign, max_tokens=max_tokens, judge=judge)
        rows.append({"source": s, "layer": la, "coefficient": coef, "fraction": f, **_res(res, overrefusal_weight)})
    best = max(rows[1:], key=lambda r: r["score"])
    preset = {
        "model": model,
        "artifact": artifact_out.name if is_embedded else str(artifact_out.resolve()),
        "source": best["source"],
        "layer": best["layer"],
        "coefficient": best["coefficient"],
        "operation": "add",
        "steer_on": "both",
        "gate": "none",
        "gate_threshold": 0.5,
        "chosen_on": {
            "split": "dev", "n_harmful": len(harmful), "n_benign": len(benign), "max_tokens": max_tokens,
            "judge": judge, "score": f"refusal_harmful - {overrefusal_weight} * refusal_benign - degenerate",
            "base": rows[0], "best": best, "fit_seconds": round(t_fit, 1),
        },
    }
    out = out or (PRESET_DIR / "smollm2-135m.json" if is_embedded else Path("actadd-preset.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(preset, indent=2) + "\n")
    return {"preset": str(out), "best": best, "base": rows[0], "table": rows}


def _res(r: Any, w: float) -> dict[str, Any]:
    return {
        "refusal_harmful": round(r.refusal_harmful, 3), "refusal_benign": round(r.refusal_benign, 3),
        "degenerate": round(r.degenerate, 3), "judge_errors": r.judge_errors, "score": round(r.score(w), 3),
        "sample": r.samples[0][1][:120] if r.samples else "",
    }
