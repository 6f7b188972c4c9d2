"""pk.cache and ActivationStore: exact round trips, resume after a kill, refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import probekit as pk
from probekit.activations import StaleStoreError

NAMES = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_pattern"]


def _gpt2(seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=32, vocab_size=65)
    return GPT2LMHeadModel(cfg)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("gpt2")
    _gpt2().save_pretrained(path)
    vocab = {f"w{i}": i for i in range(64)} | {"<pad>": 64}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<pad>"
    ).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model(model_dir):
    return pk.load(model_dir, device="cpu")


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 64, (70, 12), generator=torch.Generator().manual_seed(0))


def _reference(model, tokens, names=NAMES):
    _, cache = model.run_with_cache(tokens, names_filter=names)
    return {n: cache[n] for n in names}


def test_cache_round_trip_is_bit_exact_float32(model, tokens, tmp_path):
    # the same batches through run_with_cache by hand: float32 storage must be bit-exact
    parts = [_reference(model, batch) for batch in tokens.split(16)]
    reference = {n: torch.cat([p[n] for p in parts]) for n in NAMES}
    in_memory = pk.cache(model, tokens, NAMES, batch_size=16, dtype=torch.float32, progress=False)
    on_disk = pk.cache(
        model,
        tokens,
        NAMES,
        out=tmp_path / "s",
        batch_size=16,
        dtype=torch.float32,
        shard_size=32,
        progress=False,
    )
    reopened = pk.ActivationStore.open(tmp_path / "s")
    for store in (in_memory, on_disk, reopened):
        assert store.names == NAMES and len(store) == 70
        for name in NAMES:
            assert store[name].dtype == torch.float32
            assert torch.equal(store[name], reference[name])
        assert torch.equal(store["tokens"], tokens)
    for name in NAMES:
        assert torch.equal(on_disk[name], in_memory[name])
    shards = reopened.meta["shards"]
    assert len(shards) == 3 and all((tmp_path / "s" / s["file"]).is_file() for s in shards)
    assert reopened.meta["model_fingerprint"] == pk.fingerprint(model)
    assert reopened.shapes["blocks.1.attn.hook_pattern"] == (4, 12, 12)


def test_cache_default_float16_and_iter(model, tokens, tmp_path):
    store = pk.cache(
        model, tokens, NAMES[0], out=tmp_path, batch_size=16, shard_size=32, progress=False
    )
    full = store[NAMES[0]]
    assert full.dtype == torch.float16
    assert torch.equal(full, _reference(model, tokens)[NAMES[0]].half())
    batches = list(store.iter(NAMES[0], batch_size=25))
    assert [len(b) for b in batches] == [25, 25, 20]
    assert torch.equal(torch.cat(batches), full)


def test_data_fingerprint_independent_of_batching(model, tokens):
    a = pk.cache(model, tokens, NAMES[0], batch_size=16, progress=False)
    b = pk.cache(model, tokens, NAMES[0], batch_size=7, progress=False)
    c = pk.cache(model, tokens + 0 * tokens, NAMES[0], batch_size=7, progress=False)
    assert a.meta["data_fingerprint"] == b.meta["data_fingerprint"] == c.meta["data_fingerprint"]
    d = pk.cache(model, tokens.flip(0), NAMES[0], batch_size=16, progress=False)
    assert d.meta["data_fingerprint"] != a.meta["data_fingerprint"]


def test_iterable_of_batches_matches_tensor(model, tokens):
    whole = pk.cache(model, tokens, NAMES, batch_size=10, progress=False, dtype=None)
    batches = pk.cache(model, iter(tokens.split(10)), NAMES, progress=False, dtype=None)
    assert len(batches) == 70
    assert batches.meta["data_fingerprint"] == whole.meta["data_fingerprint"]
    for name in NAMES:
        assert torch.equal(batches[name], whole[name])


def test_text_in_several_batches_and_uneven_iterables(model, tokens, tmp_path):
    texts = [" ".join(f"w{int(t)}" for t in row[: 3 + i % 5]) for i, row in enumerate(tokens)]
    a = pk.cache(model, texts, NAMES[0], batch_size=8, dtype=None, progress=False)
    b = pk.cache(model, texts, NAMES[0], batch_size=32, dtype=None, progress=False)
    assert a.meta["data_fingerprint"] == b.meta["data_fingerprint"]
    assert torch.equal(a["attention_mask"], b["attention_mask"])
    real = a["attention_mask"].bool()
    assert torch.allclose(a[NAMES[0]][real], b[NAMES[0]][real], atol=1e-5)
    # an iterable whose batches have different sizes, across shard boundaries
    sizes = [5, 11, 3, 17, 9, 25]
    chunks = list(tokens[: sum(sizes)].split(sizes))
    uneven = pk.cache(
        model, iter(chunks), NAMES[0], out=tmp_path, shard_size=16, dtype=None, progress=False
    )
    whole = pk.cache(
        model, tokens[: sum(sizes)], NAMES[0], batch_size=70, dtype=None, progress=False
    )
    assert len(uneven) == sum(sizes)
    assert torch.allclose(uneven[NAMES[0]], whole[NAMES[0]], atol=1e-5)
    assert uneven.meta["data_fingerprint"] == whole.meta["data_fingerprint"]


def test_positions_select_last_real_token_of_text(model):
    texts = ["w1 w2 w3 w4", "w5 w6", "w7 w8 w9"]
    store = pk.cache(model, texts, NAMES[0], positions=-1, dtype=None, progress=False)
    assert store.shapes[NAMES[0]] == (32,)
    assert store["attention_mask"].sum(1).tolist() == [4, 2, 3]
    for i, text in enumerate(texts):
        ids = model.tokenizer(text, return_tensors="pt")["input_ids"]
        _, cache = model.run_with_cache(ids, names_filter=NAMES[0])
        assert torch.allclose(store[NAMES[0]][i], cache[NAMES[0]][0, -1], atol=1e-5)
    listed = pk.cache(model, texts, NAMES[0], positions=[0, 1], dtype=None, progress=False)
    assert listed.shapes[NAMES[0]] == (2, 32)


def test_stale_store_is_refused(model_dir, model, tokens, tmp_path):
    pk.cache(model, tokens, NAMES[0], out=tmp_path, batch_size=16, progress=False)
    other = pk.load(_gpt2(seed=1), device="cpu")
    with pytest.raises(StaleStoreError, match="written by model"):
        pk.cache(other, tokens, NAMES[0], out=tmp_path, batch_size=16, progress=False)
    with pytest.raises(StaleStoreError, match="written for data"):
        pk.cache(model, tokens.flip(0), NAMES[0], out=tmp_path, batch_size=16, progress=False)
    with pytest.raises(StaleStoreError, match="names"):
        pk.cache(model, tokens, NAMES[1], out=tmp_path, batch_size=16, progress=False)
    # the refused calls left the store as it was
    assert pk.ActivationStore.open(tmp_path).meta["model_fingerprint"] == pk.fingerprint(model)
    replaced = pk.cache(
        other, tokens, NAMES[0], out=tmp_path, batch_size=16, resume=False, progress=False
    )
    assert replaced.meta["model_fingerprint"] == pk.fingerprint(other)


def test_edited_model_changes_fingerprint_and_is_refused(model_dir, tokens, tmp_path):
    model = pk.load(model_dir, device="cpu")
    pk.cache(model, tokens, NAMES[0], out=tmp_path, batch_size=16, progress=False)
    with torch.no_grad():
        model.original_model.transformer.h[0].attn.c_attn.weight[3, 5] += 0.01
    with pytest.raises(StaleStoreError):
        pk.cache(model, tokens, NAMES[0], out=tmp_path, batch_size=16, progress=False)


_KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, torch
    import probekit as pk
    import probekit.activations as acts
    from probekit import fileio

    model = pk.load(sys.argv[1], device="cpu")
    tokens = torch.load(sys.argv[2])
    mode, after = sys.argv[4], int(sys.argv[5])
    calls = {"n": 0}
    if mode == "forward":
        from probekit.models.runner import Runner
        original = Runner.activations
        def forward(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] > after:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)
        Runner.activations = forward
    else:  # die half-way through writing a shard file
        from safetensors.torch import save_file
        def dying_save(tensors, path, metadata=None):
            calls["n"] += 1
            if calls["n"] > after:
                with open(path, "wb") as fh:
                    fh.write(b"half a shard")
                os.kill(os.getpid(), signal.SIGKILL)
            return save_file(tensors, path, metadata=metadata)
        import safetensors.torch
        safetensors.torch.save_file = dying_save
    pk.cache(model, tokens, ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"],
             out=sys.argv[3], batch_size=8, shard_size=16, dtype=torch.float32, progress=False)
    """
)


@pytest.mark.parametrize("mode, after", [("forward", 5), ("write", 2)])
def test_killed_cache_resumes_to_the_same_store(
    model_dir, model, tokens, tmp_path, mode, after, monkeypatch
):
    names = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    torch.save(tokens, tmp_path / "tokens.pt")
    script = tmp_path / "kill.py"
    script.write_text(_KILL_SCRIPT)
    out = tmp_path / "store"
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            str(model_dir),
            str(tmp_path / "tokens.pt"),
            str(out),
            mode,
            str(after),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"] and 1 <= len(manifest["shards"]) < 5
    with pytest.raises(Exception, match="incomplete"):
        pk.ActivationStore.open(out)
    written = {s["start"] for s in manifest["shards"]}

    from probekit.models.runner import Runner

    computed = []
    original = Runner.activations
    monkeypatch.setattr(
        Runner, "activations", lambda r, x, *a: computed.append(len(x)) or original(r, x, *a)
    )
    resumed = pk.cache(
        model,
        tokens,
        names,
        out=out,
        batch_size=8,
        shard_size=16,
        dtype=torch.float32,
        progress=False,
    )
    monkeypatch.setattr(Runner, "activations", original)
    # only the shards that were not complete were computed again
    assert sum(computed) == 70 - 16 * len(written)
    assert not list((out / "shards").glob(".*.tmp"))
    clean = pk.cache(
        model,
        tokens,
        names,
        out=tmp_path / "clean",
        batch_size=8,
        shard_size=16,
        dtype=torch.float32,
        progress=False,
    )
    for name in names:
        assert torch.equal(resumed[name], clean[name])
    assert resumed.meta["data_fingerprint"] == clean.meta["data_fingerprint"]
    assert [s["start"] for s in resumed.meta["shards"]] == [0, 16, 32, 48, 64]


def test_bad_arguments_name_the_argument(model, tokens, tmp_path):
    with pytest.raises(ValueError, match="names: 'blocks.0.hook_resid_pots' is not a hook"):
        pk.cache(model, tokens, "blocks.0.hook_resid_pots", progress=False)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        pk.cache(model, tokens, NAMES[0], batch_size=0, progress=False)
    with pytest.raises(ValueError, match="positions"):
        pk.cache(model, tokens, NAMES[0], positions="last", progress=False)
    with pytest.raises(ValueError, match="token ids must be"):
        pk.cache(model, tokens[0], NAMES[0], progress=False)
    with pytest.raises(TypeError, match="data must be"):
        pk.cache(model, "w1 w2", NAMES[0], progress=False)
    with pytest.raises(TypeError, match="model must be"):
        pk.cache(torch.nn.Linear(2, 2), tokens, NAMES[0], progress=False)
    with pytest.raises(FileNotFoundError, match="not an activation store"):
        pk.ActivationStore.open(tmp_path)
    store = pk.cache(model, tokens, NAMES[0], progress=False)
    with pytest.raises(KeyError, match="did you mean"):
        store["blocks.0.hook_resid_pots"]


def test_memory_store_and_text_without_tokenizer(tokens):
    bare = pk.load(_gpt2(), device="cpu")
    with pytest.raises(ValueError, match="no tokenizer"):
        pk.cache(bare, ["w1 w2"], NAMES[0], progress=False)
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_cache_keeps_extras_per_item_and_fingerprints_them(tmp_path):
    import probekit as pk

    rnn = pk.load(torch.nn.GRU(3, 5, batch_first=True), device="cpu")
    x = torch.randn(10, 4, 3, generator=torch.Generator().manual_seed(0))
    task = torch.arange(10) % 3
    where = torch.randn(10, 4, 2)
    store = pk.cache(
        rnn,
        x,
        "hook_hidden",
        out=tmp_path / "s",
        batch_size=4,
        shard_size=4,
        dtype=torch.float32,
        progress=False,
        extras={"task_id": task, "positions": where},
    )
    reopened = pk.ActivationStore.open(tmp_path / "s")
    assert set(reopened.extras) == {"task_id", "positions"}
    assert torch.equal(reopened["task_id"], task)
    assert torch.equal(reopened["positions"], where)
    torch.testing.assert_close(store["hook_hidden"], rnn.run_with_cache(x)[1]["hook_hidden"])
    with pytest.raises(pk.activations.StaleStoreError):
        pk.cache(
            rnn,
            x,
            "hook_hidden",
            out=tmp_path / "s",
            batch_size=4,
            shard_size=4,
            dtype=torch.float32,
            progress=False,
            extras={"task_id": task + 1, "positions": where},
        )
    with pytest.raises(ValueError, match="one entry per item"):
        pk.cache(rnn, x, "hook_hidden", progress=False, extras={"task_id": task[:3]})
