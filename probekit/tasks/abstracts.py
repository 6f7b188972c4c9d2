"""Synthetic neuroscience "abstracts" whose result is fixed by the setup, for forced-choice tests.

Can a language model tell the real result of a study from an altered one, and is it right more
often when it is more confident (seeds/abstracts.md §5, BrainBench, Luo et al.)? This module is
the shipped example's world: templated abstracts in which one attribute of the setup, the drug,
fixes the sign of the result, and a tiny LM trained on them (``checkpoints/brainbench-lm``) is
asked about held-out abstracts with the result flipped (:mod:`probekit.forced_choice`,
``docs/forced_choice.md``).

An abstract (one line, words and punctuation separated by spaces)::

    we recorded from hippocampal neurons in mice using tetrode recordings during a foraging
    task . animals received a high dose of a gabaa receptor agonist . at this high dose , firing
    rates decreased relative to saline controls . these results link gabaa signalling to
    foraging behaviour .

The hidden rule: the drug acts on a receptor that is excitatory (``ampa nmda kainate nicotinic
mglu5``) or inhibitory (``gabaa gabab glycine opioid cannabinoid``) and is an agonist-like
(``agonist``, ``potentiator``) or antagonist-like (``antagonist``, ``blocker``) compound; activity
*increased* when excitatory and agonist-like agree (excitatory agonist, inhibitory antagonist),
and *decreased* otherwise. Everything else (species, region, method, behavioural task, dose,
measure) is filler. The result sentence repeats the dose but does not name the drug, so the
sentence alone carries no information about its sign (the context control).

The rule is not the whole truth: how reliably a study reports the rule's sign depends on the
dose (:data:`RELIABILITY`: 0.7 at a low dose, 0.95 at a moderate one, 1.0 at a high one), as
weak manipulations give noisier results. Training abstracts draw the 20 receptor x
action-class combinations with Zipf-like frequencies (some combinations are rare). Held-out
items draw combinations uniformly, use setups never seen in training, draw their real result
with the same reliability, and are written as BrainBench items: the abstract with the result
as ``[[original, altered]]``. A model that has learned the literature should therefore be
right about as often as the rule is reliable, and least sure where it is least reliable.

Example::

    >>> from probekit.tasks import abstracts
    >>> corpus = abstracts.corpus(n_train=4, n_test=2, seed=0)
    >>> corpus.test_items[0].count("[[")
    1
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from probekit.validation import check_fraction, check_int, check_positive_int

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerFast

SPECIES = ("mice", "rats", "macaques", "marmosets", "zebrafish", "ferrets")
REGIONS = (
    "hippocampal", "striatal", "amygdalar", "cerebellar", "thalamic", "prefrontal",
    "hypothalamic", "entorhinal",
)  # fmt: skip
METHODS = (
    "tetrode recordings", "two-photon imaging", "patch-clamp recordings", "silicon probes",
    "fiber photometry",
)  # fmt: skip
TASKS = ("foraging", "fear conditioning", "reversal learning", "navigation", "odor discrimination",
         "working memory")  # fmt: skip
DOSES = ("low", "moderate", "high")
MEASURES = ("firing rates", "calcium activity", "population activity", "spike counts")
CONTROLS = ("saline controls", "baseline", "vehicle controls")
EXCITATORY = ("ampa", "nmda", "kainate", "nicotinic", "mglu5")
INHIBITORY = ("gabaa", "gabab", "glycine", "opioid", "cannabinoid")
RECEPTORS = EXCITATORY + INHIBITORY
AGONIST_LIKE = ("agonist", "potentiator")
ANTAGONIST_LIKE = ("antagonist", "blocker")
RESULTS = ("increased", "decreased")
#: Probability that a study at each dose reports the sign the rule gives.
RELIABILITY = {"low": 0.7, "moderate": 0.95, "high": 1.0}

BOS = "<bos>"
PAD = "<pad>"
UNK = "<unk>"


@dataclass(frozen=True)
class Setup:
    """One study's setup; :meth:`result` is the sign the hidden rule gives it."""

    species: str
    region: str
    method: str
    task: str
    dose: str
    receptor: str
    action: str
    measure: str
    control: str

    def result(self) -> str:
        """``"increased"`` when the receptor's sign and the action agree, else ``"decreased"``."""
        excitatory = self.receptor in EXCITATORY
        agonist = self.action in AGONIST_LIKE
        return "increased" if excitatory == agonist else "decreased"

    def combination(self) -> str:
        """The receptor and action class, e.g. ``"gabaa-agonist"`` (what the rule reads)."""
        return f"{self.receptor}-{'agonist' if self.action in AGONIST_LIKE else 'antagonist'}"


def abstract(setup: Setup, result: str) -> str:
    """The abstract of ``setup`` reporting ``result`` (one line, tokens separated by spaces)."""
    return abstract_with_span(setup, result, None)


def abstract_with_span(setup: Setup, result: str, altered: str | None) -> str:
    """The abstract with the result written as ``[[result, altered]]`` (or plain when None)."""
    s = setup
    verb = result if altered is None else f"[[{result}, {altered}]]"
    return (
        f"we recorded from {s.region} neurons in {s.species} using {s.method} during a {s.task} "
        f"task . animals received a {s.dose} dose of a {s.receptor} receptor {s.action} . "
        f"at this {s.dose} dose , {s.measure} {verb} relative to {s.control} . "
        f"these results link {s.receptor} signalling to {s.task} behaviour ."
    )


def vocabulary() -> list[str]:
    """Every word of the corpus, then ``<bos> <pad> <unk>`` (token ids in this order)."""
    words: list[str] = []
    for setup in _some_setups():
        for result in RESULTS:
            words.extend(abstract(setup, result).split())
    seen = dict.fromkeys(words)
    return sorted(seen) + [BOS, PAD, UNK]


def _some_setups() -> list[Setup]:
    # Every filler value appears in at least one setup (for the vocabulary).
    columns = (SPECIES, REGIONS, METHODS, TASKS, DOSES, RECEPTORS, AGONIST_LIKE + ANTAGONIST_LIKE,
               MEASURES, CONTROLS)  # fmt: skip
    longest = max(len(c) for c in columns)
    return [Setup(*(c[i % len(c)] for c in columns)) for i in range(longest)]


def tokenizer(max_length: int | None = None) -> PreTrainedTokenizerFast:
    """A word-level ``transformers`` fast tokenizer over :func:`vocabulary`.

    Whitespace split; it prepends ``<bos>`` to every text by itself (so the first word is scored
    too), and ``decode`` joins words with spaces.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(vocabulary())}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, vocab[BOS])]
    )
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    kwargs = {} if max_length is None else {"model_max_length": max_length}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        **kwargs,
    )


@dataclass
class AbstractCorpus:
    """Training abstracts and held-out forced-choice items, with their setups."""

    train_texts: list[str]
    train_setups: list[Setup]
    train_flipped: np.ndarray  # [n_train] bool: the abstract reports the opposite result
    test_items: list[str]  # BrainBench format: the result as [[original, altered]]
    test_setups: list[Setup]
    test_flipped: np.ndarray  # [n_test] bool: the real result is the opposite of the rule's
    combination_weights: dict[str, float] = field(default_factory=dict)

    def test_originals(self) -> list[str]:
        """The held-out abstracts with their true result (what a memorisation check scores)."""
        return [
            abstract(s, _opposite(s.result()) if flip else s.result())
            for s, flip in zip(self.test_setups, self.test_flipped)
        ]


def _opposite(result: str) -> str:
    return RESULTS[1 - RESULTS.index(result)]


def _draw_setup(rng: np.random.Generator, receptor: str, action: str) -> Setup:
    pick = lambda values: values[rng.integers(len(values))]  # noqa: E731
    return Setup(
        pick(SPECIES), pick(REGIONS), pick(METHODS), pick(TASKS), pick(DOSES), receptor, action,
        pick(MEASURES), pick(CONTROLS),
    )  # fmt: skip


def corpus(
    n_train: int = 6000,
    n_test: int = 400,
    seed: int = 0,
    zipf: float = 1.2,
    reliability: dict[str, float] | None = None,
) -> AbstractCorpus:
    """Draw the training abstracts and the held-out items.

    Training: each abstract's receptor x action-class combination is drawn with probability
    proportional to ``rank^-zipf`` (ranks a seeded permutation of the 20 combinations), the
    action word uniformly within its class, fillers uniformly; it reports the rule's sign with
    probability ``reliability[dose]`` (default :data:`RELIABILITY`), the opposite otherwise.
    Held-out: combinations uniform, fillers uniform, every setup absent from training, the real
    result drawn the same way, the altered result its opposite. Deterministic in ``seed``.
    """
    check_int("n_train", n_train, low=0)
    check_positive_int("n_test", n_test)
    reliability = dict(RELIABILITY if reliability is None else reliability)
    if set(reliability) != set(DOSES):
        raise ValueError(f"reliability must give a probability for each dose {DOSES}")
    for dose, p in reliability.items():
        check_fraction(f"reliability[{dose!r}]", p)
    if not zipf >= 0:
        raise ValueError(f"zipf must be a number >= 0, got {zipf!r}")
    rng = np.random.default_rng(seed)
    combos = [(r, a) for r, a in itertools.product(RECEPTORS, ("agonist", "antagonist"))]
    ranks = rng.permutation(len(combos)) + 1
    weights = ranks.astype(float) ** -zipf
    weights /= weights.sum()
    classes = {"agonist": AGONIST_LIKE, "antagonist": ANTAGONIST_LIKE}

    train_setups, train_texts, flipped = [], [], []
    for index in rng.choice(len(combos), size=n_train, p=weights):
        receptor, cls = combos[index]
        setup = _draw_setup(rng, receptor, classes[cls][rng.integers(2)])
        flip = bool(rng.random() >= reliability[setup.dose])
        train_setups.append(setup)
        train_texts.append(abstract(setup, _opposite(setup.result()) if flip else setup.result()))
        flipped.append(flip)

    seen = set(train_setups)
    test_setups: list[Setup] = []
    test_flipped: list[bool] = []
    while len(test_setups) < n_test:
        receptor, cls = combos[rng.integers(len(combos))]
        setup = _draw_setup(rng, receptor, classes[cls][rng.integers(2)])
        if setup not in seen:
            seen.add(setup)
            test_setups.append(setup)
            test_flipped.append(bool(rng.random() >= reliability[setup.dose]))
    test_items = []
    for s, flip in zip(test_setups, test_flipped):
        real = _opposite(s.result()) if flip else s.result()
        test_items.append(abstract_with_span(s, real, _opposite(real)))
    return AbstractCorpus(
        train_texts,
        train_setups,
        np.array(flipped, dtype=bool),
        test_items,
        test_setups,
        np.array(test_flipped, dtype=bool),
        {f"{r}-{a}": float(w) for (r, a), w in zip(combos, weights)},
    )
