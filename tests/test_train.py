"""The causal-LM trainer, the cyclic-lm recipe, its atomic save, and the shipped checkpoint."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from probekit.tasks import cyclic  # noqa: E402
from probekit.train import (  # noqa: E402
    RECIPES,
    CyclicLMRecipe,
    atomic_directory,
    build_cyclic_lm,
    cosine_lr_factor,
    train_causal_lm,
)
from probekit.train import recipes as recipes_module  # noqa: E402
from probekit.train.recipes import sha256_file  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "cyclic-lm"
P, K, T = 13, 4, 8
TINY = CyclicLMRecipe(
    p=P, max_step=K, length=T, n_layer=1, n_embd=16, n_head=2, steps=20, batch_size=16
)


def tiny_model(seed: int = 0) -> torch.nn.Module:
    return recipes_module.cyclic_lm_model(TINY, seed)


def tiny_data() -> torch.Tensor:
    return cyclic.progressions(P, K, T)


def train_tiny(model: torch.nn.Module, seed: int, steps: int = 20, lr: float = 3e-3):
    return train_causal_lm(
        model,
        tiny_data(),
        steps=steps,
        batch_size=16,
        lr=lr,
        weight_decay=0.1,
        warmup=2,
        seed=seed,
        progress=False,
    )


def test_cosine_schedule_matches_hand_values():
    assert cosine_lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert cosine_lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert cosine_lr_factor(10, 100, 10) == pytest.approx(1.0)
    mid = 10 + 89 / 2
    assert cosine_lr_factor(int(mid), 100, 10) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * (int(mid) - 10) / 89))
    )
    assert cosine_lr_factor(99, 100, 10) == pytest.approx(0.0, abs=1e-12)
    assert cosine_lr_factor(99, 100, 10, floor=0.1) == pytest.approx(0.1)


def test_same_seed_gives_identical_weights_different_seed_differs():
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    a, b, c = tiny_model(0), tiny_model(0), tiny_model(0)
    train_tiny(a, seed=0)
    train_tiny(b, seed=0)
    train_tiny(c, seed=1)  # same init, different batch order
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    # the loop leaves the determinism flag as it found it
    assert torch.are_deterministic_algorithms_enabled() == was_deterministic


def test_loss_decreases_on_a_tiny_run():
    result = train_tiny(tiny_model(0), seed=0, steps=80, lr=1e-2)
    assert len(result.losses) == 80
    first, last = result.losses[0], sum(result.losses[-10:]) / 10
    assert first == pytest.approx(math.log(P + 3), rel=0.1)  # near-uniform at init
    assert last < 0.75 * first


def test_train_rejects_bad_arguments():
    with pytest.raises(ValueError, match="train_tokens must be"):
        train_causal_lm(
            tiny_model(),
            torch.zeros(5, dtype=torch.long),
            steps=1,
            batch_size=1,
            lr=1e-3,
            weight_decay=0.0,
            warmup=0,
            seed=0,
            progress=False,
        )
    with pytest.raises(ValueError, match="warmup"):
        train_causal_lm(
            tiny_model(),
            tiny_data(),
            steps=5,
            batch_size=1,
            lr=1e-3,
            weight_decay=0.0,
            warmup=5,
            seed=0,
            progress=False,
        )


def test_recipe_twice_gives_bit_identical_checkpoint(tmp_path):
    assert RECIPES["cyclic-lm"] is build_cyclic_lm
    m1 = build_cyclic_lm(tmp_path / "a", steps=20, seed=0, progress=False, recipe=TINY)
    m2 = build_cyclic_lm(tmp_path / "b", steps=20, seed=0, progress=False, recipe=TINY)
    assert m1["model_sha256"] == m2["model_sha256"]
    assert sha256_file(tmp_path / "a" / "model.safetensors") == m1["model_sha256"]
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "card.md"):
        assert (tmp_path / "a" / name).is_file()
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["steps"] == 20
    m3 = build_cyclic_lm(tmp_path / "c", steps=20, seed=1, progress=False, recipe=TINY)
    assert m3["model_sha256"] != m1["model_sha256"]


def test_failure_mid_save_leaves_existing_checkpoint_intact(tmp_path, monkeypatch):
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"old weights")
    (out / "card.md").write_text("old card")

    def broken_card(*args, **kwargs):
        raise RuntimeError("disk full while writing card.md")

    # model.safetensors and the tokenizer are already in the temp dir when the card fails
    monkeypatch.setattr(recipes_module, "_card", broken_card)
    with pytest.raises(RuntimeError, match="disk full"):
        build_cyclic_lm(out, steps=3, progress=False, recipe=TINY)
    assert sorted(p.name for p in out.iterdir()) == ["card.md", "model.safetensors"]
    assert (out / "model.safetensors").read_bytes() == b"old weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp dirs left

    monkeypatch.undo()
    build_cyclic_lm(out, steps=3, progress=False, recipe=TINY)
    assert (out / "model.safetensors").read_bytes() != b"old weights"
    assert "cyclic-lm" in (out / "card.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_atomic_directory_creates_only_on_success(tmp_path):
    target = tmp_path / "new"
    with pytest.raises(KeyError), atomic_directory(target) as tmp:
        (tmp / "x").write_text("partial")
        raise KeyError("boom")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_directory(target) as tmp:
        (tmp / "x").write_text("done")
    assert (target / "x").read_text() == "done"
    assert list(tmp_path.iterdir()) == [target]


# ----------------------------------------------------------------------------- shipped checkpoint


@pytest.fixture(scope="module")
def shipped():
    if not SHIPPED.is_dir():
        pytest.fail(f"{SHIPPED} is missing: rebuild it with `probekit train cyclic-lm`")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(SHIPPED)
    tokenizer = AutoTokenizer.from_pretrained(SHIPPED)
    metrics = json.loads((SHIPPED / "metrics.json").read_text())
    split = json.loads((SHIPPED / "split.json").read_text())
    return model, tokenizer, metrics, split


def test_shipped_checkpoint_reproduces_its_card(shipped):
    model, tokenizer, metrics, split = shipped
    s = metrics["settings"]
    p, max_step, length = s["p"], s["max_step"], s["length"]
    regenerated = cyclic.split(p, max_step, s["holdout_fraction"], s["split_seed"])
    assert split["heldout"] == regenerated.heldout.tolist()
    assert split["train"] == regenerated.train.tolist()

    held = torch.tensor(split["heldout"])
    tokens = cyclic.progressions(p, max_step, length, starts=held[:, 0], steps=held[:, 1])
    # the shipped tokenizer reads the task's text as the task's ids
    assert tokenizer(cyclic.as_text(tokens[:8], p))["input_ids"] == tokens[:8].tolist()
    with torch.no_grad():
        logits = model(tokens).logits
    accuracy = cyclic.next_token_accuracy(logits, tokens)
    assert accuracy == pytest.approx(metrics["heldout_accuracy"], abs=0.01)
    assert accuracy > 0.95

    train = torch.tensor(split["train"])[::4]  # a subsample keeps the test fast
    train_tokens = cyclic.progressions(p, max_step, length, starts=train[:, 0], steps=train[:, 1])
    with torch.no_grad():
        train_accuracy = cyclic.next_token_accuracy(model(train_tokens).logits, train_tokens)
    assert train_accuracy == pytest.approx(metrics["train_accuracy"], abs=0.01)

    assert sha256_file(SHIPPED / "model.safetensors") == metrics["model_sha256"]
    card = (SHIPPED / "card.md").read_text()
    assert metrics["model_sha256"] in card
    assert f"{metrics['heldout_accuracy']:.4f}" in card
    assert (SHIPPED / "model.safetensors").stat().st_size < 4 * 2**20
