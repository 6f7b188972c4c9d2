"""The canaries task, and the shipped canary-lm checkpoint audited end to end."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from probekit.cli import main
from probekit.tasks import canaries

CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "canary-lm"


def test_split_topics_is_seeded_disjoint_and_near_the_fraction():
    train, held = canaries.split_topics(seed=0, heldout_fraction=0.2)
    assert (train, held) == canaries.split_topics(seed=0, heldout_fraction=0.2)
    assert not set(train) & set(held)
    topics = canaries.corpus_topics()
    assert set(train) | set(held) == set(topics)
    share = sum(len(topics[k]) for k in held) / sum(len(v) for v in topics.values())
    assert 0.2 <= share < 0.35
    assert canaries.split_topics(seed=1)[1] != held


def test_schedule_places_every_exposure_at_the_planned_steps():
    tokens = torch.zeros(6, 4, dtype=torch.long)
    c = canaries.make_schedule(
        tokens, ["random"] * 6, [1, 2, 4, 1, 2, 4], waves=[10, 50], spacing=3, total_steps=100
    )
    assert c.first_seen == [10, 50, 11, 51, 12, 52]
    assert c.steps[2] == [11, 14, 17, 20]
    assert [len(s) for s in c.steps] == [1, 2, 4, 1, 2, 4]
    table = c.at_step()
    assert sum(len(v) for v in table.values()) == 14
    assert table[14] == [2]
    with pytest.raises(ValueError, match="do not fit before step 100"):
        canaries.make_schedule(tokens[:1], ["random"], [8], [95], 3, 100)
    spread = canaries.make_schedule(tokens[:1], ["random"], [4], [20], None, 100)
    assert spread.steps == [[20, 40, 60, 80]]


def test_shared_ngram_fraction_by_hand():
    windows = torch.tensor([[1, 2, 3, 4, 5], [9, 9, 9, 9, 9]])
    stream = torch.tensor([0, 1, 2, 3, 7, 4, 5])  # has (1,2), (2,3), (4,5); not (3,4) or (9,9)
    got = canaries.shared_ngram_fraction(windows, stream, 2)
    assert got.tolist() == [0.75, 0.0]
    with pytest.raises(ValueError, match="n must be"):
        canaries.shared_ngram_fraction(windows, stream, 6)


def test_windows_are_non_overlapping_and_evenly_spread():
    stream = torch.arange(100)
    w = canaries.windows(stream, 10, count=4)
    assert w[:, 0].tolist() == [0, 30, 60, 90]
    assert canaries.windows(stream, 10).shape == (10, 10)


def test_shipped_canary_lm_audit_finds_frequent_canaries(tmp_path, capsys):
    schedule = json.loads((CHECKPOINT / "schedule.json").read_text())
    reps = np.asarray(schedule["repetitions"])
    out = tmp_path / "audit"
    argv = ["audit", str(CHECKPOINT), "--data", str(CHECKPOINT / "data" / "canaries.jsonl")]
    assert main(argv + ["--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out / "table.csv")
    assert len(table) == len(reps)
    frequent = table["memorized"][reps == 32].mean()
    rare = table["memorized"][reps <= 2].mean()
    assert frequent >= 0.5  # the card: 8 of the 12 canaries seen 32 times
    assert rare == 0.0
    metrics = json.loads((CHECKPOINT / "metrics.json").read_text())
    assert int(table["memorized"].sum()) == metrics["audit"]["canaries_memorized"]
    size = sum(p.stat().st_size for p in CHECKPOINT.rglob("*") if p.is_file())
    assert size <= 40 * 2**20


def test_shipped_schedule_shows_rare_canaries_early_once_and_plants_controls():
    """The recipe's schedule (no training): canaries seen once to four times are shown early and
    never again, before the first snapshot; the spread arm reaches the end; controls are
    never shown; snapshots every 5% of training from there on."""
    from probekit.train.canary import CanaryLMRecipe, canary_data, snapshot_steps

    recipe = CanaryLMRecipe()
    data = canary_data(recipe, recipe.steps)
    c = data.canaries
    # held-out text only where it is new: passage canaries and non-members share at most 10% of
    # their 8-grams with the training text (by hand: a set of the training 8-grams)
    train = data.train_stream.tolist()
    grams = {tuple(train[i : i + 8]) for i in range(len(train) - 7)}
    passages = c.tokens[[k == "passage" for k in c.kind]]
    for row in torch.cat([passages, data.nonmembers]).tolist():
        assert np.mean([tuple(row[i : i + 8]) in grams for i in range(len(row) - 7)]) <= 0.1
    snaps = snapshot_steps(recipe, recipe.steps)
    assert len(snaps) >= 14 and snaps[0] == recipe.snapshot_start
    assert set(np.diff(snaps + [recipe.steps])) == {recipe.steps // 20}
    reps = np.asarray(c.repetitions)
    for kind in ("passage", "random"):
        of_kind = np.asarray(c.kind) == kind
        assert (of_kind & (reps == 0)).sum() >= 24 and (of_kind & (reps == 1)).sum() >= 24
    for i, r in enumerate(c.repetitions):
        assert len(c.steps[i]) == r
        if r == 0:
            assert c.first_seen[i] is None and c.matched_step[i] < snaps[0]
        elif r < recipe.spread_from:
            assert c.steps[i][0] == c.first_seen[i] and max(c.steps[i]) < snaps[0]
        else:
            assert max(c.steps[i]) > 0.8 * recipe.steps
    # a never-seen control is not a seen canary's text
    seen = {tuple(t) for t, r in zip(c.tokens.tolist(), reps) if r}
    assert not any(tuple(t) in seen for t, r in zip(c.tokens.tolist(), reps) if r == 0)


def test_canary_recipe_small_run_writes_schedule_snapshots_and_ce_trace(tmp_path):
    """A 160-step run of a tiny model through the whole recipe; the CE trace on the card is
    checked against CE computed here with the model's own forward pass."""
    import dataclasses

    from sklearn.metrics import roc_auc_score
    from transformers import AutoModelForCausalLM

    from probekit.train.canary import CanaryLMRecipe, build_canary_lm

    recipe = dataclasses.replace(
        CanaryLMRecipe(),
        hidden_size=32,
        n_layer=1,
        n_head=2,
        intermediate_size=64,
        vocab_size=512,
        per_repetition=(4, 4, 2, 1, 1, 1, 1),
        n_members=16,
        n_nonmembers=16,
    )
    out = tmp_path / "canary"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 16 non-members: the membership warning
        m = build_canary_lm(out, steps=160, recipe=recipe, progress=False)
    schedule = json.loads((out / "schedule.json").read_text())
    ids = [json.loads(line)["id"] for line in (out / "data" / "canaries.jsonl").open()]
    assert [c["id"] for c in schedule["canaries"]] == ids == schedule["id"]
    for c in schedule["canaries"]:
        assert (c["first_seen"] is None) == (c["repetitions"] == 0)
        assert len(c["steps"]) == c["repetitions"]
    snaps = sorted(int(p.name[5:]) for p in (out / "snapshots").iterdir())
    assert snaps == m["snapshot_steps"] == schedule["snapshot_steps"]
    lat = m["latent_summary"]
    assert sum(lat["labels"].values()) == len(ids)
    assert lat["labels"]["never-seen"] == sum(c["repetitions"] == 0 for c in schedule["canaries"])
    assert lat["checkpoints"] == snaps + [160]
    # the final CE diagnostic by hand: HF forward pass, mean next-token CE over the 96 tokens
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tokens = torch.tensor(
        [json.loads(line)["tokens"] for line in (out / "data" / "canaries.jsonl").open()]
    )
    with torch.no_grad():
        logits = model(tokens).logits[:, :-1]
    ce = (
        torch.nn.functional.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")
        .mean(1)
        .numpy()
    )
    reps = np.asarray(schedule["repetitions"])
    audit = pd.DataFrame(m["audit"]["by_repetition"])
    assert audit.loc[audit["repetitions"] == 0, "n"].sum() == (reps == 0).sum()
    from probekit import memorization

    lev = memorization.audit(model, tokens, tokenizer=None).frame["lev"].to_numpy()
    hidden = (reps >= 1) & (reps <= 2) & (lev >= 10)
    pick = hidden | (reps == 0)
    expected = roc_auc_score(hidden[pick], -ce[pick])
    assert lat["ce_auroc_final"]["all"] == pytest.approx(expected, abs=2e-4)
    assert (out / "card.md").read_text().count("| 160 |") >= 1
