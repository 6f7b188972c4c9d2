"""analyses/compositional_ablation.py: the step-by-step vs direct comparison against Hugging
Face's own greedy ``generate`` on the shipped checkpoints."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch

import probekit as pk

ROOT = Path(__file__).resolve().parent.parent


def _study():
    spec = importlib.util.spec_from_file_location(
        "compositional_ablation", ROOT / "analyses" / "compositional_ablation.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _hf_final_answer(path: Path, tokens: torch.Tensor, prompt_len: int, length: int) -> float:
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(path).eval()
    with torch.no_grad():
        out = hf.generate(
            tokens[:, :prompt_len],
            attention_mask=torch.ones_like(tokens[:, :prompt_len]),
            max_length=tokens.shape[1],
            do_sample=False,
            pad_token_id=hf.config.pad_token_id,
        )
    return float((out[:, -length:] == tokens[:, -length:]).all(1).float().mean())


def test_format_comparison_matches_hf_generate():
    study = _study()
    task, splits, metrics = study._load_task()
    g = torch.Generator().manual_seed(5)
    drawn = {
        name: (splits[name][:24], task.random_inputs(24, g))
        for name in ("train", "heldout", "out_of_order")
    }
    result = study._format_comparison(
        pk.load(study.CHECKPOINT), task, splits, metrics["steps"], drawn
    )
    assert result is not None, "checkpoints/compfn-direct is shipped with the same split"
    frame = result.frame.set_index(["compositions", "format"])
    direct_task = dataclasses.replace(task, fmt="direct")
    for name, (comps, x) in drawn.items():
        for fmt, path, t in (
            ("step-by-step", study.CHECKPOINT, task),
            ("direct", study.DIRECT, direct_task),
        ):
            tokens = t.sequences(comps, x)
            expected = _hf_final_answer(path, tokens, t.prompt_len, t.length)
            assert frame.loc[(name, fmt), "final_answer"] == expected
    # the step-by-step model solves its training compositions; the summary says who wins
    assert frame.loc[("train", "step-by-step"), "final_answer"] == 1.0
    s = result.summary
    assert s["step_beats_direct_heldout"] == (
        s["heldout_final_answer_step"] > s["heldout_final_answer_direct"]
    )
    assert len(result.figures()) == 1


def test_bootstrap_drops_against_a_hand_bootstrap_and_a_known_answer():
    study = _study()
    # known answer: every input loses exactly 0.5 when a latter-half layer is ablated, 0 early
    clean = torch.ones(1, 40)
    scores = torch.cat([clean, torch.ones(3, 40), torch.full((3, 40), 0.5)])
    out = study.bootstrap_drops(scores, half=3, draws=200)
    assert out["drop"] == [0.0, 0.0, 0.0, 0.5, 0.5, 0.5]
    assert out["latter_minus_early"] == 0.5
    assert out["latter_minus_early_ci"] == (0.5, 0.5)
    # a noisy sweep against the same bootstrap written with numpy
    import numpy as np

    g = torch.Generator().manual_seed(5)
    scores = torch.rand(5, 30, generator=g)
    out = study.bootstrap_drops(scores, half=2, draws=500, seed=3)
    idx = torch.randint(0, 30, (500, 30), generator=torch.Generator().manual_seed(3)).numpy()
    s = scores.double().numpy()
    drops = s[0] - s[1:]
    boot = np.stack([drops[:, i].mean(1) for i in idx], 1)  # [layers, draws]
    diff = boot[2:].mean(0) - boot[:2].mean(0)
    assert np.allclose(out["lo"], np.quantile(boot, 0.025, axis=1))
    assert np.allclose(out["hi"], np.quantile(boot, 0.975, axis=1))
    assert np.allclose(out["latter_minus_early_ci"], np.quantile(diff, [0.025, 0.975]))
    assert out["latter_minus_early"] == pytest.approx(drops[2:].mean() - drops[:2].mean())
