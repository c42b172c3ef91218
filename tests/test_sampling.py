"""``--limit N`` on tasks with strata draws a stratified, seeded sample (XSTest, JBB, WildGuard)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from steerboard.tasks._common import stratified_order


def _counts(samples, key: str) -> Counter:
    return Counter(s.metadata[key] for s in samples)


def test_every_prefix_is_stratified() -> None:
    items = [("a", i) for i in range(250)] + [("b", i) for i in range(200)] + [("c", i) for i in range(7)]
    order = stratified_order(items, [lambda x: x[0]], seed=3)
    assert sorted(order) == sorted(items)  # a permutation
    sizes = Counter(x[0] for x in items)
    for n in range(1, len(items) + 1):
        got = Counter(x[0] for x in order[:n])
        for k, size in sizes.items():
            assert abs(got[k] - n * size / len(items)) < 1, (n, k, got)
    assert order == stratified_order(items, [lambda x: x[0]], seed=3)  # seeded
    assert order != stratified_order(items, [lambda x: x[0]], seed=4)


def test_nested_strata_are_stratified_within_each_stratum() -> None:
    items = [(lab, t, i) for lab, types in (("s", "pqr"), ("u", "xy")) for t in types for i in range(20)]
    order = stratified_order(items, [lambda x: x[0], lambda x: x[1]], seed=0)
    first = order[:10]
    assert Counter(x[0] for x in first) == {"s": 6, "u": 4}
    assert set(x[1] for x in first) == set("pqrxy")  # every sub-stratum present


def _xstest(**kw):
    from steerboard.tasks.xstest import xstest

    return xstest(judge="strmatch", **kw).dataset


def test_xstest_limit_is_stratified_by_default() -> None:
    ds = _xstest()
    assert len(ds) == 450
    first = list(ds)[:20]
    labels = _counts(first, "label")
    assert labels == {"safe": 11, "unsafe": 9}  # 250 : 200 of 20
    assert len(_counts(first, "type")) >= 15  # 18 prompt types; 20 samples spread over them
    # file order (the old behaviour) is still available: the first 20 are all safe homonyms
    plain = list(_xstest(stratify=False))[:20]
    assert _counts(plain, "label") == {"safe": 20} and _counts(plain, "type") == {"homonyms": 20}
    # a plain shuffle overrides stratification; both are seeded
    assert [s.id for s in list(_xstest(shuffle=True, seed=1))[:20]] == [
        s.id for s in list(_xstest(shuffle=True, seed=1))[:20]
    ]
    assert [s.id for s in list(_xstest(seed=1))[:20]] != [s.id for s in first]
    with pytest.raises(ValueError, match="stratify"):
        _xstest(stratify="maybe")


def test_xstest_subset_keeps_types_spread() -> None:
    first = list(_xstest(subset="unsafe"))[:10]
    assert _counts(first, "label") == {"unsafe": 10}
    assert len(_counts(first, "type")) == 8  # all 8 unsafe (contrast) types


def test_jbb_limit_is_stratified_by_default() -> None:
    from steerboard.tasks.jbb_refusal import jbb_refusal

    first = list(jbb_refusal(judge="strmatch").dataset)[:10]
    assert _counts(first, "label") == {"safe": 5, "unsafe": 5}
    with_hb = list(jbb_refusal(judge="strmatch", extra="harmbench").dataset)[:20]
    assert set(_counts(with_hb, "source")) == {"jbb", "harmbench"}
    plain = list(jbb_refusal(judge="strmatch", stratify=False).dataset)[:10]
    assert len(_counts(plain, "label")) == 1


def test_wildguard_limit_is_stratified_by_default(tmp_path: Path) -> None:
    from steerboard.tasks.wildguard import wildguard

    rows = [
        {"prompt": f"p{harm}{adv}{i}", "prompt_harm_label": harm, "adversarial": adv, "subcategory": f"c{i % 3}"}
        for harm in ("harmful", "unharmful")
        for adv in (False, True)
        for i in range(30 if harm == "harmful" else 10)
    ]
    path = tmp_path / "wgt.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    first = list(wildguard(data_file=str(path), judge="strmatch").dataset)[:8]
    assert _counts(first, "group") == {
        "unsafe_vanilla": 3, "unsafe_adversarial": 3, "safe_vanilla": 1, "safe_adversarial": 1
    }
    plain = list(wildguard(data_file=str(path), judge="strmatch", stratify=False).dataset)[:8]
    assert _counts(plain, "group") == {"unsafe_vanilla": 8}
