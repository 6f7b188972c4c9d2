"""The compfn recipes (step-by-step and its direct-format twin): registered, deterministic, and
their cards describe the format they were trained on."""

from __future__ import annotations

import json

from probekit.train import RECIPES
from probekit.train.compositional import CompFnRecipe, build_compfn, build_compfn_direct
from probekit.train.recipes import sha256_file

TINY = {"n_layer": 1, "n_embd": 16, "n_head": 2, "n_train_sequences": 512, "eval_every": 4}


def test_both_formats_are_registered():
    assert RECIPES["compfn"] is build_compfn
    assert RECIPES["compfn-direct"] is build_compfn_direct


def test_direct_twin_is_deterministic_and_its_card_says_direct(tmp_path):
    recipe = CompFnRecipe(fmt="direct", **TINY)
    kw = {"steps": 8, "progress": False, "recipe": recipe, "name": "compfn-direct"}
    m1 = build_compfn(tmp_path / "a", **kw)
    m2 = build_compfn(tmp_path / "b", **kw)
    assert sha256_file(tmp_path / "a" / "model.safetensors") == sha256_file(
        tmp_path / "b" / "model.safetensors"
    )
    assert m1["model_sha256"] == m2["model_sha256"]
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert saved["recipe"] == "compfn-direct" and saved["format"] == "direct"
    task = recipe.task()
    assert saved["n_output_tokens"] == task.length == task.seq_len - task.prompt_len
    card = (tmp_path / "a" / "card.md").read_text()
    assert card.startswith("# compfn-direct\n")
    assert "`<bos> t_1 .. t_5 <sep> x <sep> F(x)`" in card and "f_1(x) <sep>" not in card
    assert "probekit train compfn-direct" in card
    # the step-by-step card keeps its own layout and name
    step = build_compfn(tmp_path / "s", steps=2, progress=False, recipe=CompFnRecipe(**TINY))
    step_card = (tmp_path / "s" / "card.md").read_text()
    assert step["recipe"] == "compfn" and step_card.startswith("# compfn\n")
    assert "f_1(x) <sep> f_2(f_1(x))" in step_card
