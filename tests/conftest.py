"""Shared fixtures: a tiny random-weight llama built offline, the embedded model (integration), mockllm
outputs, a rule-based fake judge and headless Chromium."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from steerboard._runtime_env import configure_openmp

configure_openmp()  # before any test loads torch: the engine's OpenMP wait setting for the whole test process

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# tests that ask for matmul_dtype=bfloat16 test the bfloat16 code path on every CPU (emulated by oneDNN where the
# CPU has no native bf16, as under `make test-avx2`); the fallback to float32 a user gets there is tested on its own
# (tests/test_precision.py, with this variable removed)
os.environ.setdefault("STEERBOARD_FORCE_BF16", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from steerboard.testing import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0))


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir: str):
    from steerboard.engine import Engine

    return Engine.load(tiny_model_dir)


@pytest.fixture
def prepare_again(tiny_model_dir: str):
    """Prepare a weight-changing method again on a fresh tiny engine, as a second use would.

    Returns ``run(method_class, config, artifact, weights) -> (engine, method)``, which checks that the
    method reused the cached ``artifact`` (no new fit) and serves exactly ``weights`` (name -> tensor).
    """

    def run(method_class: type, config: Any, artifact: str | None, weights: dict[str, Any]) -> tuple[Any, Any]:
        import torch

        from steerboard.engine import Engine

        engine = Engine.load(tiny_model_dir)
        method = method_class(config, "tiny")
        method.prepare(engine)
        assert method.artifact == artifact
        for n, p in engine.model.named_parameters():
            assert torch.equal(p.detach(), weights[n]), n
        return engine, method

    return run


@pytest.fixture(scope="session")
def smol_engine():
    from steerboard.engine import Engine

    return Engine.load("smollm2-135m")


@pytest.fixture
def mock_outputs():
    """Turn texts into mockllm ``ModelOutput``s with token usage set (so Inspect needs no tokenizer download)."""
    from steerboard.tasks._testing import mock_output

    def make(texts: list[str]) -> list[Any]:
        return [mock_output(text) for text in texts]

    return make


class RuleJudge:
    """A judge for tests that decides by rules over (prompt, reply).

    ``fail`` gives a judge error (message ``error``); otherwise ``flag`` picks ``labels[0]`` (flagged, score
    1.0) or ``labels[1]`` (score 0.0).
    """

    def __init__(
        self,
        flag: Callable[[str, str], bool],
        labels: tuple[str, str],
        fail: Callable[[str, str], bool] = lambda prompt, reply: False,
        *,
        name: str = "fake",
        error: str = "fake failure",
    ) -> None:
        self.flag, self.labels, self.fail, self.name, self.error = flag, labels, fail, name, error

    async def judge(self, prompts: list[str], responses: list[str]) -> list[Any]:
        from steerboard.scorers.judges import Verdict

        out = []
        for p, r in zip(prompts, responses, strict=True):
            if self.fail(p, r):
                out.append(Verdict.failure(self.error))
            else:
                hit = bool(self.flag(p, r))
                out.append(Verdict(self.labels[0] if hit else self.labels[1], int(hit), float(hit)))
        return out


@pytest.fixture
def rule_judge() -> type[RuleJudge]:
    """The :class:`RuleJudge` class, for tests that swap a judge getter for a rule-based fake."""
    return RuleJudge


@pytest.fixture(scope="session")
def hostile_run():
    """Build a synthetic XSTest run whose method name, settings and every prompt and reply carry markup.

    Returns ``make(method, text, *, n_samples, seed, settings_key="note", **fields) -> SyntheticRun``; the
    leaderboard must show all of it as text.
    """
    from steerboard.leaderboard.synthetic import SyntheticRun

    def make(method: str, text: str, *, n_samples: int, seed: int, settings_key: str = "note", **fields: Any):
        return SyntheticRun(
            task="xstest", method=method, model_args={settings_key: text}, n_samples=n_samples, seed=seed,
            text_prefix=text, **fields,
        )

    return make


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory):
    """Headless Chromium through selenium at 1440x900 (the console log kept), one per test module; the test
    fails, saying what to install, when the browser is missing."""
    from steerboard.leaderboard.screenshots import headless_chromium

    try:
        drv = headless_chromium(tmp_path_factory.mktemp("chrome-profile"), page_load_timeout=30)
    except FileNotFoundError as ex:
        pytest.fail(f"{ex} (Debian chromium + chromium-driver)")
    try:
        yield drv
    finally:
        drv.quit()


# Test modules whose assertions depend on the CPU's kernels (bit-exact batch invariance, thresholds on model
# scores, low-precision paths). `make test-avx2` runs them again with oneDNN and ATen capped to AVX2
# (ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2), the code path of an AVX2-only CPU, on whichever CPU is at
# hand; .ci/run does so after `make test`.
NUMERICS_MODULES = frozenset({
    "test_amx_blocks", "test_cost", "test_determinism", "test_engine", "test_precision", "test_prompt_gate",
    "test_sampling", "test_steering_gate", "test_actadd", "test_dinm",
})


# Tests that take more than about a second on 2 cores (measured with `pytest --durations=0`; fixtures that
# build something for a whole module, such as an installed example package, count against the module). They
# carry the `slow` marker: `make test-fast` (pytest -m "not slow") leaves them out, a loop of under 2 minutes
# while editing; `make test` and CI run everything. SLOW_TESTS names a test as module::function (every
# parametrization) or module::function[params] (one); tests/test_markers.py checks that each name exists.
SLOW_MODULES = frozenset({
    "test_actadd", "test_examples", "test_leaderboard_browser", "test_readme_commands", "test_tasks_integration",
})
SLOW_TESTS = frozenset({
    "test_cost::test_letters_format_still_works_with_any_provider",
    "test_cost::test_mmlu_all_runs_cloze_and_letters",
    "test_cost::test_side_effects_zero_for_base_positive_for_prompt",
    "test_cost::test_truthfulqa_and_mmlu_loglik_e2e",
    "test_crescendo_objective::test_objective_embed_verdicts",
    "test_determinism::test_embedded_model_beside_others_gives_the_same_logprob_bits_as_alone",
    "test_determinism::test_generation_is_batch_invariant_in_bfloat16",
    "test_determinism::test_no_engine_function_is_over_80_lines",
    "test_determinism::test_tiny_suite_three_runs_give_identical_samples",
    "test_dinm::test_one_edit_on_embedded_model",
    "test_dpo::test_dpo_pairs_disjoint_from_every_eval_item",
    "test_dpo::test_dpo_trains_on_tiny_model_and_caches",
    "test_engine::test_embedded_model_batch_matches_single",
    "test_judges::test_cli_refusal_roundtrip[embed]",
    "test_judges::test_safeedit_classifier_offline_is_a_clear_error",
    "test_judges::test_training_is_deterministic",
    "test_judges_tasks::test_safeedit_non_answers_and_folds",
    "test_leaderboard::test_a_failed_build_leaves_the_previous_site_intact",
    "test_leaderboard::test_aggregates_and_sweeps_are_formed_as_documented",
    "test_leaderboard::test_ingest_counts_and_skips_damaged_logs",
    "test_leaderboard::test_parallel_ingest_matches_serial",
    "test_leaderboard::test_pareto_badge_only_among_rows_covering_the_same_metrics",
    "test_leaderboard::test_plots_label_points_and_use_round_ticks",
    "test_leaderboard::test_real_xstest_log_through_ingest_and_build",
    "test_leaderboard_axes::test_a_control_rerun_with_other_generation_settings_changes_nothing",
    "test_leaderboard_axes::test_a_row_without_a_control_shows_absolute_values_only",
    "test_leaderboard_axes::test_a_sweep_launched_from_the_command_line_is_recognised",
    "test_leaderboard_axes::test_board_invariants",
    "test_leaderboard_axes::test_report_json_has_one_object_per_row",
    "test_leaderboard_axes::test_the_built_site_shows_no_local_path_and_other_providers_rank_below",
    "test_leaderboard_gold::test_board_and_judges_page_with_a_gold_file_in_chromium",
    "test_method_declarations::test_an_installed_plugin_gets_a_memory_estimate",
    "test_method_declarations::test_an_installed_plugin_gets_board_labels_and_sweeps",
    "test_models_and_providers::test_fetch_is_resumable_and_safe_in_parallel",
    "test_precision::test_screened_head_gives_the_same_greedy_tokens",
    "test_prompt_gate::test_actadd_provider_with_classifier_gate_steers_only_flagged_prompts",
    "test_prompt_gate::test_both_gate_combines_the_in_hook_probe_with_the_request_score",
    "test_prompt_gate::test_refit_reproduces_the_shipped_classifier",
    "test_prompt_gate::test_shipped_classifier_matches_the_fit_data_and_separates_the_dev_split",
    "test_provenance::test_inspect_eval_cli_writes_the_record",
    "test_provenance::test_same_settings_same_scores_embedded_model_float32",
    "test_reliability::test_ctrl_c_stops_the_suite_and_is_never_success",
    "test_reliability::test_ingest_waits_for_the_lock_or_fails_in_one_line",
    "test_reliability::test_second_ctrl_c_aborts_at_once_and_a_rerun_replaces_the_stale_log",
    "test_reply_states::test_reply_states_shape_repeatability_and_empty_reply",
    "test_resources::test_gpu_check_runs_its_logic_on_cpu",
    "test_resources::test_gpu_check_without_a_gpu_says_so",
    "test_run::test_run_suite_end_to_end_and_resume",
    "test_runtime_env::test_importing_steerboard_sets_no_environment_variable",
    "test_runtime_env::test_importing_the_inspect_entry_point_changes_nothing",
    "test_runtime_env::test_configure_openmp_sets_the_spin_only_before_torch_and_without_a_user_choice",
    "test_runtime_env::test_creating_a_method_provider_sets_the_spin_before_torch_loads",
    "test_sae::test_gate_probe_option_fits_and_caches",
    "test_sae::test_shipped_sae_steers_embedded_model",
    "test_scaleout::test_build_publishes_site_to_s3",
    "test_scaleout::test_ingest_from_s3_equals_local_and_is_incremental",
    "test_scaleout::test_ray_checks_every_pair_before_any_runs",
    "test_scaleout::test_ray_executor_matches_local_and_resumes",
    "test_scaleout::test_ray_pair_that_keeps_failing_is_reported",
    "test_scaleout::test_ray_pool_of_one_cpu_actors",
    "test_scaleout::test_run_writes_logs_to_s3",
    "test_sft::test_sft_runs_through_inspect_eval",
    "test_sft::test_sft_trains_on_chosen_replies_and_caches",
    "test_signals::test_nested_refusal_chooses_inside_training_sources",
    "test_site_paths::test_no_output_file_of_the_site_holds_a_local_path",
    "test_submission::test_cli_suite_with_method_runs_every_required_task",
    "test_tasks_data::test_full_sample_counts[mmlu-kwargs4-14042]",
    "test_tasks_data::test_shuffle_seed_deterministic[truthfulqa-kwargs2]",
    "test_tasks_e2e::test_listing_metrics_appear_in_logs",
    "test_tasks_e2e::test_mmlu_e2e_fallback_without_logprobs",
    "test_tasks_e2e::test_registry_name_resolves_in_fresh_process",
    "test_tasks_e2e::test_safeedit_judge_failure_excluded",
    "test_tasks_e2e::test_safeedit_per_instance_edits_once_per_item_around_all_prompts",
    "test_tasks_e2e::test_safeedit_standard_e2e",
    "test_tasks_e2e::test_xstest_file_path_e2e",
    "test_user_paths::test_a_silent_storage_endpoint_is_named_and_given_up_on",
    "test_user_paths::test_exit_with_the_torch_thread_busy_never_aborts",
    "test_user_paths::test_letter_format_runs_on_inspect_hf",
    "test_user_paths::test_option_errors_through_inspect_eval_are_one_line",
    "test_user_paths::test_submission_dry_run_prints_an_estimate_per_pair",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module is not None else ""
        if module in NUMERICS_MODULES:
            item.add_marker(pytest.mark.numerics)
        function = getattr(item, "originalname", item.name)
        if module in SLOW_MODULES or {f"{module}::{function}", f"{module}::{item.name}"} & SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
