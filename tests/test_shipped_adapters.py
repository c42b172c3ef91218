"""The shipped DPO and SFT adapters match the options the quick suite loads them with.

``dpo/`` and ``sft/`` load a shipped adapter only when its manifest's option fingerprint and pairs hash equal
those of the requested options; otherwise they train (about half an hour on 2 cores). A config field added or
renamed, or a change to the pairs file or its sampling, would silently turn ``make demo`` into a training run:
this test fails instead.
"""

from __future__ import annotations

import pytest
import yaml

from steerboard.methods.dpo import DPOMethod, check_manifest, load_pairs, pairs_key
from steerboard.methods.sft import SFTMethod


def _quick_args(name: str) -> dict:
    from importlib import resources

    data = yaml.safe_load((resources.files("steerboard.suites") / "quick.yaml").read_text())
    return next(m.get("args", {}) for m in data["methods"] if m["name"] == name)


@pytest.mark.parametrize("cls", [DPOMethod, SFTMethod], ids=["dpo", "sft"])
def test_quick_suite_options_load_the_shipped_adapter(cls) -> None:
    args = _quick_args(cls.name)
    method = cls(cls.config_class.from_dict(args), "smollm2-135m")
    ship = method.shipped_dir()
    manifest = check_manifest(ship)  # the weights' sha256 against the manifest
    assert manifest["config_fingerprint"] == method.cfg.fingerprint(), f"{cls.name}/ {args} would retrain"
    assert manifest["pairs_key"] == pairs_key(load_pairs(method.cfg)), f"{cls.name}/ {args}: pairs changed"
    assert (ship / "train_stats.json").is_file()


def test_a_tampered_adapter_is_refused(tmp_path) -> None:
    import shutil

    ship = DPOMethod(DPOMethod.config_class.from_dict(_quick_args("dpo")), "smollm2-135m").shipped_dir()
    copy = tmp_path / "adapter"
    shutil.copytree(ship, copy)
    weights = copy / check_manifest(copy)["weights_file"]
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        check_manifest(copy)
