"""The canaries task, and the shipped canary-lm checkpoint audited end to end."""

from __future__ import annotations

import json
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
