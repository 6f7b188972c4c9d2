"""Forced choice (BrainBench): perplexities vs Hugging Face, scoring, calibration, the parser, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import probekit as pk
from probekit.tasks import cyclic

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import tiny_causal_lm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    """A tiny GPT-2 over 65 tokens and a word-level tokenizer with the same 65 (p = 62)."""
    model = tiny_causal_lm("gpt2", vocab_size=65, n_positions=32, seed=1).eval()
    return model, cyclic.tokenizer(62)


def test_perplexity_matches_hugging_face_forward_pass(tiny):
    model, tok = tiny
    texts = ["<bos> 1 2 3 4 5", "<bos> 7 7", "<bos> 9 8 7 6 5 4 3 2 1 0 11 12", "5 6 7 8"]
    ppl, logps = pk.forced_choice.perplexities(
        model, texts, tokenizer=tok, batch_size=3, progress=False
    )
    for text, value, logp in zip(texts, ppl, logps):
        ids = torch.tensor([tok(text)["input_ids"]])
        with torch.no_grad():
            expected = float(torch.exp(model(ids, labels=ids).loss))
        assert value == pytest.approx(expected, rel=1e-4)
        assert len(logp) == ids.shape[1] - 1


def test_scoring_on_planted_perplexities_matches_hand_computation():
    rng = np.random.default_rng(0)
    n = 40
    labels = rng.integers(0, 2, n)
    ppl_a = rng.uniform(5, 50, n)
    ppl_b = rng.uniform(5, 50, n)
    ppl_b[:3] = ppl_a[:3]  # three ties: wrong whatever the label
    result = pk.forced_choice.from_perplexities(ppl_a, ppl_b, labels)
    frame, summary = result.frame, result.summary
    hand_correct = [
        (a < b and y == 0) or (b < a and y == 1) for a, b, y in zip(ppl_a, ppl_b, labels)
    ]
    assert frame["correct"].tolist() == hand_correct
    assert summary["accuracy"] == pytest.approx(np.mean(hand_correct))
    assert summary["ties"] == 3 and not frame["correct"][:3].any()
    np.testing.assert_allclose(frame["confidence"], np.abs(ppl_a - ppl_b))
    # 20 equal-count bins of 2 items each, by rank of confidence.
    ranked = sorted(range(n), key=lambda i: (abs(ppl_a[i] - ppl_b[i]), i))
    hand_acc = [np.mean([hand_correct[i] for i in ranked[2 * k : 2 * k + 2]]) for k in range(20)]
    np.testing.assert_allclose(result.calibration["accuracy"], hand_acc)
    assert (result.calibration["n"] == 2).all()
    x = np.arange(1, 21)
    slope = np.sum((x - x.mean()) * (hand_acc - np.mean(hand_acc))) / np.sum((x - x.mean()) ** 2)
    assert summary["calibration_slope"] == pytest.approx(slope)


def test_calibration_slope_positive_when_confident_choices_are_right():
    confidence = np.arange(100.0)
    correct = confidence >= 30  # the 30 least confident are wrong
    table, slope, _ = pk.forced_choice.calibration(confidence, correct, bins=20)
    assert table["accuracy"].tolist() == [0.0] * 6 + [1.0] * 14
    assert slope > 0
    fit = pk.forced_choice.logistic_calibration(confidence, correct, splits=5, seed=42)
    assert fit["logistic_coef"] > 0 and fit["logistic_splits"] == 5


def test_ab_labels_follow_numpy_seed_42():
    np.random.seed(42)  # noqa: NPY002 (the reference runner's own call)
    expected = [np.random.randint(0, 2) for _ in range(25)]  # noqa: NPY002
    assert pk.forced_choice.ab_labels(25).tolist() == expected


def test_evaluate_scores_each_version_in_input_order(tiny):
    model, tok = tiny
    items = [f"<bos> {i} {i + 1} [[{i + 2}, {i + 5}]] {i + 3} . 40 41 ." for i in range(24)]
    result = pk.forced_choice.evaluate(model, items, tokenizer=tok, progress=False)
    frame = result.frame
    assert list(frame.columns[:5]) == ["item", "ppl_a", "ppl_b", "label", "prediction"]
    labels = pk.forced_choice.ab_labels(24, 42)
    assert frame["label"].tolist() == labels.tolist()
    for i in (0, 7, 23):
        original = f"<bos> {i} {i + 1} {i + 2} {i + 3} . 40 41 ."
        altered = f"<bos> {i} {i + 1} {i + 5} {i + 3} . 40 41 ."
        a, b = (original, altered) if labels[i] == 0 else (altered, original)
        ppl, _ = pk.forced_choice.perplexities(model, [a, b], tokenizer=tok, progress=False)
        np.testing.assert_allclose(frame.loc[i, ["ppl_a", "ppl_b"]].to_numpy(float), ppl, rtol=1e-6)
        # The context control scores the edited sentence alone.
        sent = [f"<bos> {i} {i + 1} {i + 2} {i + 3} .", f"<bos> {i} {i + 1} {i + 5} {i + 3} ."]
        sa, sb = sent if labels[i] == 0 else sent[::-1]
        ctrl, _ = pk.forced_choice.perplexities(model, [sa, sb], tokenizer=tok, progress=False)
        np.testing.assert_allclose(
            frame.loc[i, ["control_ppl_a", "control_ppl_b"]].to_numpy(float), ctrl, rtol=1e-6
        )
    s = result.summary
    assert s["accuracy"] == pytest.approx(frame["correct"].mean())
    assert {"calibration_slope", "zlib_baseline_accuracy", "context_control_accuracy"} <= set(s)
    # Scoring only the abstract inside a template: the template's tokens are not counted.
    templ = pk.forced_choice.evaluate(
        model, items[:2], template="<bos> 50 51 {text}", tokenizer=tok, score="abstract",
        context_control=False, memorization=False, progress=False,
    )  # fmt: skip
    first = items[0].replace("[[2, 5]]", "2" if labels[0] == 0 else "5")
    ids = tok("<bos> 50 51 " + first)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1], -1)
    own = logp[torch.arange(2, len(ids) - 1), torch.tensor(ids[3:])]  # from the 2nd <bos>
    assert templ.frame["ppl_a"][0] == pytest.approx(float(torch.exp(-own.mean())), rel=1e-5)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("no edit here .", "no \\[\\[original, altered\\]\\] span"),
        ("a [[b, c, d]] e .", "one comma, found 2"),
        ("a [[b c]] e .", "one comma, found 0"),
        ("a [[ , c]] e .", "empty side"),
        ("a [[b, b]] e .", "identical"),
        ("a [[b, c]] e [[f, g .", "unbalanced or nested"),
        ("a [[b, [[c, d]] e .", "unbalanced or nested"),
    ],
)
def test_parser_names_the_item_and_the_problem(text, problem):
    with pytest.raises(ValueError, match=rf"items\[1\].*{problem}"):
        pk.forced_choice.parse_items(["ok [[x, y]] .", text])


def test_items_files_csv_and_jsonl(tmp_path):
    csv_path = tmp_path / "items.csv"
    csv_path.write_text('combined_abstract,doi\n"we saw [[more, less]] spikes, then rest .",1\n')
    items = pk.forced_choice.parse_items(csv_path)
    assert items[0].original == "we saw more spikes, then rest ."
    assert items[0].sentences == (
        "we saw more spikes, then rest .",
        "we saw less spikes, then rest .",
    )
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text(json.dumps({"text": "one . two [[up, down]] . three ."}) + "\n" + '"bad"\n')
    with pytest.raises(ValueError, match=r"items.jsonl item 2 has no \[\[original"):
        pk.forced_choice.parse_items(jsonl)
    (tmp_path / "broken.jsonl").write_text('{"text": "a [[b, c]]"}\n{oops\n')
    with pytest.raises(ValueError, match="line 2: not JSON"):
        pk.forced_choice.read_items(tmp_path / "broken.jsonl")
    jsonl.write_text(json.dumps({"text": "one . two [[up, down]] . three ."}) + "\n")
    assert pk.forced_choice.parse_items(jsonl)[0].sentences == ("two up .", "two down .")


def test_cli_choose_bad_items_file_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"combined_abstract": "a result [[rose, fell]] ."}\n{"combined_abstract": "x"}\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "probekit.cli", "choose", str(tmp_path), "--items", str(bad),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "item 2 has no [[original, altered]] span" in lines[0]


def test_shipped_brainbench_lm_prefers_the_real_result_and_needs_the_context():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint = ROOT / "checkpoints" / "brainbench-lm"
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    tok = AutoTokenizer.from_pretrained(checkpoint)
    rows = [
        json.loads(line) for line in (checkpoint / "data" / "test.jsonl").read_text().splitlines()
    ]
    items = [row["combined_abstract"] for row in rows[:80]]
    result = pk.forced_choice.evaluate(
        model, items, tokenizer=tok, batch_size=40, memorization=False, progress=False
    )
    assert result.summary["accuracy"] >= 0.75
    assert 0.3 <= result.summary["context_control_accuracy"] <= 0.7
    # Where the real result goes against the rule, the model (which learned the rule) is wrong.
    against = np.array([not row["follows_rule"] for row in rows[:80]])
    assert against.any() and result.frame["correct"][against].mean() <= 0.25


def test_abstract_corpus_rule_holdout_and_items_parse():
    from probekit.tasks import abstracts

    corpus = abstracts.corpus(n_train=300, n_test=40, seed=3)
    assert not set(corpus.test_setups) & set(corpus.train_setups)
    gabaa_agonist = abstracts.Setup("mice", "striatal", "silicon probes", "navigation", "high",
                                    "gabaa", "agonist", "spike counts", "baseline")  # fmt: skip
    assert gabaa_agonist.result() == "decreased"
    items = pk.forced_choice.parse_items(corpus.test_items)
    assert [i.original for i in items] == corpus.test_originals()
    # The result sentence alone never names the drug (the context control needs that).
    assert all("receptor" not in i.sentences[0] for i in items)
    high = [not f for s, f in zip(corpus.train_setups, corpus.train_flipped) if s.dose == "high"]
    assert all(high)  # reliability 1.0 at a high dose
