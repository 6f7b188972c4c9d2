"""Recipes that rebuild the checkpoints shipped under ``checkpoints/``.

What exactly produced a shipped checkpoint, and can anyone produce it again? Each recipe here is
that answer in code: it builds the model, trains it with :func:`probekit.train.train_causal_lm`
from fixed seeds, measures it, and writes a Hugging Face directory (``config.json``,
``model.safetensors``, tokenizer files) with a ``card.md`` and ``metrics.json`` describing the
run. ``probekit train NAME`` calls ``RECIPES[NAME](out_dir)``.

Writes are atomic at the directory level: everything goes into a temporary directory next to
``out_dir`` and is renamed into place only after it is complete, so an interrupted or failed run
never leaves a half-written checkpoint and never damages the one already there.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from probekit.tasks import cyclic
from probekit.train.causal_lm import LMSettings, TrainResult, small_gpt2, train_recipe_lm

# ----------------------------------------------------------------------------- atomic directories


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())


def _set_default_modes(root: Path) -> None:
    # mkdtemp makes a 0700 directory; a shipped checkpoint should get the usual umask modes.
    umask = os.umask(0)
    os.umask(umask)
    root.chmod(0o777 & ~umask)
    for path in root.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


@contextmanager
def atomic_directory(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory next to ``out_dir``; on success it becomes ``out_dir``.

    If the block raises, the temporary directory is deleted and ``out_dir`` (if it existed) is
    untouched. On success the files are flushed to disk, an existing ``out_dir`` is moved aside,
    the new directory renamed into place, and only then is the old one deleted; if that rename
    fails the old directory is moved back.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield tmp
        _set_default_modes(tmp)
        _fsync_tree(tmp)
        old = None
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old / out_dir.name)
        try:
            os.replace(tmp, out_dir)
        except BaseException:
            if old is not None:
                os.replace(old / out_dir.name, out_dir)
                shutil.rmtree(old, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- cyclic-lm


@dataclass(frozen=True)
class CyclicLMRecipe(LMSettings):
    """Everything that defines the ``cyclic-lm`` checkpoint (task, split, model, optimisation)."""

    # task and split
    p: int = cyclic.DEFAULT_P
    max_step: int = cyclic.DEFAULT_MAX_STEP
    length: int = cyclic.DEFAULT_LENGTH
    holdout_fraction: float = 0.2
    split_seed: int = 0
    # model width (depth and optimisation: LMSettings' defaults)
    n_embd: int = 128
    eval_every: int = 250


def cyclic_lm_model(recipe: CyclicLMRecipe, seed: int) -> torch.nn.Module:
    """A freshly initialised ``GPT2LMHeadModel`` for the recipe (init drawn from ``seed``).

    No dropout (the task has no noise to regularise against, and it keeps training simple to
    reproduce); eager attention so hooks see the attention pattern; ``n_positions = T + 1``.
    """
    return small_gpt2(
        len(cyclic.vocabulary(recipe.p)),
        recipe.length + 1,
        recipe,
        seed,
        bos_id=cyclic.bos_id(recipe.p),
        pad_id=cyclic.pad_id(recipe.p),
    )


@torch.no_grad()
def _evaluate(model: torch.nn.Module, tokens: torch.Tensor) -> dict[str, float]:
    logits = model(tokens).logits
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)
    )
    return {"accuracy": cyclic.next_token_accuracy(logits, tokens), "loss": float(loss)}


@contextmanager
def _hf_progress_bars(enabled: bool) -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if not enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _machine() -> str:
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{torch.get_num_threads()} torch threads, Python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )


def training_record(result: TrainResult, settings: dict[str, Any]) -> dict[str, Any]:
    """What every causal-LM recipe records about its run in ``metrics.json``.

    ``settings`` (the recipe's fields and overrides), wall time, machine, final loss, the loss
    curve (10 points) and the periodic evaluations of :func:`train_causal_lm`.
    """
    return {
        "settings": settings,
        "train_seconds": round(result.seconds, 2),
        "machine": _machine(),
        "final_train_loss": result.losses[-1],
        "loss_curve": [[step, loss] for step, loss in result.loss_curve(10)],
        "evals": [{"step": step} | values for step, values in result.evals],
    }


def _card(
    recipe: CyclicLMRecipe,
    seed: int,
    metrics: dict[str, Any],
    config_text: str,
) -> str:
    curve = "\n".join(f"| {step} | {loss:.4f} |" for step, loss in metrics["loss_curve"])
    evals = "\n".join(
        f"| {e['step']} | {e['train_accuracy']:.4f} | {e['heldout_accuracy']:.4f} |"
        for e in metrics["evals"]
    )
    r = recipe
    return f"""# cyclic-lm

A 2-layer GPT-2 trained from scratch to continue arithmetic progressions modulo {r.p}. It is
shipped so that `probekit demo` and the examples have a real, small, fully reproducible
transformer to analyse (probes for the running value and the step, layer and head ablations,
membership of training vs held-out sequences).

## The task (`probekit.tasks.cyclic`)

A sequence is `<bos> x_0 x_1 ... x_{r.length - 1}` with `x_t = (a + t*k) mod {r.p}`, start `a` in
`0..{r.p - 1}`, step `k` in `1..{r.max_step}`. Number `n` is token `"n"` with id `n`; `<bos>` = {r.p},
`<pad>` = {r.p + 1}, `<unk>` = {r.p + 2}. The tokenizer adds no `<bos>` by itself: write it in the
text (`"<bos> 3 7 11"`). From `x_2` on the next number is determined by the first two, so
accuracy is exact greedy next-token accuracy at token positions 2..{r.length - 1} (predicting
`x_2..x_{r.length - 1}`), {r.length - 2} predictions per sequence.

Of the {r.p * r.max_step} pairs `(a, k)`, {metrics["n_heldout"]} ({r.holdout_fraction:.0%}, split
seed {r.split_seed}) are held out and never trained on; `split.json` lists both sets. The training
loss is next-token cross-entropy over every position, including the undetermined `x_0` and
`x_1`, so the model is an ordinary language model of the training sequences. The lowest loss a
model can reach on the training set is {metrics["train_loss_floor"]:.4f} nats: `ln {r.p}` for
`x_0`, the log of the number of training steps for that start for `x_1`, 0 afterwards, averaged
over {r.length} targets. The gap between held-out and train loss below comes from `x_1`: the model
has learned which steps each start takes in training (a membership signal for
`probekit.memorization`).

## Results

| metric | train pairs | held-out pairs |
|---|---|---|
| next-token accuracy (determined positions) | {metrics["train_accuracy"]:.4f} | {metrics["heldout_accuracy"]:.4f} |
| wrong predictions / predictions | {metrics["train_errors"]} / {metrics["train_predictions"]} | {metrics["heldout_errors"]} / {metrics["heldout_predictions"]} |
| mean next-token loss, all positions (nats) | {metrics["train_loss"]:.4f} | {metrics["heldout_loss"]:.4f} |

Accuracy during training:

| step | train | held-out |
|---|---|---|
{evals}

Training loss (mean over windows of the run):

| up to step | loss |
|---|---|
{curve}

## Architecture

`GPT2LMHeadModel`: {r.n_layer} layers, d_model {r.n_embd}, {r.n_head} heads, MLP {4 * r.n_embd},
context {r.length + 1}, vocabulary {len(cyclic.vocabulary(r.p))}, tied embeddings, no dropout,
{metrics["n_parameters"]:,} parameters (float32).

```json
{config_text}
```

## Recipe

- optimizer: AdamW (betas 0.9, 0.98), lr {r.lr}, weight decay {r.weight_decay} on matrices only,
  {r.warmup} warmup steps then cosine decay to 0
- steps {metrics["steps"]}, batch size {r.batch_size} sequences sampled with replacement from the
  {metrics["n_train"]} training sequences
- seed {seed} (model init and batch order); split seed {r.split_seed}
- wall-clock training time {metrics["train_seconds"]:.1f} s on {metrics["machine"]}
- deterministic: the same seed on the same machine and thread count gives the same weights

Rebuild with

```
probekit train cyclic-lm
```

or `probekit.train.RECIPES["cyclic-lm"](out_dir)`.

## Files

- `model.safetensors` sha256 `{metrics["model_sha256"]}`
- `config.json`, `generation_config.json`: the transformers config
- `tokenizer.json`, `tokenizer_config.json`: the WordLevel tokenizer
- `metrics.json`: the numbers above; `split.json`: the train and held-out `(a, k)` pairs

Loads offline with plain transformers:

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("checkpoints/cyclic-lm")
tokenizer = AutoTokenizer.from_pretrained("checkpoints/cyclic-lm")
```

It was trained and evaluated with eager attention; `config.json` does not record that, so
transformers picks SDPA by default (the same function up to float rounding). Pass
`attn_implementation="eager"` to `from_pretrained` to get attention weights back.
"""


def build_cyclic_lm(
    out_dir: str | os.PathLike,
    steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
    recipe: CyclicLMRecipe | None = None,
) -> dict[str, Any]:
    """Train the ``cyclic-lm`` checkpoint and write it to ``out_dir`` atomically.

    ``steps`` overrides the recipe's step count (for quick tests); ``seed`` sets model init and
    batch order (the held-out split is part of the task and uses ``recipe.split_seed``).
    Returns the metrics written to ``metrics.json``: train / held-out accuracy and loss, the loss
    curve, parameter count, timing, and the sha256 of ``model.safetensors``.
    """
    recipe = recipe or CyclicLMRecipe()
    steps = recipe.steps if steps is None else steps
    warmup = min(recipe.warmup, max(steps // 10, 0))
    task_split = cyclic.split(recipe.p, recipe.max_step, recipe.holdout_fraction, recipe.split_seed)

    def tokens_of(pairs: torch.Tensor) -> torch.Tensor:
        return cyclic.progressions(
            recipe.p, recipe.max_step, recipe.length, starts=pairs[:, 0], steps=pairs[:, 1]
        )

    train_tokens = tokens_of(task_split.train)
    heldout_tokens = tokens_of(task_split.heldout)
    model = cyclic_lm_model(recipe, seed)

    def eval_fn(m: torch.nn.Module) -> dict[str, float]:
        train, held = _evaluate(m, train_tokens), _evaluate(m, heldout_tokens)
        return {"train_accuracy": train["accuracy"], "heldout_accuracy": held["accuracy"]}

    result: TrainResult = train_recipe_lm(
        model,
        train_tokens,
        recipe,
        steps=steps,
        warmup=warmup,
        seed=seed,
        eval_fn=eval_fn,
        progress=progress,
    )
    train_eval, heldout_eval = _evaluate(model, train_tokens), _evaluate(model, heldout_tokens)
    train_predictions = len(task_split.train) * (recipe.length - 2)
    heldout_predictions = len(task_split.heldout) * (recipe.length - 2)
    steps_per_start = torch.bincount(task_split.train[:, 0], minlength=recipe.p).float()
    loss_floor = (
        math.log(recipe.p) + float(steps_per_start[task_split.train[:, 0]].log().mean())
    ) / recipe.length
    metrics: dict[str, Any] = {
        "recipe": "cyclic-lm",
        "train_accuracy": train_eval["accuracy"],
        "heldout_accuracy": heldout_eval["accuracy"],
        "train_loss": train_eval["loss"],
        "heldout_loss": heldout_eval["loss"],
        "train_loss_floor": loss_floor,
        "train_predictions": train_predictions,
        "train_errors": round((1 - train_eval["accuracy"]) * train_predictions),
        "heldout_predictions": heldout_predictions,
        "heldout_errors": round((1 - heldout_eval["accuracy"]) * heldout_predictions),
        "accuracy_positions": f"token positions 2..{recipe.length - 1} (determined next token)",
        "n_train": len(task_split.train),
        "n_heldout": len(task_split.heldout),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "steps": steps,
        "seed": seed,
        **training_record(result, asdict(recipe) | {"steps": steps, "warmup": warmup}),
    }

    tok = cyclic.tokenizer(recipe.p, recipe.length)
    with atomic_directory(out_dir) as tmp, _hf_progress_bars(progress):
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        metrics["model_sha256"] = sha256_file(tmp / "model.safetensors")
        (tmp / "split.json").write_text(
            json.dumps(
                {
                    "columns": ["start", "step"],
                    "train": task_split.train.tolist(),
                    "heldout": task_split.heldout.tolist(),
                }
            )
            + "\n"
        )
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        config_text = (tmp / "config.json").read_text().strip()
        (tmp / "card.md").write_text(_card(recipe, seed, metrics, config_text))
    return metrics


Recipe = Callable[..., dict[str, Any]]


class RecipeRegistry(Mapping[str, Recipe]):
    """Recipe name -> build function, importing each recipe's module only when it is asked for.

    Entries are callables or ``"module:function"`` strings, so listing the recipes (``probekit
    train``) stays cheap and one recipe's heavy imports never slow down another's.
    """

    def __init__(self, entries: dict[str, Recipe | str]) -> None:
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> Recipe:
        entry = self._entries[name]
        if isinstance(entry, str):
            module_name, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module_name), attr)
            self._entries[name] = entry
        return entry

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


#: ``probekit train NAME`` -> ``RECIPES[NAME](out_dir, steps=None, seed=0, progress=True)``,
#: returning the metrics written to the checkpoint's ``metrics.json``.
RECIPES = RecipeRegistry(
    {
        "cyclic-lm": build_cyclic_lm,
        "canary-lm": "probekit.train.canary:build_canary_lm",
        "kg-ring": "probekit.train.knowledge_graph:build_kg_ring",
        "compfn": "probekit.train.compositional:build_compfn",
        "compfn-direct": "probekit.train.compositional:build_compfn_direct",
        "cog-rnn-bimt": "probekit.train.cognitive:build_cog_rnn_bimt",
        "cog-rnn-l1": "probekit.train.cognitive:build_cog_rnn_l1",
        "cog-rnn-plain": "probekit.train.cognitive:build_cog_rnn_plain",
        "grid-rnn": "probekit.train.navigation:build_grid_rnn",
        "grid-ssl": "probekit.train.grid_ssl:build_grid_ssl",
        "graphnav-stepwise": "probekit.train.graph_navigation:build_graphnav_stepwise",
        "graphnav-direct": "probekit.train.graph_navigation:build_graphnav_direct",
        "graphnav-random": "probekit.train.graph_navigation:build_graphnav_random",
        "graphnav-incontext": "probekit.train.graph_navigation:build_graphnav_incontext",
        "graphnav-cap-sweep": "probekit.train.graph_navigation:build_graphnav_cap_sweep",
        "mmcr-mlp": "probekit.train.geometry:build_mmcr_mlp",
        "brainbench-lm": "probekit.train.brainbench:build_brainbench_lm",
        "icl-energy": "probekit.train.energy:build_icl_energy",
    }
)
