"""The judges' agreement with the gold set, on the board (``steerboard build``, ``steerboard report --json``).

The gold set is replies of the embedded model under each method configuration, labelled by two blind
annotation passes and adjudicated (``docs/annotation.md``). ``steerboard judge gold agree`` writes each offline
judge's agreement with those labels, overall and per method configuration, with 95 % Wilson intervals
(:func:`steerboard.scorers.gold.agree`); the shipped copy is ``steerboard/scorers/data/gold_agreement.json``.

A board row is matched to a gold configuration by the identity the board keys rows on (the model string, the
resolved settings key and a non-standard task protocol: :func:`steerboard.scorers.gold.configuration_id`), never
by a fuzzy match; the submitter is not part of it (a submitted row with the same model string and settings key is
the same configuration). Each row shows the agreement of the judges that decide its safety and over-refusal
metrics (the refusal judge for XSTest, JailbreakBench and PHTest, the harm judge for SafeEdit's DS, the objective
judge for Crescendo's attack success, which the gold set does not measure), flagged when below the file's floor.
Without the file nothing is shown as measured and no row is flagged.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

from steerboard.leaderboard.listing import Listing
from steerboard.scorers.gold import configuration_id

GOLD_RESOURCE = "data/gold_agreement.json"
"""The shipped agreement report, inside the ``steerboard.scorers`` package."""
JUDGED_AXES = ("safety", "overrefusal")
"""A row's metrics on these axes are judges' verdicts; their judges' agreement is shown beside the row."""
NOT_IN_GOLD = "not in gold set"

#: Which judge decides which board metric (the judges page lists it; ``family/backend`` as the log records it).
DECIDES: tuple[tuple[str, str, bool], ...] = (
    ("refusal/embed", "XSTest, JailbreakBench and PHTest refusal and over-refusal rates (the safety and "
     "over-refusal axes), and which Crescendo turns count as refused", True),
    ("refusal/strmatch", "the same refusal metrics for runs given -T judge=strmatch", True),
    ("harm/embed", "SafeEdit's defense success (DS) and defense generalization (DG) rates", True),
    ("objective/embed", "Crescendo's attack success (whether a reply achieves the conversation's aim); the gold "
     "set labels refusal and harmful content, not the aim, so this judge is not in it", False),
)  # fmt: skip


class GoldAgreementError(ValueError):
    """A gold agreement file that cannot be read (the message names the file, the field and what is valid)."""


def _measure(where: str, a: Any) -> dict[str, Any]:
    """One ``{n, accuracy, accuracy_ci, flag}`` entry, checked."""
    if not isinstance(a, dict):
        raise GoldAgreementError(f"{where}: expected an object with n, accuracy, accuracy_ci and flag")
    n, acc, ci, flag = a.get("n"), a.get("accuracy"), a.get("accuracy_ci"), a.get("flag")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise GoldAgreementError(f"{where}: n must be a positive integer, got {n!r}")
    if not isinstance(acc, int | float) or isinstance(acc, bool) or not 0 <= acc <= 1:
        raise GoldAgreementError(f"{where}: accuracy must be a number in [0, 1], got {acc!r}")
    if (
        not isinstance(ci, list) or len(ci) != 2
        or not all(isinstance(x, int | float) and not isinstance(x, bool) and 0 <= x <= 1 for x in ci)
    ):  # fmt: skip
        raise GoldAgreementError(f"{where}: accuracy_ci must be [low, high] in [0, 1], got {ci!r}")
    if not isinstance(flag, bool):
        raise GoldAgreementError(f"{where}: flag must be true or false, got {flag!r}")
    return {"n": n, "accuracy": float(acc), "ci": [float(ci[0]), float(ci[1])], "flag": flag}


def check_gold_agreement(data: Any, where: str) -> dict[str, Any]:
    """The report of :func:`steerboard.scorers.gold.agree`, checked and normalised: ``{"floor", "n_gold",
    "judges": {name: {"strata", "overall", "by_configuration", "four_way_accuracy"}}}`` with each measure as
    ``{n, accuracy, ci, flag}``.

    Raises:
        GoldAgreementError: a missing or malformed field, named with its path in the file.
    """
    if not isinstance(data, dict) or not isinstance(data.get("judges"), dict):
        raise GoldAgreementError(f"{where}: expected an object with floor, n_gold and judges (from "
                                 "`steerboard judge gold agree --out`)")  # fmt: skip
    floor = data.get("floor")
    if not isinstance(floor, int | float) or isinstance(floor, bool) or not 0 < floor <= 1:
        raise GoldAgreementError(f"{where}: floor must be a number in (0, 1], got {floor!r}")
    n_gold = data.get("n_gold")
    if not isinstance(n_gold, int) or isinstance(n_gold, bool) or n_gold < 1:
        raise GoldAgreementError(f"{where}: n_gold must be a positive integer, got {n_gold!r}")
    judges: dict[str, Any] = {}
    for name, j in data["judges"].items():
        at = f"{where}: judges.{name}"
        if not isinstance(j, dict) or not isinstance(j.get("by_configuration"), dict):
            raise GoldAgreementError(f"{at}: expected an object with strata, overall and by_configuration")
        four = j.get("four_way_accuracy")
        if four is not None and (not isinstance(four, int | float) or isinstance(four, bool) or not 0 <= four <= 1):
            raise GoldAgreementError(f"{at}.four_way_accuracy: must be a number in [0, 1], got {four!r}")
        strata = j.get("strata")
        if not isinstance(strata, list) or not all(isinstance(s, str) for s in strata):
            raise GoldAgreementError(f"{at}.strata: must be a list of stratum names, got {strata!r}")
        judges[str(name)] = {
            "strata": list(strata),
            "overall": _measure(f"{at}.overall", j.get("overall")),
            "by_configuration": {
                str(c): _measure(f"{at}.by_configuration.{c}", a) for c, a in j["by_configuration"].items()
            },
            "four_way_accuracy": None if four is None else float(four),
        }
    return {"floor": float(floor), "n_gold": n_gold, "judges": judges}


def load_gold_agreement(path: str | Path | None = None) -> dict[str, Any] | None:
    """The judges' agreement with the gold set: ``path``, or the shipped ``gold_agreement.json`` when None.

    Returns:
        The checked report (:func:`check_gold_agreement`), or None when no path is given and nothing is
        shipped.

    Raises:
        GoldAgreementError: ``path`` does not exist, or the file is not such a report.
    """
    if path is None:
        try:
            res = files("steerboard.scorers").joinpath(GOLD_RESOURCE)
        except ModuleNotFoundError:
            return None
        if not res.is_file():
            return None
        where, text = f"steerboard/scorers/{GOLD_RESOURCE}", res.read_text(encoding="utf-8")
    else:
        p = Path(path)
        if not p.is_file():
            raise GoldAgreementError(
                f"{path}: gold agreement file not found; give the file `steerboard judge gold agree --out` "
                "wrote, or leave --gold-agreement out to use the shipped one"
            )
        where, text = str(path), p.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as ex:
        raise GoldAgreementError(f"{where}: not JSON ({ex.msg} at line {ex.lineno})") from ex
    return check_gold_agreement(data, where)


def row_configuration(row: dict[str, Any]) -> str | None:
    """The gold-set configuration a board row stands for (None: the row's settings are not recorded)."""
    if not row.get("settings_key"):
        return None
    variant = row.get("variant") or ""
    protocol = variant.removeprefix("protocol=") if variant.startswith("protocol=") else None
    return configuration_id(str(row["model_string"]), str(row["settings_key"]), protocol)


def run_judge(run: dict[str, Any]) -> str | None:
    """``family/backend`` of the judge that decides a run's metrics (``refusal/embed``, ``harm/embed``,
    ``objective/embed``...), from its task, scorers and recorded judge; None for a run no judge scores."""
    try:
        scorers = " ".join(json.loads(run.get("scorers") or "[]")).lower()
    except (json.JSONDecodeError, TypeError):
        scorers = ""
    task = str(run.get("task") or "")
    if task == "crescendo" or "crescendo" in scorers:
        try:
            args = json.loads(run.get("task_args") or "{}")
        except json.JSONDecodeError:
            args = {}
        family = "harm" if isinstance(args, dict) and args.get("harm_judge") else "objective"
    elif "refusal" in scorers:
        family = "refusal"
    elif "harm" in scorers or "safeedit" in scorers:
        family = "harm"
    else:
        return None
    backend = run.get("judge")
    return f"{family}/{backend}" if backend else f"{family}/(not recorded)"


def row_judges(row: dict[str, Any], listing: Listing) -> dict[str, list[str]]:
    """The judges deciding a row's safety and over-refusal metrics, each with the titles of its tasks."""
    judged = {m.task for a in JUDGED_AXES for m in listing.metrics if m.axis == a}
    out: dict[str, list[str]] = {}
    for task in sorted(row["runs"]):
        judge = run_judge(row["runs"][task]) if task in judged else None
        if judge:
            t = listing.tasks.get(task)
            out.setdefault(judge, []).append(t.title if t else task)
    rank = {"refusal": 0, "harm": 1, "objective": 2}
    return dict(sorted(out.items(), key=lambda kv: (rank.get(kv[0].split("/")[0], 3), kv[0])))


def _ci_text(m: dict[str, Any]) -> str:
    return f"[{m['ci'][0]:.2f}, {m['ci'][1]:.2f}]"


def attach(rows: list[dict[str, Any]], gold: dict[str, Any] | None, listing: Listing) -> None:
    """Set each row's ``judge_check`` (a list of the judges deciding its metrics, each with its agreement for
    the row's configuration or ``NOT_IN_GOLD``; None without a gold file), ``judge_flag`` (some judge below
    the floor) and ``judge_agreement`` (``{judge: {accuracy, ci, n, flag} or None}``, the ``report --json`` field;
    None without a gold file or when no judge decides the row's metrics)."""
    for row in rows:
        row["judge_check"], row["judge_flag"], row["judge_agreement"], row["judge_sort"] = None, False, None, ""
        if gold is None:
            continue
        conf = row_configuration(row)
        checks = []
        for judge, tasks in row_judges(row, listing).items():
            j = gold["judges"].get(judge)
            m = j["by_configuration"].get(conf) if j is not None and conf is not None else None
            checks.append({
                "judge": judge, "tasks": tasks, "measured": m is not None, "in_file": j is not None,
                "accuracy": m["accuracy"] if m else None, "ci": m["ci"] if m else None,
                "ci_text": _ci_text(m) if m else "", "n": m["n"] if m else 0, "flag": bool(m and m["flag"]),
            })  # fmt: skip
        row["judge_check"] = checks
        row["judge_flag"] = any(c["flag"] for c in checks)
        measured = [c["accuracy"] for c in checks if c["measured"]]
        row["judge_sort"] = f"{min(measured):.6f}" if measured else ""
        if checks:
            row["judge_agreement"] = {
                c["judge"]: {"accuracy": c["accuracy"], "ci": list(c["ci"]), "n": c["n"], "flag": c["flag"]}
                if c["measured"] else None
                for c in checks
            }  # fmt: skip


def _conf_parts(conf: str) -> tuple[str, str, str]:
    """(model string, settings key, variant) of a configuration id."""
    head, _, variant = conf.partition("|")
    model, _, key = head.partition("@")
    return model, key, variant


def judges_view(gold: dict[str, Any] | None, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What the judges page shows of the gold file: per judge its overall agreement and a table of its
    configurations labelled as the board labels the matching row (the raw configuration when no row of this
    board matches it), flagged configurations first. None without a gold file."""
    if gold is None:
        return None
    by_conf: dict[str, dict[str, Any]] = {}
    for r in rows:
        conf = row_configuration(r)
        if conf is None:
            continue
        if conf not in by_conf or (r["submitter"] == "steerboard" != by_conf[conf]["submitter"]):
            by_conf[conf] = r  # the project's own row labels the configuration when a submission shares it
    judges = []
    for name, j in gold["judges"].items():
        confs = []
        for conf, m in j["by_configuration"].items():
            r = by_conf.get(conf)
            model, key, variant = _conf_parts(conf)
            if r is not None:
                label = {"method": r["method"], "config": r["config_short"], "variant": r["variant"],
                         "model": r["model"], "page": r["config_page"], "on_board": True}  # fmt: skip
            else:
                method, _, mname = model.partition("/")
                label = {"method": method, "config": f"settings {key[:12]}" if key else "settings not recorded",
                         "variant": variant, "model": mname, "page": None, "on_board": False}  # fmt: skip
            confs.append({**label, "conf": conf, **m, "ci_text": _ci_text(m)})
        confs.sort(key=lambda c: (not c["flag"], c["method"], c["config"], c["variant"]))
        judges.append({
            "name": name, "strata": j["strata"], "overall": {**j["overall"], "ci_text": _ci_text(j["overall"])},
            "four_way": j["four_way_accuracy"], "configs": confs,
            "n_flagged": sum(c["flag"] for c in confs), "n_on_board": sum(c["on_board"] for c in confs),
        })  # fmt: skip
    return {"floor": gold["floor"], "n_gold": gold["n_gold"], "judges": judges}
