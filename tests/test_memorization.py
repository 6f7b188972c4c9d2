"""pk.memorization: each score against an independent computation, decoding parity, labels."""

from __future__ import annotations

import itertools
import math
import warnings
import zlib

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_models import tiny_causal_lm

import probekit as pk
from probekit import memorization as mem
from probekit.models.rnn import HookedRNN, RNNConfig

VOCAB = 65


def _tiny_hf(kind: str, n_positions: int = 48):
    model = tiny_causal_lm(kind, n_positions=n_positions, vocab_size=VOCAB)
    # Sharpen the random model a little so greedy decodes are not near-ties everywhere.
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(4.0)
    return model.eval()


def _lstm_lm(vocab: int = VOCAB, hidden: int = 24) -> HookedRNN:
    cfg = RNNConfig(
        kind="lstm", input_size=16, hidden_size=hidden, output_size=vocab, vocab_size=vocab
    )
    model = HookedRNN(cfg, seed=3)
    with torch.no_grad():
        model.readout.weight.mul_(6.0)
    return model.eval()


def _tokens(n: int, length: int, seed: int = 0, high: int = 64) -> torch.Tensor:
    return torch.randint(0, high, (n, length), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _hf_greedy(hf, prefix, n):
    """Hugging Face's own greedy ``generate``: the ``n`` tokens after ``prefix`` (no EOS stop)."""
    out = hf.generate(
        prefix,
        attention_mask=torch.ones_like(prefix),
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        pad_token_id=0,
        eos_token_id=None,
    )
    return out[:, prefix.shape[1] :]


def _levenshtein_reference(a: list[int], b: list[int]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        cur = [i]
        for j, y in enumerate(b, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


# ----------------------------------------------------------------------------- pure formulas


def test_levenshtein_matches_plain_dynamic_programme():
    gen = torch.Generator().manual_seed(0)
    for m, n in [(1, 1), (5, 5), (7, 3), (3, 9), (16, 16)]:
        a = torch.randint(0, 4, (40, m), generator=gen)  # small alphabet: many matches
        b = torch.randint(0, 4, (40, n), generator=gen)
        got = mem.levenshtein(a, b).tolist()
        want = [_levenshtein_reference(x, y) for x, y in zip(a.tolist(), b.tolist())]
        assert got == want


def test_levenshtein_brute_force_all_short_pairs():
    pairs = list(itertools.product(itertools.product(range(2), repeat=3), repeat=2))
    a = torch.tensor([p[0] for p in pairs])
    b = torch.tensor([p[1] for p in pairs])
    want = [_levenshtein_reference(list(x), list(y)) for x, y in pairs]
    assert mem.levenshtein(a, b).tolist() == want
    assert mem.levenshtein(torch.tensor([[1, 2, 3]]), torch.tensor([[1, 2, 3]])).item() == 0


def test_min_k_counts_floor_of_k_percent_at_least_one():
    logp = torch.tensor([[-1.0, -5.0, -3.0, -2.0, -4.0, -0.5, -0.1, -0.2, -0.3, -6.0]])
    assert mem.min_k_prob(logp, 20).item() == pytest.approx((-6 - 5) / 2)
    assert mem.min_k_prob(logp, 5).item() == pytest.approx(-6.0)  # floor(0.5) -> 1
    assert mem.min_k_prob(logp, 100).item() == pytest.approx(float(logp.mean()))


def test_roc_points_and_auroc_match_sklearn():
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.4
    scores = np.round(rng.normal(size=300) + labels * 0.8, 1)  # rounding makes ties
    fpr, tpr = mem.roc_points(scores, labels)
    sk_fpr, sk_tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    auc = mem.auroc_rows(scores[None], labels[None])[0]
    assert auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


# ----------------------------------------------------------------------------- audit scores


@pytest.mark.parametrize("kind", ["gpt2", "neox", "llama"])
def test_audit_scores_match_hand_computation_from_hf_logits(kind, tmp_path, word_tokenizer):
    hf = _tiny_hf(kind)
    hf.save_pretrained(tmp_path)
    word_tokenizer.save_pretrained(tmp_path)
    k, m = 8, 12
    tokens = _tokens(6, k + m + 3, seed=1)
    with torch.no_grad():
        logits = hf(tokens[:, : k + m]).logits.double()
    model = pk.load(tmp_path, device="cpu")
    result = mem.audit(model, tokens, prefix_len=k, suffix_len=m, k_percent=20, batch_size=4)
    f = result.frame
    assert len(f) == 6

    logprobs = torch.log_softmax(logits[:, :-1], -1)
    target = tokens[:, 1 : k + m]
    logp = logprobs.gather(-1, target[..., None])[..., 0].numpy()
    n_scored = k + m - 1
    count = max(1, math.floor(0.2 * n_scored))
    np.testing.assert_allclose(f["ce"], -logp.mean(1), rtol=1e-4)
    np.testing.assert_allclose(f["suffix_ce"], -logp[:, -m:].mean(1), rtol=1e-4)
    np.testing.assert_allclose(f["min_k_prob"], np.sort(logp, 1)[:, :count].mean(1), rtol=1e-4)
    p = logprobs.exp().numpy()
    lp = logprobs.numpy()
    mu = (p * lp).sum(-1)
    sigma = np.sqrt((p * lp**2).sum(-1) - mu**2)
    z = (logp - mu) / sigma
    np.testing.assert_allclose(f["min_k_pp"], np.sort(z, 1)[:, :count].mean(1), rtol=1e-3)

    # greedy suffix: one sequence at a time through transformers' own generate
    for i in range(6):
        prefix = tokens[i : i + 1, :k]
        out = _hf_greedy(hf, prefix, m)[0]
        assert torch.equal(result.generated[i], out)
        truth = tokens[i, k : k + m]
        same = (out == truth).tolist()
        assert f["pythia_score"][i] == pytest.approx(sum(same) / m)
        assert f["match_len"][i] == (same.index(False) if False in same else m)
        assert bool(f["exact_match"][i]) == all(same)
        assert f["lev"][i] == _levenshtein_reference(out.tolist(), truth.tolist())
        text = word_tokenizer.decode(tokens[i, : k + m].tolist())
        suffix_text = word_tokenizer.decode(tokens[i, k : k + m].tolist())
        assert f["zlib_ratio"][i] == pytest.approx(f["ce"][i] / len(zlib.compress(text.encode())))
        assert f["complexity"][i] == pytest.approx(
            len(zlib.compress(suffix_text.encode())) / len(suffix_text.encode())
        )
        assert f["text"][i] == text
    assert f["memorized"].tolist() == (f["lev"] < 10).tolist()
    assert result.summary["sequences"] == 6


def test_audit_ref_ratio_is_ce_difference(tmp_path):
    target, reference = _tiny_hf("llama"), _tiny_hf("gpt2")
    tokens = _tokens(4, 20, seed=2)
    with_ref = mem.audit(target, tokens, prefix_len=8, suffix_len=12, reference=reference)
    ref_alone = mem.audit(reference, tokens, prefix_len=8, suffix_len=12)
    np.testing.assert_allclose(
        with_ref.frame["ref_ratio"],
        with_ref.frame["ce"] - ref_alone.frame["ce"],
        rtol=1e-5,
        atol=1e-6,
    )


def test_batched_greedy_equals_one_at_a_time_for_lstm_lm():
    model = _lstm_lm()
    tokens = _tokens(7, 20, seed=3)
    got = mem.greedy_continuation(model, tokens[:, :6], 10, batch_size=3)
    for i in range(7):  # naive: recompute the whole sequence for every new token
        seq = tokens[i : i + 1, :6]
        with torch.no_grad():
            for _ in range(10):
                nxt = model(seq)[:, -1].argmax(-1, keepdim=True)
                seq = torch.cat([seq, nxt], dim=1)
        assert torch.equal(got[i], seq[0, 6:])


def test_audit_on_lstm_lm_from_directory(tmp_path):
    model = _lstm_lm()
    model.save(tmp_path / "lstm")
    loaded = pk.load(tmp_path / "lstm", device="cpu")
    tokens = _tokens(5, 18, seed=4)
    f = mem.audit(loaded, tokens, prefix_len=6, suffix_len=12).frame
    with torch.no_grad():
        logp = torch.log_softmax(model(tokens).double()[:, :-1], -1)
    want = -logp.gather(-1, tokens[:, 1:, None])[..., 0].mean(1)
    np.testing.assert_allclose(f["ce"], want.numpy(), rtol=1e-5)
    assert f["text"][0] == " ".join(str(i) for i in tokens[0].tolist())  # no tokenizer: ids


def test_audit_accepts_texts_with_the_models_tokenizer(tmp_path, word_tokenizer):
    hf = _tiny_hf("llama")
    hf.save_pretrained(tmp_path)
    word_tokenizer.save_pretrained(tmp_path)
    model = str(tmp_path)  # a path: loaded with transformers directly, tokenizer attached
    tokens = _tokens(3, 20, seed=5)
    texts = [" ".join(f"w{i}" for i in row) for row in tokens.tolist()]
    from_text = mem.audit(model, texts, prefix_len=8, suffix_len=12).frame
    from_ids = mem.audit(model, tokens, prefix_len=8, suffix_len=12).frame
    pd.testing.assert_frame_equal(from_text, from_ids)


@pytest.mark.parametrize(
    ("sequences", "message"),
    [
        (torch.zeros(3, 10, dtype=torch.long), "prefix_len \\+ suffix_len = 20"),
        (torch.full((2, 20), 70), "outside the vocabulary"),
        (torch.zeros(2, 20), "integer token ids"),
        (torch.zeros(20, dtype=torch.long), "token ids \\[N, L\\]"),
        (["w1 w2"], "has 2 tokens"),
    ],
)
def test_audit_rejects_bad_sequences(sequences, message, word_tokenizer):
    with pytest.raises(ValueError, match=message):
        mem.audit(
            _tiny_hf("gpt2"), sequences, prefix_len=8, suffix_len=12, tokenizer=word_tokenizer
        )


def test_audit_rejects_length_beyond_context():
    with pytest.raises(ValueError, match="exceeds the model's context of 48"):
        mem.audit(_tiny_hf("gpt2"), _tokens(2, 100), prefix_len=32, suffix_len=64)


# ----------------------------------------------------------------------------- planted memorization


def test_trained_tiny_model_flags_memorized_sequences_not_controls():
    from transformers import GPT2Config, GPT2LMHeadModel

    from probekit.train import train_causal_lm

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=1, n_embd=48, n_head=4, n_positions=32, vocab_size=VOCAB)
    model = GPT2LMHeadModel(cfg)
    seen = _tokens(4, 24, seed=10)
    controls = _tokens(4, 24, seed=11)
    train_causal_lm(
        model,
        seen,
        steps=80,
        batch_size=4,
        lr=1e-2,
        weight_decay=0.0,
        warmup=10,
        seed=0,
        progress=False,
    )
    both = torch.cat([seen, controls])
    f = mem.audit(model, both, prefix_len=8, suffix_len=16, lev_threshold=4).frame
    assert f["memorized"].tolist() == [True] * 4 + [False] * 4
    assert f["exact_match"][:4].all()
    assert (f["lev"][4:] >= 8).all()
    members = np.array([True] * 4 + [False] * 4)
    with pytest.warns(UserWarning, match="only 4 non-members"):
        result = mem.membership(f, members)
    row = result.frame.set_index("score").loc["ce"]
    assert row["auroc"] == 1.0 and row["tpr_at_1pct_fpr"] == 1.0


# ----------------------------------------------------------------------------- membership, scaling


def test_membership_matches_sklearn_and_orients_scores():
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(1)
    members = rng.random(2400) < 0.5
    frame = pd.DataFrame(
        {
            "ce": rng.normal(3.0, 1.0, 2400) - 0.5 * members,  # lower = member
            "min_k_prob": rng.normal(-5.0, 1.0, 2400) + 0.3 * members,
            "lev": rng.integers(0, 64, 2400),
        }
    )
    result = mem.membership(frame, members, n_bootstrap=200)
    table = result.frame.set_index("score")
    for name, sign in (("ce", -1), ("min_k_prob", 1), ("lev", -1)):
        oriented = sign * frame[name].to_numpy(dtype=float)
        assert table.loc[name, "auroc"] == pytest.approx(roc_auc_score(members, oriented))
        fpr, tpr, _ = roc_curve(members, oriented)
        for target, col in ((0.01, "tpr_at_1pct_fpr"), (0.001, "tpr_at_0.1pct_fpr")):
            assert table.loc[name, col] == pytest.approx(tpr[fpr <= target].max())
        assert table.loc[name, "auroc_ci_low"] <= table.loc[name, "auroc"]
        assert table.loc[name, "auroc"] <= table.loc[name, "auroc_ci_high"]
    assert table.loc["ce", "auroc"] > 0.6
    assert 0.45 < table.loc["lev", "auroc"] < 0.55
    assert result.summary["best_score"] == "ce"
    assert len(result.figures()) == 1


def test_membership_bootstrap_interval_covers_sampling_spread():
    rng = np.random.default_rng(2)
    members = np.r_[np.ones(1200, bool), np.zeros(1200, bool)]
    frame = pd.DataFrame({"min_k_pp": rng.normal(size=2400) + 0.5 * members})
    row = mem.membership(frame, members, n_bootstrap=1000).frame.iloc[0]
    # normal-approximation standard error of the AUROC (Hanley & McNeil) for comparison
    a = row["auroc"]
    q1, q2 = a / (2 - a), 2 * a**2 / (1 + a)
    se = math.sqrt((a * (1 - a) + 1199 * (q1 - a**2) + 1199 * (q2 - a**2)) / 1200**2)
    assert row["auroc_ci_high"] - row["auroc_ci_low"] == pytest.approx(2 * 1.96 * se, rel=0.25)


def test_membership_validates_labels():
    frame = pd.DataFrame({"ce": [1.0, 2.0]})
    with pytest.raises(ValueError, match="members must be one bool per row"):
        mem.membership(frame, [1, 0])
    with pytest.raises(ValueError, match="both classes"):
        mem.membership(frame, np.array([True, True]))


def test_repetition_scaling_recovers_planted_slope_and_matches_references():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    reps = np.repeat([1, 2, 4, 8, 16, 32], 400)
    p = 0.05 + 0.15 * np.log2(reps)
    memorized = rng.random(len(reps)) < p
    result = mem.repetition_scaling(pd.DataFrame({"memorized": memorized}), reps)
    s = result.summary
    slope, intercept = np.polyfit(np.log2(reps), memorized.astype(float), 1)
    assert s["slope"] == pytest.approx(slope)
    assert s["intercept"] == pytest.approx(intercept)
    assert s["slope_ci_low"] < 0.15 < s["slope_ci_high"]
    sk = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(
        np.log2(reps)[:, None], memorized
    )
    assert s["logistic_slope"] == pytest.approx(sk.coef_[0, 0], rel=1e-4)
    assert result.frame["n"].tolist() == [400] * 6
    assert len(result.figures()) == 1


def test_repetition_scaling_separated_data_gives_nan_logistic():
    frame = pd.DataFrame({"memorized": [False, False, True, True]})
    s = mem.repetition_scaling(frame, [1, 1, 8, 8]).summary
    assert s["slope"] == pytest.approx(1 / 3)
    assert math.isnan(s["logistic_slope"])


# ----------------------------------------------------------------------------- latent


def test_latent_labels_follow_duan_definitions():
    # thresholds 10 and 50; checkpoints 0..3
    lev = np.array(
        [
            [5, 4, 3, 2],  # memorized at first exposure
            [60, 55, 8, 30],  # latent: high at first, < 10 later, seen once
            [60, 55, 8, 30],  # same trajectory but repeated 4 times: not latent
            [60, 58, 61, 63],  # control
            [60, 40, 45, 52],  # other
            [70, 3, 60, 60],  # first exposure at checkpoint 1 -> memorized
            [70, 70, 70, 70],  # never followed by a checkpoint
            [60, 58, 61, 63],  # a planted control, never trained on
        ]
    )
    first = np.array([0, 0, 0, 0, 0, 1, 4, 0])
    reps = np.array([1, 1, 4, 1, 1, 1, 1, 0])
    labels = mem.latent_labels(lev, first, reps, 10, 50).tolist()
    assert labels == [
        "memorized",
        "latent",
        "other",
        "control",
        "other",
        "memorized",
        "unseen",
        "never-seen",
    ]


def test_latent_over_checkpoints_and_first_seen_mapping():
    tokens = _tokens(5, 20, seed=6)
    checkpoints = {10: _tiny_hf("llama"), 20: _lstm_lm(), 30: _tiny_hf("gpt2")}
    result = mem.latent(
        checkpoints, tokens, first_seen=[0, 9, 10, 25, 30], prefix_len=8, suffix_len=12
    )
    f = result.frame
    assert f["first_checkpoint"].tolist() == [10, 10, 20, 30, -1]
    for step, model in checkpoints.items():
        direct = mem.audit(model, tokens, prefix_len=8, suffix_len=12).frame
        assert f[f"lev@{step}"].tolist() == direct["lev"].tolist()
        np.testing.assert_allclose(f[f"ce@{step}"], direct["ce"], rtol=1e-6)
    assert f["label"][4] == "unseen"
    assert len(result.trajectories) == 15
    # the CE diagnostic against planted never-seen sequences, at the last checkpoint, by hand
    from sklearn.metrics import roc_auc_score

    reps = [1, 2, 0, 1, 0]
    with_never = mem.latent(
        checkpoints,
        tokens,
        first_seen=[0, 9, 10, 15, 5],
        repetitions=reps,
        prefix_len=8,
        suffix_len=12,
    )
    g = with_never.frame
    assert g["label"][[2, 4]].tolist() == ["never-seen", "never-seen"]
    hidden = (np.array(reps) >= 1) & (g["lev@30"].to_numpy() >= 12 * 10 / 64)
    pick = hidden | (np.array(reps) == 0)
    expected = roc_auc_score(hidden[pick], -g["ce@30"].to_numpy()[pick])
    got = with_never.summary["ce_auroc_seen_not_extractable_vs_never_seen"]
    assert got == pytest.approx(expected)
    assert with_never.summary["never-seen"] == 2
    # the same AUROC per checkpoint, among the sequences already shown there
    trace = mem.exposure_trace(with_never, reps, [0, 9, 10, 15, 5]).set_index("step")
    assert trace.loc[30, "auroc"] == pytest.approx(expected)
    lev10 = g["lev@10"].to_numpy()
    seen10 = np.array([True, True, False, False, False]) & (lev10 >= 12 * 10 / 64)
    assert trace.loc[10, "seen"] == seen10.sum() and trace.loc[10, "never_seen"] == 1
    if seen10.any():
        pick = seen10 | np.array([False, False, False, False, True])
        assert trace.loc[10, "auroc"] == pytest.approx(
            roc_auc_score(seen10[pick], -g["ce@10"].to_numpy()[pick])
        )
    assert len(result.figures()) == 2
    with pytest.raises(ValueError, match="increasing integers"):
        mem.latent({2: checkpoints[10], 1: checkpoints[20]}, tokens, prefix_len=8, suffix_len=12)


# ----------------------------------------------------------------------------- perturbation


def test_perturbation_restores_weights_exactly_and_is_seeded(tmp_path, word_tokenizer):
    hf = _tiny_hf("neox")
    tokens = _tokens(6, 20, seed=7)
    before = pk.fingerprint(hf)
    first = mem.perturbation_recovery(hf, tokens, sigma=0.05, draws=2, prefix_len=8, suffix_len=12)
    assert pk.fingerprint(hf) == before
    again = mem.perturbation_recovery(hf, tokens, sigma=0.05, draws=2, prefix_len=8, suffix_len=12)
    pd.testing.assert_frame_equal(first.frame, again.frame)
    f = first.frame
    assert (f["min_lev"] <= f["lev"]).all()
    unperturbed = mem.audit(hf, tokens, prefix_len=8, suffix_len=12).frame
    assert f["lev"].tolist() == unperturbed["lev"].tolist()
    assert (f["min_lev"] < f["lev"]).any()  # sigma 0.05 changes some decodes

    # reproduce one draw by hand: the same noise, then a plain audit
    best = f[f["best_draw"] >= 0].iloc[0]
    draw = int(best["best_draw"])
    gen = torch.Generator().manual_seed(0 * 1_000_003 + draw)
    with torch.no_grad():
        for _, p in hf.named_parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    manual = mem.audit(hf, tokens, prefix_len=8, suffix_len=12).frame
    assert manual["lev"][best.name] == best["min_lev"]

    # through a bridge: the bridge's weights are untouched too
    hf2 = _tiny_hf("llama")
    hf2.save_pretrained(tmp_path)
    word_tokenizer.save_pretrained(tmp_path)
    bridge = pk.load(tmp_path, device="cpu")
    before = pk.fingerprint(bridge)
    mem.perturbation_recovery(bridge, tokens, draws=2, prefix_len=8, suffix_len=12)
    assert pk.fingerprint(bridge) == before


def test_perturbation_sweep_gives_the_same_results_in_another_process(tmp_path, word_tokenizer):
    """The sweep over noise scales from a checkpoint path, in a spawned process (as the latent
    study runs it beside its snapshot audits), equals the sweep here, scale by scale."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    _tiny_hf("llama").save_pretrained(tmp_path)
    word_tokenizer.save_pretrained(tmp_path)
    tokens = _tokens(6, 20, seed=7)
    options = {"draws": 2, "prefix_len": 8, "suffix_len": 12, "relative": True, "seed": 3}
    here = mem.perturbation_sweep(str(tmp_path), tokens, (0.2, 0.6), **options)
    with ProcessPoolExecutor(
        1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=torch.set_num_threads,
        initargs=(1,),
    ) as pool:
        there = pool.submit(mem.perturbation_sweep, str(tmp_path), tokens, (0.2, 0.6), **options)
        there = there.result()
    assert [r.summary["sigma"] for r in there] == [0.2, 0.6]
    for a, b in zip(here, there, strict=True):
        pd.testing.assert_frame_equal(a.frame, b.frame)
    one = mem.perturbation_recovery(str(tmp_path), tokens, sigma=0.6, **options)
    pd.testing.assert_frame_equal(one.frame, here[1].frame)
    assert (here[1].frame["min_lev"] < here[1].frame["lev"]).any()  # the noise did something
    with pytest.raises(ValueError, match="sigmas"):
        mem.perturbation_sweep(str(tmp_path), tokens, 0.2, **options)


def test_relative_perturbation_scales_noise_by_each_tensors_std():
    hf = _tiny_hf("neox")
    tokens = _tokens(6, 20, seed=7)
    before = pk.fingerprint(hf)
    res = mem.perturbation_recovery(
        hf, tokens, sigma=0.5, draws=3, prefix_len=8, suffix_len=12, relative=True
    )
    assert pk.fingerprint(hf) == before
    assert res.summary["relative"] is True
    f = res.frame
    assert (f["min_lev"] < f["lev"]).any()
    # one draw by hand: noise N(0, (0.5 * std(tensor))^2) per tensor, in named_parameters order
    best = f[f["best_draw"] >= 0].iloc[0]
    gen = torch.Generator().manual_seed(int(best["best_draw"]))
    with torch.no_grad():
        for _, p in hf.named_parameters():
            scale = 0.5 * float(p.std()) if p.numel() > 1 else 0.5
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    manual = mem.audit(hf, tokens, prefix_len=8, suffix_len=12).frame
    assert manual["lev"][best.name] == best["min_lev"]


def test_perturbation_restores_weights_after_an_error():
    model = _lstm_lm()
    before = pk.fingerprint(model)

    class Boom(RuntimeError):
        pass

    calls = {"n": 0}
    original = mem.levenshtein

    def failing(a, b):
        calls["n"] += 1
        if calls["n"] == 2:  # inside the first perturbed draw
            raise Boom
        return original(a, b)

    mem.levenshtein = failing
    try:
        with pytest.raises(Boom):
            mem.perturbation_recovery(model, _tokens(3, 20), draws=2, prefix_len=8, suffix_len=12)
    finally:
        mem.levenshtein = original
    assert pk.fingerprint(model) == before


def test_figures_render_into_a_report(tmp_path):
    tokens = _tokens(6, 20, seed=8)
    model = _tiny_hf("gpt2")
    result = mem.audit(model, tokens, prefix_len=8, suffix_len=12)
    pert = mem.perturbation_recovery(model, tokens, draws=1, prefix_len=8, suffix_len=12)
    scaling = mem.repetition_scaling(result, [1, 1, 2, 2, 4, 4])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        memb = mem.membership(result, np.array([True, False] * 3))
    path = pk.report.write([result, pert, scaling, memb], tmp_path / "r.html", title="t")
    text = path.read_text()
    assert "Memorization audit" in text and "Weight-perturbation recovery" in text


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_one_pass_scoring_and_decoding_equals_logits_then_generate(kind):
    """Runner.logits_and_generate reuses the teacher-forced pass's cache, cut back to the
    prefix: the same logits as a plain forward and the same tokens as Hugging Face's own
    batched greedy generate on the prefix."""
    from probekit.models.runner import runner

    hf = _tiny_hf(kind)
    r = runner(hf)
    tokens = _tokens(6, 20, seed=4)
    logits, generated = r.logits_and_generate(tokens, 8, 12)
    with torch.no_grad():
        expected = hf(input_ids=tokens).logits
        out = _hf_greedy(hf, tokens[:, :8], 12)
    assert torch.allclose(logits, expected, atol=1e-5)
    assert torch.equal(generated, out)
    assert torch.equal(generated, r.generate(tokens[:, :8], 12))
    # decoding past the given tokens, and a prefix that is the whole sequence
    _, longer = r.logits_and_generate(tokens[:, :8], 8, 12)
    assert torch.equal(longer, generated)
    with pytest.raises(ValueError, match="prefix_len"):
        r.logits_and_generate(tokens, 0, 4)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_preallocated_kv_cache_decodes_the_same_tokens_in_place(kind, monkeypatch):
    """Decoding writes each step's keys and values into one buffer per layer (no concatenation):
    the same tokens as with Hugging Face's concatenating cache and as its own generate."""
    import probekit.models.runner as runner_module

    hf = _tiny_hf(kind)
    tokens = _tokens(5, 20, seed=7)
    r = runner_module.runner(hf)
    fast = r.generate(tokens[:, :8], 12)
    monkeypatch.setattr(runner_module, "preallocate_kv", lambda cache, extra: False)
    slow = r.generate(tokens[:, :8], 12)
    monkeypatch.undo()
    with torch.no_grad():
        out = _hf_greedy(hf, tokens[:, :8], 12)
    assert torch.equal(fast, slow) and torch.equal(fast, out)
    # the cache really is written in place, and grows by concatenation once out of room
    with torch.no_grad():
        cache = hf(input_ids=tokens[:, :8], use_cache=True).past_key_values
        assert runner_module.preallocate_kv(cache, 2)
        layer = cache.layers[0]
        buffer = layer._probekit_buffers[0]
        hf(input_ids=tokens[:, 8:9], past_key_values=cache, use_cache=True)
        assert layer.keys.shape[-2] == 9 and layer.keys.data_ptr() == buffer.data_ptr()
        hf(input_ids=tokens[:, 9:10], past_key_values=cache, use_cache=True)
        hf(input_ids=tokens[:, 10:11], past_key_values=cache, use_cache=True)
        assert layer.keys.shape[-2] == 11  # past the buffer's 10 positions: concatenated
        assert torch.equal(layer.keys[..., :10, :], buffer)
    assert not runner_module.preallocate_kv(None, 4)
    assert not runner_module.preallocate_kv(cache, 0)
