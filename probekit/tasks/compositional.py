"""Compositions of simple functions: does a transformer compose capabilities it learned apart?

The data-generating process of seeds/abstracts.md §8 (compositional capabilities of
autoregressive transformers). An input ``x`` is ``length`` (6) tokens over an alphabet of
``alphabet`` (10) symbols. There are ``depth`` (5) *slots*; slot ``d`` owns ``n_functions`` (3)
functions plus the identity, so an in-order composition chooses one of 4 functions per slot:
``4 ** 5 = 1024`` compositions ``F = f_5 o ... o f_1``. A slot's function is a random bijection
of the alphabet applied token-wise; optionally (``permutations=True``) slot 0 instead owns
permutations of the ``length`` positions.

Every function has its own *task token* (``"s{d}f{k}"``, with ``k = 0`` the identity of slot
``d``), and a composition is written as its 5 task tokens in the order they are applied. An
*out-of-order* composition applies functions of the slots in another order (e.g. a slot-3
function first); none is ever trained on, which tests whether the model composes functions
in orders it never saw.

Formats (``<bos>`` first, ``<sep>`` between parts):

- direct: ``<bos> t_1 .. t_5 <sep> x <sep> F(x)``
- step-by-step: ``<bos> t_1 .. t_5 <sep> x <sep> f_1(x) <sep> f_2(f_1(x)) ... <sep> F(x)``

The *prompt* is everything up to and including the ``<sep>`` after ``x``; the rest is the
*output* the model generates. Accuracy (:func:`exact_match`) is exact match of every output
token under greedy autoregressive generation.

Token ids. Symbol ``v`` is the token ``str(v)`` with id ``v`` (``0..alphabet-1``); then the task
tokens in slot-major order (``s0f0, s0f1, ..., s4f3``), then ``<bos>``, ``<sep>``, ``<pad>``,
``<unk>``.

Example::

    >>> from probekit.tasks import compositional as comp
    >>> task = comp.CompositionTask(seed=0)
    >>> seq = task.sequences([[0, 0, 0, 0, 0]], torch.tensor([[1, 2, 3, 4, 5, 6]]))
    >>> task.decode(seq[0])
    '<bos> s0f0 s1f0 s2f0 s3f0 s4f0 <sep> 1 2 3 4 5 6 <sep> 1 2 3 4 5 6 <sep> 1 2 3 4 5 6 ...'
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch

from probekit.validation import as_generator, check_int

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerFast

FORMATS = ("step", "direct")

BOS = "<bos>"
SEP = "<sep>"
PAD = "<pad>"
UNK = "<unk>"


class CompositionSplit(NamedTuple):
    """Compositions as ``LongTensor [n, depth]`` of per-step function ids (see
    :meth:`CompositionTask.function_id`): ``train``, held-out ``heldout`` (in-order, never
    trained on) and ``out_of_order`` (slot order permuted, never trained on)."""

    train: torch.Tensor
    heldout: torch.Tensor
    out_of_order: torch.Tensor


@dataclass(frozen=True)
class CompositionTask:
    """The task: sizes, the drawn functions (from ``seed``) and the token layout.

    ``alphabet`` symbols, inputs of ``length`` tokens, ``depth`` slots of ``n_functions``
    functions each (plus the identity); ``permutations=True`` makes slot 0's functions
    permutations of positions instead of token-wise bijections. ``fmt`` is ``"step"`` or
    ``"direct"``.
    """

    alphabet: int = 10
    length: int = 6
    depth: int = 5
    n_functions: int = 3
    permutations: bool = False
    fmt: str = "step"
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("alphabet", self.alphabet, low=2)
        check_int("length", self.length, low=1)
        check_int("depth", self.depth, low=1)
        check_int("n_functions", self.n_functions, low=1)
        if self.fmt not in FORMATS:
            raise ValueError(f"fmt must be one of {FORMATS}, got {self.fmt!r}")
        check_int("seed", self.seed, low=0)
        g = torch.Generator().manual_seed(self.seed)
        # tables[d, k] maps symbol -> symbol (k = 0 is the identity); perm_tables[k] maps
        # output position -> input position for slot 0 when permutations=True.
        tables = torch.arange(self.alphabet).repeat(self.depth, self.n_functions + 1, 1)
        perms = torch.arange(self.length).repeat(self.n_functions + 1, 1)
        for d in range(self.depth):
            for k in range(1, self.n_functions + 1):
                if d == 0 and self.permutations:
                    perms[k] = torch.randperm(self.length, generator=g)
                else:
                    tables[d, k] = torch.randperm(self.alphabet, generator=g)
        object.__setattr__(self, "_tables", tables)
        object.__setattr__(self, "_perms", perms)

    # ------------------------------------------------------------------ vocabulary and layout

    @property
    def choices(self) -> int:
        """Functions per slot, identity included: ``n_functions + 1``."""
        return self.n_functions + 1

    @property
    def n_task_tokens(self) -> int:
        return self.depth * self.choices

    def function_id(self, slot: int, k: int) -> int:
        """Id of function ``k`` (0 = identity) of ``slot``: ``slot * choices + k``; the task
        token of that function has token id ``alphabet + function_id``."""
        return slot * self.choices + k

    def vocabulary(self) -> list[str]:
        """Token strings indexed by id (see the module docstring)."""
        symbols = [str(v) for v in range(self.alphabet)]
        tasks = [f"s{d}f{k}" for d in range(self.depth) for k in range(self.choices)]
        return symbols + tasks + [BOS, SEP, PAD, UNK]

    @property
    def bos_id(self) -> int:
        return self.alphabet + self.n_task_tokens

    @property
    def sep_id(self) -> int:
        return self.bos_id + 1

    @property
    def pad_id(self) -> int:
        return self.bos_id + 2

    @property
    def unk_id(self) -> int:
        return self.bos_id + 3

    @property
    def vocab_size(self) -> int:
        return self.bos_id + 4

    @property
    def prompt_len(self) -> int:
        """Tokens up to and including the ``<sep>`` after ``x``: ``1 + depth + 1 + length + 1``."""
        return self.depth + self.length + 3

    @property
    def n_steps_written(self) -> int:
        """Outputs written after the prompt: ``depth`` (step-by-step) or 1 (direct)."""
        return self.depth if self.fmt == "step" else 1

    @property
    def seq_len(self) -> int:
        """Total tokens: the prompt plus ``n_steps_written`` blocks of ``length`` tokens, with a
        ``<sep>`` between consecutive blocks."""
        return self.prompt_len + self.n_steps_written * (self.length + 1) - 1

    def output_start(self, step: int) -> int:
        """Token position of the first token of written output block ``step`` (0-based)."""
        return self.prompt_len + step * (self.length + 1)

    def tokenizer(self) -> PreTrainedTokenizerFast:
        """A ``transformers`` WordLevel tokenizer over :meth:`vocabulary` (whitespace split, no
        automatically added tokens: write ``<bos>`` in the text)."""
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        vocab = {token: i for i, token in enumerate(self.vocabulary())}
        backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        return PreTrainedTokenizerFast(
            tokenizer_object=backend,
            bos_token=BOS,
            sep_token=SEP,
            pad_token=PAD,
            unk_token=UNK,
            clean_up_tokenization_spaces=False,
            model_max_length=self.seq_len,
        )

    def decode(self, tokens: torch.Tensor) -> str:
        """Space-separated text of one sequence ``tokens [L]``."""
        words = self.vocabulary()
        return " ".join(words[i] for i in torch.as_tensor(tokens).tolist())

    # ------------------------------------------------------------------ functions

    def tables(self) -> torch.Tensor:
        """``LongTensor [depth, choices, alphabet]``: symbol maps of every slot's functions
        (slot 0 holds identities when ``permutations=True``)."""
        return self._tables.clone()

    def position_permutations(self) -> torch.Tensor:
        """``LongTensor [choices, length]``: output position ``i`` of slot-0 function ``k`` takes
        input position ``perm[k, i]`` (identities unless ``permutations=True``)."""
        return self._perms.clone()

    def _check_compositions(self, compositions: Sequence | torch.Tensor) -> torch.Tensor:
        comp = torch.as_tensor(compositions, dtype=torch.long)
        if comp.ndim != 2 or comp.shape[1] != self.depth:
            raise ValueError(
                f"compositions must be [n, depth={self.depth}] function ids, got shape "
                f"{tuple(comp.shape)}"
            )
        if comp.numel() and (int(comp.min()) < 0 or int(comp.max()) >= self.n_task_tokens):
            raise ValueError(f"function ids must lie in 0..{self.n_task_tokens - 1}")
        return comp

    def apply(self, function_ids: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Apply one function per row: ``function_ids [n]`` to ``x [n, length]`` -> ``[n, length]``."""
        slot, k = function_ids // self.choices, function_ids % self.choices
        if self.permutations:
            permuted = torch.gather(x, 1, self._perms[k])
            out = self._tables[slot[:, None], k[:, None], x]
            return torch.where((slot == 0)[:, None], permuted, out)
        return self._tables[slot[:, None], k[:, None], x]

    def trajectory(self, compositions: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Intermediate outputs ``[n, depth, length]``: ``[f_1(x), f_2(f_1(x)), ..., F(x)]``."""
        comp = self._check_compositions(compositions)
        x = self._check_inputs(x, len(comp))
        steps, current = [], x
        for d in range(self.depth):
            current = self.apply(comp[:, d], current)
            steps.append(current)
        return torch.stack(steps, dim=1)

    def _check_inputs(self, x: torch.Tensor, n: int) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.long)
        if x.ndim != 2 or x.shape != (n, self.length):
            raise ValueError(
                f"x must be [n={n}, length={self.length}] symbols, got shape {tuple(x.shape)}"
            )
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.alphabet):
            raise ValueError(f"symbols must lie in 0..{self.alphabet - 1}")
        return x

    def random_inputs(self, n: int, seed: int | torch.Generator) -> torch.Tensor:
        """``n`` inputs drawn uniformly with replacement: ``LongTensor [n, length]``."""
        check_int("n", n, low=0)
        return torch.randint(self.alphabet, (n, self.length), generator=as_generator(seed))

    # ------------------------------------------------------------------ sequences

    def sequences(self, compositions: Sequence | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Token ids ``LongTensor [n, seq_len]`` of compositions ``[n, depth]`` applied to
        inputs ``x [n, length]``, in this task's format."""
        comp = self._check_compositions(compositions)
        x = self._check_inputs(x, len(comp))
        n = len(comp)
        traj = self.trajectory(comp, x)
        blocks = traj if self.fmt == "step" else traj[:, -1:]
        sep = torch.full((n, blocks.shape[1], 1), self.sep_id, dtype=torch.long)
        written = torch.cat([sep, blocks], dim=2).reshape(n, -1)
        bos = torch.full((n, 1), self.bos_id, dtype=torch.long)
        sep1 = torch.full((n, 1), self.sep_id, dtype=torch.long)
        return torch.cat([bos, comp + self.alphabet, sep1, x, written], dim=1)

    def sample(
        self, compositions: Sequence | torch.Tensor, n: int, seed: int | torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` sequences, each a composition drawn uniformly from ``compositions`` applied to a
        random input. Returns ``(tokens [n, seq_len], composition index [n])``."""
        comp = self._check_compositions(compositions)
        g = as_generator(seed)
        which = torch.randint(len(comp), (n,), generator=g)
        x = self.random_inputs(n, g)
        return self.sequences(comp[which], x), which

    def output_mask(self) -> torch.Tensor:
        """``BoolTensor [seq_len - 1]`` over *target* positions (target ``j`` is token
        ``j + 1``): True where the target is an output token (everything after the prompt)."""
        mask = torch.zeros(self.seq_len - 1, dtype=torch.bool)
        mask[self.prompt_len - 1 :] = True
        return mask

    def labels(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-position probe labels of ``tokens [n, seq_len]``, each ``LongTensor [n, seq_len]``
        (``-1`` where undefined):

        - ``"next"``: the next token (what the model must write next);
        - ``"step"``: in an output block, the index of the step being written (``0..depth-1``
          for step-by-step); at the ``<sep>`` that opens block ``s``, ``s``;
        - ``"task"``: the in-slot index ``k`` of the function applied at that step (the task
          token at that depth, modulo the slot);
        - ``"slot"``: the slot of the function applied at that step.
        """
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        if tokens.ndim != 2 or tokens.shape[1] != self.seq_len:
            raise ValueError(
                f"tokens must be [n, seq_len={self.seq_len}], got shape {tuple(tokens.shape)}"
            )
        n = tokens.shape[0]
        comp = tokens[:, 1 : 1 + self.depth] - self.alphabet
        step = torch.full((n, self.seq_len), -1, dtype=torch.long)
        for s in range(self.n_steps_written):
            start = self.output_start(s) - 1  # the <sep> opening the block
            step[:, start : start + self.length] = s
        # the last output token has no next token; direct format writes F = step depth-1
        valid = step >= 0
        depth_index = step if self.fmt == "step" else torch.where(valid, self.depth - 1, -1)
        func = torch.where(valid, comp.gather(1, depth_index.clamp(min=0)), -1)
        task = torch.where(valid, func % self.choices, -1)
        slot = torch.where(valid, func // self.choices, -1)
        nxt = torch.cat([tokens[:, 1:], torch.full((n, 1), -1, dtype=torch.long)], dim=1)
        return {"next": nxt, "step": depth_index, "task": task, "slot": slot}

    # ------------------------------------------------------------------ compositions

    def in_order(self) -> torch.Tensor:
        """All ``choices ** depth`` in-order compositions ``[n, depth]`` (slot ``d`` at step
        ``d``), in lexicographic order of the in-slot indices."""
        ks = torch.tensor(list(itertools.product(range(self.choices), repeat=self.depth)))
        return ks + torch.arange(self.depth) * self.choices

    def split(
        self,
        n_train: int = 100,
        n_out_of_order: int = 500,
        seed: int | torch.Generator = 0,
    ) -> CompositionSplit:
        """Train / held-out compositions, seeded.

        Train: every in-order composition with at most one non-identity function (so each
        function is seen on its own) plus random others up to ``n_train`` in total; held-out:
        the remaining in-order compositions; out-of-order: ``n_out_of_order`` compositions whose
        slot order is a random non-identity permutation of the slots (with a non-identity
        function at two or more displaced slots, so the order matters), never in training.
        """
        check_int("n_train", n_train, low=1)
        check_int("n_out_of_order", n_out_of_order, low=0)
        g = as_generator(seed)
        every = self.in_order()
        non_identity = (every % self.choices != 0).sum(1)
        base = torch.nonzero(non_identity <= 1).flatten()
        if n_train < len(base):
            raise ValueError(
                f"n_train must be >= {len(base)} (the compositions of at most one function)"
            )
        rest = torch.nonzero(non_identity > 1).flatten()
        if n_train > len(every):
            raise ValueError(f"n_train must be <= {len(every)}, got {n_train}")
        extra = rest[torch.randperm(len(rest), generator=g)[: n_train - len(base)]]
        train = torch.cat([base, extra]).sort().values
        held = torch.ones(len(every), dtype=torch.bool)
        held[train] = False
        ooo = []
        if self.depth > 1:
            while len(ooo) < n_out_of_order:
                order = torch.randperm(self.depth, generator=g)
                ks = torch.randint(self.choices, (self.depth,), generator=g)
                moved = (order != torch.arange(self.depth)) & (ks != 0)
                if int(moved.sum()) < 2:
                    continue
                ooo.append(order * self.choices + ks)
        out_of_order = (
            torch.unique(torch.stack(ooo), dim=0)
            if ooo
            else torch.empty(0, self.depth, dtype=torch.long)
        )
        return CompositionSplit(every[train], every[held], out_of_order)


def exact_match(generated: torch.Tensor, target: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """``BoolTensor [n]``: every token after ``prompt_len`` of ``generated [n, L]`` equals
    ``target [n, L]``."""
    if generated.shape != target.shape or generated.ndim != 2:
        raise ValueError(
            f"generated and target must be [n, L] of the same shape, got "
            f"{tuple(generated.shape)} and {tuple(target.shape)}"
        )
    return (generated[:, prompt_len:] == target[:, prompt_len:]).all(dim=1)


@torch.no_grad()
def greedy_generate(model: torch.nn.Module, prompts: torch.Tensor, total_len: int) -> torch.Tensor:
    """Greedy decoding: extend ``prompts [n, P]`` to ``[n, total_len]`` one argmax token at a
    time with a full forward over the prefix (no KV cache, so forward hooks see every position
    at every step). ``model(tokens)`` returns logits or an object with ``.logits``."""
    tokens = torch.as_tensor(prompts, dtype=torch.long)
    while tokens.shape[1] < total_len:
        out = model(tokens)
        logits = out if isinstance(out, torch.Tensor) else out.logits
        tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return tokens


def teacher_forced_right(
    logits: torch.Tensor, tokens: torch.Tensor, prompt_len: int
) -> torch.Tensor:
    """``BoolTensor [n, L - prompt_len]``: whether each output token of ``tokens [n, L]`` is the
    argmax of the teacher-forced ``logits [n, L, vocab]`` one position before it. Every output
    token right equals greedy exact match (greedy decoding then writes exactly ``tokens``)."""
    return logits[:, prompt_len - 1 : -1].argmax(-1) == tokens[:, prompt_len:]


@torch.no_grad()
def teacher_forced_exact_match(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    prompt_len: int,
    final_len: int,
    batch_size: int = 512,
) -> dict[str, float]:
    """Exact match from one teacher-forced forward of ``tokens [n, L]``.

    ``exact_match``: every output token's (positions ``prompt_len..L-1``) argmax is right, which
    equals greedy exact match; ``final_exact_match``: the last ``final_len`` tokens (the answer
    ``F(x)``) are right; ``token_accuracy``: the fraction of right output tokens.
    ``model(tokens)`` returns logits or an object with ``.logits``.
    """
    all_right, tok_right, final_right = [], [], []
    for chunk in tokens.split(batch_size):
        out = model(chunk)
        logits = out if isinstance(out, torch.Tensor) else out.logits
        right = teacher_forced_right(logits, chunk, prompt_len)
        all_right.append(right.all(1))
        tok_right.append(right.float().mean(1))
        final_right.append(right[:, -final_len:].all(1))
    return {
        "exact_match": float(torch.cat(all_right).float().mean()),
        "final_exact_match": float(torch.cat(final_right).float().mean()),
        "token_accuracy": float(torch.cat(tok_right).mean()),
    }


# ----------------------------------------------------------------------------- files


def save_split(task: CompositionTask, split: CompositionSplit, path: str | os.PathLike) -> None:
    """Write ``split.json``: the task's settings and the train / held-out / out-of-order
    compositions (``[n, depth]`` function ids each)."""
    payload = {
        "task": asdict(task),
        "train": split.train.tolist(),
        "heldout": split.heldout.tolist(),
        "out_of_order": split.out_of_order.tolist(),
    }
    Path(path).write_text(json.dumps(payload) + "\n")


def load_split(path: str | os.PathLike) -> tuple[CompositionTask, CompositionSplit]:
    """Read a ``split.json`` (a checkpoint directory or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / "split.json"
    if not path.is_file():
        raise FileNotFoundError(f"no composition split at {path} (split.json)")
    record = json.loads(path.read_text())
    task = CompositionTask(**record["task"])
    parts = {
        k: torch.tensor(record[k], dtype=torch.long).reshape(-1, task.depth)
        for k in ("train", "heldout", "out_of_order")
    }
    return task, CompositionSplit(**parts)
