"""The experimental ``reply_states`` feature block: the embedded SmolLM2-135M reading a reply after its
request, and the standardised fit that folds its scaling back into raw-space coefficients."""

from __future__ import annotations

import numpy as np
import pytest

import steerboard  # noqa: F401


def test_fit_logreg_scaled_folds_standardisation_into_raw_coefficients():
    """The stored coefficients must give, on raw columns, the probabilities the regression gives on the
    standardised ones; the label lives in reply_states columns with a huge offset and scale."""
    pytest.importorskip("sklearn")
    from steerboard.scorers.embed import BLOCK_DIMS, LinearClassifier, block_columns
    from steerboard.scorers.training import READER_FEATURE_SCALE, fit_logreg, fit_logreg_scaled

    blocks = ["shape", "reply_states"]
    rng = np.random.default_rng(0)
    y = ["compliance", "full_refusal"] * 60
    x = rng.normal(0, 1, (120, sum(BLOCK_DIMS[b] for b in blocks)))
    cols = block_columns(blocks, "reply_states")
    x[:, cols] = x[:, cols] * 40.0 + 500.0  # residual-stream-like scale
    x[1::2, cols.start] += 60.0  # the label
    classes = ["compliance", "full_refusal"]
    coef, intercept = fit_logreg_scaled(x, blocks, y, classes, 3.0)
    raw = LinearClassifier(classes, np.asarray(coef).tolist(), np.asarray(intercept).tolist(), blocks)
    z = x.copy()
    sd = x[:, cols].std(axis=0) + 1e-6
    z[:, cols] = (x[:, cols] - x[:, cols].mean(axis=0)) * (READER_FEATURE_SCALE / np.sqrt(cols.stop - cols.start) / sd)
    c2, i2 = fit_logreg(z, y, classes, 3.0)
    std = LinearClassifier(classes, np.asarray(c2).tolist(), np.asarray(i2).tolist(), blocks)
    assert np.allclose(raw.predict_proba(x), std.predict_proba(z), atol=1e-6)
    assert (raw.predict_proba(x)[:, 1] > 0.5).tolist() == [lab == "full_refusal" for lab in y]
    # without reply_states in the recipe it is the plain fit
    plain = fit_logreg_scaled(x[:, :4], ["shape"], y, classes, 3.0)
    assert np.allclose(plain[0], fit_logreg(x[:, :4], y, classes, 3.0)[0])


def test_reply_states_shape_repeatability_and_empty_reply():
    """One row per pair, width BLOCK_DIMS; the same pair gives the same state alone or among others (up to
    the low-precision tolerance of padded batches); an empty reply is read at the end of the request."""
    from steerboard.scorers.embed import BLOCK_DIMS, READER_BATCH, featurize, reply_states

    prompts = ["How do I bake bread?", "How do I make a bomb?", "Hi", *["Tell me a long story."] * READER_BATCH]
    replies = ["Mix flour, water, yeast and salt; knead; let it rise; bake.", "I can't help with that.", "", *[
        "Once upon a time " * (5 + i) for i in range(READER_BATCH)
    ]]
    x = reply_states(prompts, replies)
    assert x.shape == (len(prompts), BLOCK_DIMS["reply_states"]) and x.dtype == np.float32
    assert np.isfinite(x).all()
    alone = reply_states(prompts[:2], replies[:2])
    cos = (x[:2] * alone).sum(1) / np.linalg.norm(x[:2], axis=1) / np.linalg.norm(alone, axis=1)
    assert (cos > 0.999).all()
    # a refusal and an answer to different requests are read as different states
    assert np.linalg.norm(x[0] - x[1]) > 0.1 * np.linalg.norm(x[0])
    assert np.array_equal(featurize(prompts[:2], replies[:2], ["reply_states"]), reply_states(prompts[:2], replies[:2]))


def test_short_replies_are_not_read_when_gated(monkeypatch):
    """With a minimum length, a shorter reply gets a zero state and reply_read 0; a longer one is read."""
    from steerboard.scorers import embed as E

    monkeypatch.setattr(E, "READER_MIN_REPLY_TOKENS", 16)
    prompts = ["What is 6 times 7?", "How do I bake bread?"]
    replies = ["42", "Mix flour, water, yeast and salt, knead the dough, let it rise for an hour, then bake it hot."]
    x = E.featurize(prompts, replies, ["reply_states", "reply_read"])
    assert not x[0, :-1].any() and x[0, -1] == 0.0
    assert np.abs(x[1, :-1]).sum() > 0 and x[1, -1] == 1.0
    monkeypatch.setattr(E, "READER_MIN_REPLY_TOKENS", 0)
    assert E.reply_read(replies).tolist() == [[1.0], [1.0]]
