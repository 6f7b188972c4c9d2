"""The cyclic-progression task: values, tokenizer, split and labels against hand computations."""

from __future__ import annotations

import os

import pytest
import torch

from probekit.tasks import cyclic

os.environ.setdefault("HF_HUB_OFFLINE", "1")

P, K, T = 53, 12, 16


def test_progression_values_follow_the_formula():
    starts, steps = [0, 5, 52, 17, 40], [1, 12, 3, 7, 11]
    tokens = cyclic.progressions(P, K, T, starts=starts, steps=steps)
    assert tokens.shape == (5, T + 1)
    assert tokens.dtype == torch.long
    for row, a, k in zip(tokens.tolist(), starts, steps):
        assert row[0] == P  # <bos>
        assert row[1:] == [(a + t * k) % P for t in range(T)]


def test_progressions_without_pairs_cover_every_start_and_step_once():
    tokens = cyclic.progressions(P, K, T)
    assert tokens.shape == (P * K, T + 1)
    pairs = {(row[1], (row[2] - row[1]) % P) for row in tokens.tolist()}
    assert pairs == {(a, k) for a in range(P) for k in range(1, K + 1)}


def test_progressions_reject_bad_arguments():
    with pytest.raises(ValueError, match="starts and steps"):
        cyclic.progressions(P, K, T, starts=[1])
    with pytest.raises(ValueError, match="steps must lie in 1..12"):
        cyclic.progressions(P, K, T, starts=[1], steps=[13])
    with pytest.raises(ValueError, match="max_step"):
        cyclic.progressions(P, P, T)


def test_tokenizer_round_trip_matches_progression_ids():
    tok = cyclic.tokenizer(P, T)
    tokens = cyclic.progressions(P, K, T, starts=[3, 50], steps=[4, 9])
    texts = cyclic.as_text(tokens, P)
    assert texts[0] == "<bos> " + " ".join(str((3 + 4 * t) % P) for t in range(T))
    encoded = tok(texts)["input_ids"]
    assert encoded == tokens.tolist()  # <bos> written once in the text, never added again
    assert tok.batch_decode(tokens.tolist()) == texts
    assert tok("<bos> 3 7 11")["input_ids"] == [P, 3, 7, 11]
    assert tok("3 7 11")["input_ids"] == [3, 7, 11]
    assert tok("<bos> 3 99 x")["input_ids"] == [P, 3, P + 2, P + 2]  # unknown words -> <unk>
    assert (tok.bos_token_id, tok.pad_token_id, tok.unk_token_id) == (P, P + 1, P + 2)
    assert tok.convert_ids_to_tokens(list(range(P + 3))) == cyclic.vocabulary(P)


def test_split_is_disjoint_complete_and_seeded():
    a = cyclic.split(P, K, 0.2, seed=0)
    assert len(a.heldout) == round(0.2 * P * K)
    train = {tuple(x) for x in a.train.tolist()}
    held = {tuple(x) for x in a.heldout.tolist()}
    assert not train & held
    assert train | held == {tuple(x) for x in cyclic.all_pairs(P, K).tolist()}

    b = cyclic.split(P, K, 0.2, seed=0)
    assert torch.equal(a.train, b.train) and torch.equal(a.heldout, b.heldout)
    c = cyclic.split(P, K, 0.2, seed=1)
    assert not torch.equal(a.heldout, c.heldout)
    d = cyclic.split(P, K, 0.2, seed=torch.Generator().manual_seed(0))
    assert torch.equal(a.heldout, d.heldout)


def test_labels_give_value_step_and_time_per_position():
    tokens = cyclic.progressions(P, K, T, starts=[10, 2], steps=[5, 12])
    lab = cyclic.labels(tokens, P)
    assert set(lab) == {"value", "time", "step", "start", "next"}
    for name in lab:
        assert lab[name].shape == tokens.shape
    assert lab["value"][0, 0] == -1 and lab["time"][0, 0] == -1
    assert lab["value"][0, 1:].tolist() == [(10 + 5 * t) % P for t in range(T)]
    assert lab["time"][1, 1:].tolist() == list(range(T))
    assert (lab["step"][0] == 5).all() and (lab["step"][1] == 12).all()
    assert (lab["start"][1] == 2).all()
    assert lab["next"][0, :-1].tolist() == tokens[0, 1:].tolist() and lab["next"][0, -1] == -1


def test_next_token_accuracy_counts_only_determined_positions():
    tokens = cyclic.progressions(P, K, T, starts=[1, 2], steps=[1, 2])
    mask = cyclic.determined_positions(T)
    assert mask.tolist() == [False, False] + [True] * (T - 2) + [False]

    vocab = P + 3
    logits = torch.zeros(2, T + 1, vocab)
    logits[:, :-1].scatter_(2, tokens[:, 1:, None], 1.0)  # a perfect predictor
    assert cyclic.next_token_accuracy(logits, tokens) == 1.0

    wrong = logits.clone()
    wrong[:, 0] = 0  # position 0 (predicting x_0) is not scored
    wrong[:, 1] = 0  # position 1 (predicting x_1) is not scored
    wrong[0, 5] = torch.nn.functional.one_hot(torch.tensor(0), vocab) * 2.0  # one miss
    assert cyclic.next_token_accuracy(wrong, tokens) == pytest.approx(1 - 1 / (2 * (T - 2)))
