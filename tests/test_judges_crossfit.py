"""Cross-fitted judges: folds grouped by prompt/item, the fold lookup, and its errors (issue 32)."""

from __future__ import annotations

import numpy as np
import pytest

from steerboard.scorers.embed import ALL_DATA, LinearClassifier, lookup_key, route, routed
from steerboard.scorers.judges import Verdict
from steerboard.scorers.training import Example, crossfit_folds, crossfit_groups, crossfit_models


def _ex(prompt: str, keys: tuple[str, ...] = (), label: str = "compliance") -> Example:
    return Example(prompt, f"reply to {prompt}", label, "g", "src", keys)


def _clf(tag: float) -> LinearClassifier:
    return LinearClassifier(["safe", "unsafe"], [[tag]], [0.0], ["strmatch"], {"tag": tag})


def test_lookup_key_is_the_fit_data_hash():
    from steerboard.methods.fitdata import text_hash

    assert lookup_key("How do I kill a Python process?") == text_hash("how do i KILL a python process")
    assert lookup_key("a") != lookup_key("b")
    assert lookup_key("?!  ...") is None  # no letter or digit: identifies nothing, never matches


def test_groups_join_rows_sharing_any_prompt_or_item_text():
    ex = [
        _ex("Q1"),
        _ex("q1!"),  # same normalised text as Q1
        _ex("jailbreak wrapping A", ("intent A",)),
        _ex("another jailbreak", ("Intent  A",)),  # same item as the row before
        _ex("Q2"),
    ]
    g = crossfit_groups(ex)
    assert g[0] == g[1] and g[2] == g[3] and len({g[0], g[2], g[4]}) == 3


def test_folds_never_split_a_group_and_models_never_see_their_fold():
    ex = [_ex(f"prompt {i % 12}", (f"item {i % 6}",)) for i in range(60)]  # 6 items, 12 prompts
    fold, table = crossfit_folds(ex, k=3)
    groups = crossfit_groups(ex)
    for gid in set(groups):
        assert len({fold[i] for i, g in enumerate(groups) if g == gid}) == 1
    assert set(table.values()) <= {0, 1, 2} and table[lookup_key("item 0")] == fold[0]
    seen: list[set[str]] = []

    def fit_one(examples, x):
        seen.append({t for e in examples for t in (e.prompt, *e.keys)})
        return _clf(float(len(seen)))

    entry, fold2, models = crossfit_models(ex, np.zeros((60, 1)), fit_one, 3, "test unit")
    assert fold2 == fold and entry["k"] == 3 and len(entry["folds"]) == 3
    for f in range(3):
        held = {t for i, e in enumerate(ex) if fold[i] == f for t in (e.prompt, *e.keys)}
        assert held and not (held & seen[f])  # fold f's model never saw a text of fold f
        assert models[f].meta["fold"] == f + 1 and models[f].meta["n_train"] == 60 - fold.count(f)
    with pytest.raises(ValueError, match="at least 7 prompt/item groups"):
        crossfit_folds(ex, k=7)


def _crossfitted() -> LinearClassifier:
    all_data = _clf(0.0)
    all_data.crossfit = {
        "k": 3,
        "keys": {lookup_key("seen in fold one"): 0, lookup_key("item of fold two"): 1, lookup_key("fold three"): 2},
        "folds": [_clf(1.0).to_json(), _clf(2.0).to_json()],  # fold 3's model is missing
    }
    return all_data


def test_route_picks_the_fold_model_that_never_saw_the_prompt():
    clf = _crossfitted()
    r = route(clf, [("Seen in fold ONE.",), ("a new prompt",), ("new prompt", "item of fold two")])
    assert [x.label for x in r] == ["fold-1/3", ALL_DATA, "fold-2/3"]
    assert r[0].model is not None and r[0].model.meta["tag"] == 1.0
    assert r[1].model is clf and r[2].model is not None and r[2].model.meta["tag"] == 2.0


def test_route_errors_instead_of_falling_back_to_a_model_that_saw_it():
    clf = _crossfitted()
    both, missing = route(clf, [("seen in fold one", "item of fold two"), ("fold three",)])
    assert both.model is None and "folds [1, 2] of 3" in (both.error or "")
    assert missing.model is None and "holds 2 fold models" in (missing.error or "")
    verdicts = routed([both, missing], lambda m, idx: [Verdict("safe", 0, 0.0)] * len(idx))
    assert all(v.flagged is None and v.error for v in verdicts)  # judge errors, never a verdict


def test_route_without_folds_uses_the_one_model():
    plain = _clf(0.0)
    [r] = route(plain, [("anything",)])
    assert r.label == ALL_DATA and r.model is plain


def test_routed_keeps_item_order_and_labels():
    clf = _crossfitted()
    routes = route(clf, [("x",), ("seen in fold one",), ("y",)])
    calls = []

    def fn(model, idx):
        calls.append((model.meta["tag"], idx))
        return [Verdict("unsafe", 1, model.meta["tag"]) for _ in idx]

    out = routed(routes, fn)
    assert [v.score for v in out] == [0.0, 1.0, 0.0]
    assert [v.fold for v in out] == [ALL_DATA, "fold-1/3", ALL_DATA]
    assert sorted(calls) == [(0.0, [0, 2]), (1.0, [1])]  # one batch per model


def test_artifact_roundtrip_keeps_the_folds(tmp_path):
    clf = _crossfitted()
    clf.save(tmp_path / "a.json")
    back = LinearClassifier.load(tmp_path / "a.json")
    assert back.crossfit == clf.crossfit and [m.meta["tag"] for m in back.fold_models()] == [1.0, 2.0]


# ---------------------------------------------------------------------------------------------- shipped


def test_shipped_refusal_folds_match_the_training_data_and_cover_every_xstest_item():
    from steerboard.scorers.embed import REFUSAL_ARTIFACT
    from steerboard.scorers.training import CROSSFIT_K, load_refusal_examples, refusal_training_examples
    from steerboard.tasks.xstest import load_records, record_to_sample

    clf = LinearClassifier.load(REFUSAL_ARTIFACT)
    ex = refusal_training_examples(load_refusal_examples())
    fold, table = crossfit_folds(ex, CROSSFIT_K)
    assert clf.crossfit is not None and clf.crossfit["keys"] == table  # the artifact's folds are these
    assert [m.meta["n_train"] for m in clf.fold_models()] == [len(ex) - fold.count(f) for f in range(CROSSFIT_K)]
    samples = [record_to_sample(r) for r in load_records()]
    routes = route(clf, [(s.input, *s.metadata["judge_keys"]) for s in samples])
    assert all(r.label.startswith("fold-") for r in routes)  # all 450 prompts were trained on: none all-data
    by_item = {s.metadata["judge_keys"][0]: r.label for s, r in zip(samples, routes, strict=True)}
    for e, f in zip(ex, fold, strict=True):
        if e.source.startswith("xstest/"):
            assert by_item[e.keys[0]] == f"fold-{f + 1}/{CROSSFIT_K}"  # judged by the model without this item


def test_shipped_harm_folds_cover_every_safeedit_item():
    from steerboard.scorers.embed import HARM_ARTIFACT
    from steerboard.tasks._common import data_file, read_json
    from steerboard.tasks.safeedit import DATA_FILE, DATA_SHA256, record_to_sample

    clf = LinearClassifier.load(HARM_ARTIFACT)
    assert clf.crossfit is not None and clf.crossfit["k"] >= 2
    samples = [record_to_sample(r) for r in read_json(data_file(DATA_FILE, DATA_SHA256))]
    routes = route(clf, [(s.metadata["prompts"]["ds"], s.metadata["question"]) for s in samples])
    assert all(r.label.startswith("fold-") for r in routes)
    bare = route(clf, [(s.metadata["question"],) for s in samples])  # the bare question finds the item too
    assert [r.label for r in bare] == [r.label for r in routes]
