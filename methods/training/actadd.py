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
from steerboard.methods.training.gates import DevScreen


def fit_and_choose(
    model: str = "smollm2-135m",
    *,
    layers: list[int] | None = None,
    fractions: list[float] | None = None,
    sources: list[str] | None = None,
    dev: DevScreen | None = None,
    out: Path | None = None,
    artifact_out: Path | None = None,
    reuse_directions: bool = False,
) -> dict[str, Any]:
    """Fit both directions, choose (source, layer, coefficient) on the dev split, write a preset.

    Coefficients are ``fraction x mean residual norm`` at the layer; each is screened and scored as ``dev``
    says (default :class:`~steerboard.methods.training.gates.DevScreen`: 24 harmful and 24 benign prompts).
    """
    from tqdm.auto import tqdm

    from steerboard.engine import Engine
    from steerboard.methods.steering import gated_intervention as gi

    dev = dev or DevScreen()
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
    harmful, benign = dev.prompts()
    rows: list[dict[str, Any]] = [
        {"source": None, "layer": None, "coefficient": 0.0, **dev.row(engine, None, harmful, benign)}
    ]
    grid = [(s, la, f) for s in sources for la in layers for f in fractions]
    for s, la, f in tqdm(grid, desc="actadd dev screen"):
        coef = round(float(dirs["resid_norm"][la]) * f, 1)
        st = ActAddSteerer(dirs[s][la], coef, "add")
        iv = gi(engine.model, engine.layer_module_name(la), st.apply, "both", None)
        rows.append({"source": s, "layer": la, "coefficient": coef, "fraction": f, **dev.row(engine, iv, harmful, benign)})
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
        "chosen_on": {**dev.chosen_on(harmful, benign), "base": rows[0], "best": best, "fit_seconds": round(t_fit, 1)},
    }
    out = out or (PRESET_DIR / "smollm2-135m.json" if is_embedded else Path("actadd-preset.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(preset, indent=2) + "\n")
    return {"preset": str(out), "best": best, "base": rows[0], "table": rows}
