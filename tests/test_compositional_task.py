"""probekit.tasks.compositional: the functions, both formats, the splits and the labels,
checked against hand computations."""

from __future__ import annotations

import pytest
import torch

from probekit.tasks import compositional as comp


def test_functions_are_bijections_and_compositions_apply_in_order():
    task = comp.CompositionTask(seed=3)
    tables = task.tables()
    assert tables.shape == (5, 4, 10)
    for d in range(5):
        assert torch.equal(tables[d, 0], torch.arange(10))  # k = 0 is the identity
        for k in range(4):
            assert sorted(tables[d, k].tolist()) == list(range(10))
    x = torch.tensor([[3, 1, 4, 1, 5, 9]])
    functions = [1, 4 + 2, 8 + 0, 12 + 3, 16 + 1]  # slot-major ids: slot * 4 + k
    traj = task.trajectory(torch.tensor([functions]), x)
    by_hand, value = [], x[0].tolist()
    for f in functions:
        value = [int(tables[f // 4, f % 4, v]) for v in value]
        by_hand.append(value)
    assert traj[0].tolist() == by_hand


def test_step_and_direct_formats_lay_out_tokens():
    x = torch.tensor([[0, 1, 2, 3, 4, 5]])
    functions = torch.tensor([[1, 5, 9, 13, 17]])
    step = comp.CompositionTask(fmt="step", seed=0)
    direct = comp.CompositionTask(fmt="direct", seed=0)
    s = step.sequences(functions, x)[0]
    d = direct.sequences(functions, x)[0]
    assert len(s) == step.seq_len == 1 + 5 + 1 + 6 + 5 * 7
    assert len(d) == direct.seq_len == 1 + 5 + 1 + 6 + 7
    traj = step.trajectory(functions, x)[0]
    words = step.decode(s).split()
    assert words[:7] == ["<bos>", "s0f1", "s1f1", "s2f1", "s3f1", "s4f1", "<sep>"]
    for i in range(5):
        start = step.output_start(i)
        assert int(s[start - 1]) == step.sep_id
        assert s[start : start + 6].tolist() == traj[i].tolist()
    assert torch.equal(d[:14], s[:14])
    assert d[-6:].tolist() == traj[-1].tolist() == s[-6:].tolist()
    # the tokenizer round-trips the text
    tok = step.tokenizer()
    assert tok(step.decode(s))["input_ids"] == s.tolist()


def test_position_permutations_in_the_first_slot():
    task = comp.CompositionTask(permutations=True, seed=1)
    perms = task.position_permutations()
    x = torch.tensor([[9, 8, 7, 6, 5, 4]])
    for k in range(4):
        out = task.trajectory(torch.tensor([[k, 4, 8, 12, 16]]), x)[0, -1]
        assert out.tolist() == [int(x[0, perms[k, i]]) for i in range(6)]
    assert torch.equal(perms[0], torch.arange(6))
    assert torch.equal(task.tables()[0], torch.arange(10).expand(4, 10))  # slot 0 has no maps


def test_split_is_seeded_and_disjoint():
    task = comp.CompositionTask()
    a = task.split(100, 50, seed=4)
    b = task.split(100, 50, seed=4)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert len(a.train) == 100 and len(a.heldout) == 1024 - 100
    train = {tuple(r) for r in a.train.tolist()}
    held = {tuple(r) for r in a.heldout.tolist()}
    assert not train & held and len(train | held) == 1024
    # every function alone is in training
    for slot in range(5):
        for k in range(1, 4):
            alone = [s * 4 for s in range(5)]
            alone[slot] += k
            assert tuple(alone) in train
    # out-of-order: some slot's function is applied at another depth, none in training
    slots = a.out_of_order // 4
    assert len(a.out_of_order) == 50
    assert bool((slots != torch.arange(5)).any(1).all())
    assert not {tuple(r) for r in a.out_of_order.tolist()} & train
    with pytest.raises(ValueError, match="n_train"):
        task.split(10)


def test_labels_align_with_the_step_being_written():
    task = comp.CompositionTask()
    functions = torch.tensor([[2, 4, 11, 12, 19]])
    tokens = task.sequences(functions, torch.tensor([[1, 1, 2, 2, 3, 3]]))
    lab = task.labels(tokens)
    for s in range(5):
        sep = task.output_start(s) - 1
        span = slice(sep, sep + 6)  # positions whose next token is in block s
        assert set(lab["step"][0, span].tolist()) == {s}
        assert set(lab["task"][0, span].tolist()) == {int(functions[0, s]) % 4}
        assert set(lab["slot"][0, span].tolist()) == {s}
        assert lab["next"][0, span].tolist() == tokens[0, sep + 1 : sep + 7].tolist()
    assert (lab["step"][0, : task.prompt_len - 1] == -1).all()
    assert task.output_mask().sum() == task.seq_len - task.prompt_len


def test_exact_match_and_greedy_generation_with_an_oracle():
    task = comp.CompositionTask()
    tokens, _ = task.sample(task.in_order()[:20], 20, seed=0)

    class Oracle(torch.nn.Module):
        """Puts all mass on the true next token of whichever sequence the prefix starts."""

        def forward(self, prefix):
            logits = torch.zeros(len(prefix), prefix.shape[1], task.vocab_size)
            for i, row in enumerate(prefix):
                full = tokens[(tokens[:, : len(row)] == row).all(1).nonzero()[0, 0]]
                nxt = torch.cat([full[1:], full[-1:]])[: len(row)]
                logits[i, torch.arange(len(row)), nxt] = 1.0
            return logits

    generated = comp.greedy_generate(Oracle(), tokens[:, : task.prompt_len], task.seq_len)
    assert comp.exact_match(generated, tokens, task.prompt_len).all()
    wrong = generated.clone()
    wrong[3, -1] = (wrong[3, -1] + 1) % 10
    assert comp.exact_match(wrong, tokens, task.prompt_len).tolist() == [i != 3 for i in range(20)]


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="fmt"):
        comp.CompositionTask(fmt="chain")
    task = comp.CompositionTask()
    with pytest.raises(ValueError, match="compositions must be"):
        task.sequences([[0, 1]], torch.zeros(1, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="x must be"):
        task.sequences([[0, 4, 8, 12, 16]], torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="function ids"):
        task.sequences([[0, 4, 8, 12, 99]], torch.zeros(1, 6, dtype=torch.long))
