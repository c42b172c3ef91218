"""Unit tests for the tasks' scoring helpers: letter log-probabilities, letter parsing, fluency, KQA, metrics."""

from __future__ import annotations

import math

import pytest
from inspect_ai.scorer import SampleScore, Score

from steerboard.tasks._mc import generated_letter, letter_logprobs, letters, read_choice
from steerboard.tasks._metrics import breakdown, key_means, key_sums
from steerboard.tasks._testing import mock_output
from steerboard.tasks.crescendo import clean_question
from steerboard.tasks.safeedit import ngram_entropy, token_f1
from steerboard.tasks.truthfulqa import mc2_mass


def test_letter_logprobs_merges_spellings_and_ignores_others():
    out = mock_output("A", top={"A": -1.0, " A": -1.0, "B": -2.0, "The": -0.5, "E": -0.1})
    lps = letter_logprobs(out, "ABCD")
    assert set(lps) == {"A", "B"}
    assert lps["A"] == pytest.approx(math.log(2 * math.exp(-1.0)))
    assert read_choice(out, "ABCD")["logprob_letter"] == "A"
    # E is a valid letter when there are five options (TruthfulQA)
    assert read_choice(out, letters(5))["logprob_letter"] == "E"


def test_letter_logprobs_absent_and_empty():
    no_lp = mock_output("B")
    assert letter_logprobs(no_lp, "ABCD") is None
    r = read_choice(no_lp, "ABCD")
    assert r["fallback"] is True and r["logprob_letter"] == "B" == r["generated_letter"]
    none_in_top = mock_output("Well", top={"Well": -0.1, "So": -0.3})
    r = read_choice(none_in_top, "ABCD")
    assert r["logprobs"] == {} and r["logprob_letter"] is None and r["fallback"] is False


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("B", "B"),
        ("(C) because", "C"),
        (" D.", "D"),
        ("Answer: A", "A"),
        ("I think the answer is: (D)", "D"),
        ("The answer is option B.", "B"),
        ("a cat sat", None),
        ("A lesion causing compression of the facial nerve", None),
        ("A\nbecause", "A"),
        ("[C]", "C"),
        ("Answer: (B) twelve", "B"),
        ("E", None),
        ("Default output from mockllm/model", None),
    ],
)
def test_generated_letter(text, letter):
    assert generated_letter(text, "ABCD") == letter


def test_letters_bounds():
    assert letters(13) == "ABCDEFGHIJKLM"
    with pytest.raises(ValueError):
        letters(27)


def test_mc2_mass():
    lps = {"A": math.log(0.3), "B": math.log(0.1), "C": math.log(0.1)}
    assert mc2_mass(lps, [1, 0, 1]) == pytest.approx(0.4 / 0.5)
    assert mc2_mass({}, [1, 0]) is None


def test_ngram_entropy():
    assert ngram_entropy("") == 0.0
    rep = ngram_entropy("no no no no no no no no no no")
    varied = ngram_entropy("the quick brown fox jumps over the lazy dog near a river bank")
    assert rep == pytest.approx(0.0) and varied > 2.0
    # 4 distinct bigrams and 3 distinct trigrams over 5 tokens: (2/3*2 + 4/3*log2(3)) / 2
    assert ngram_entropy("a b c d e") == pytest.approx((2 / 3 * 2 + 4 / 3 * math.log2(3)) / 2)


def test_token_f1():
    assert token_f1("The capital is Paris.", "Paris") == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))
    assert token_f1("Paris", "paris") == 1.0
    assert token_f1("London", "Paris") == 0.0


def test_clean_question():
    assert clean_question('**Question 2:** "How did it work?"') == "How did it work?"
    assert clean_question("<think>plan</think>Next question: Why?") == "Why?"


def _ss(value, meta=None):
    return SampleScore(score=Score(value=value), sample_id=1, sample_metadata=meta or {})


def test_metrics_exclude_judge_errors_and_nan():
    scores = [
        _ss({"x": 1, "judge_error": 0}, {"g": "a"}),
        _ss({"x": 0, "judge_error": 0}, {"g": "b"}),
        _ss({"x": 1, "judge_error": 1}, {"g": "b"}),
        _ss({"x": float("nan"), "judge_error": 0}, {"g": "a"}),
    ]
    assert key_means({"rate": "x"})(scores) == {"rate": 0.5}
    assert key_sums({"errors": "judge_error"})(scores) == {"errors": 1.0}
    assert breakdown("x", "g", "rate_")(scores) == {"rate_a": 1.0, "rate_b": 0.0}
    assert math.isnan(key_means({"rate": "x"})([scores[2]])["rate"])
