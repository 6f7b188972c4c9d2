"""The store refuses what would corrupt it: a second writer, stale iterable data, a tampered or
truncated shard, a manifest pointing outside the store, positions that select nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import probekit as pk
from probekit.activations import StaleStoreError, StoreLockedError
from probekit.fileio import CheckpointError


@pytest.fixture(scope="module")
def rnn():
    return pk.load(torch.nn.GRU(3, 4, batch_first=True), device="cpu")


def _data(seed: int, n: int = 24) -> torch.Tensor:
    return torch.randn(n, 5, 3, generator=torch.Generator().manual_seed(seed))


def _cache(rnn, data, out, **kw):
    kw = {"batch_size": 4, "shard_size": 8, "dtype": torch.float32, "progress": False} | kw
    return pk.cache(rnn, data, "hook_hidden", out=out, **kw)


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(rnn, tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    # a live writer (this test's parent process, on this host) holds the lock
    (out / ".lock").write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename}))
    with pytest.raises(StoreLockedError, match="being written by process"):
        _cache(rnn, _data(0), out)
    assert not (out / "manifest.json").exists()


def test_a_dead_writers_lock_is_taken_over(rnn, tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    (out / ".lock").write_text(json.dumps({"pid": pid, "host": os.uname().nodename}))
    store = _cache(rnn, _data(0), out)
    assert len(store) == 24 and not (out / ".lock").exists()


def test_two_concurrent_cache_processes_leave_exactly_the_first_writers_store(rnn, tmp_path):
    model_dir = tmp_path / "rnn"
    rnn.save(model_dir)
    out = tmp_path / "s"
    script = tmp_path / "w.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, time, torch, probekit as pk
        import probekit.models.runner as r
        seed = int(sys.argv[1])
        original = r.Runner.activations
        def slow(self, *a, **k):
            time.sleep(0.3)
            return original(self, *a, **k)
        r.Runner.activations = slow
        model = pk.load({str(model_dir)!r}, device="cpu")
        data = torch.randn(24, 5, 3, generator=torch.Generator().manual_seed(seed))
        try:
            pk.cache(model, data, "hook_hidden", out={str(out)!r}, batch_size=4, shard_size=8,
                     dtype=torch.float32, progress=False)
        except pk.activations.StoreLockedError as err:
            print("LOCKED", err); sys.exit(3)
        except pk.activations.StaleStoreError as err:
            print("STALE", err); sys.exit(4)
    """)
    )
    first = subprocess.Popen([sys.executable, str(script), "0"], stdout=subprocess.PIPE, text=True)
    import time

    while not (out / ".lock").exists() and first.poll() is None:
        time.sleep(0.05)
    second = subprocess.run([sys.executable, str(script), "1"], capture_output=True, text=True)
    first.communicate(timeout=120)
    assert first.returncode == 0
    assert second.returncode in (3, 4), second.stdout + second.stderr
    store = pk.ActivationStore.open(out)
    torch.testing.assert_close(store["hook_hidden"], rnn.run_with_cache(_data(0))[1]["hook_hidden"])


def test_a_complete_store_is_not_reused_for_other_streamed_data(rnn, tmp_path):
    out = tmp_path / "s"
    a, b = _data(0), _data(1)
    _cache(rnn, (a[i : i + 4] for i in range(0, 24, 4)), out)
    with pytest.raises(StaleStoreError, match="other data"):
        _cache(rnn, (b[i : i + 4] for i in range(0, 24, 4)), out)
    # the same stream is reused as it is
    again = _cache(rnn, (a[i : i + 4] for i in range(0, 24, 4)), out)
    torch.testing.assert_close(again["hook_hidden"], rnn.run_with_cache(a)[1]["hook_hidden"])


def test_an_incomplete_store_refuses_other_streamed_data_before_writing(rnn, tmp_path):
    out = tmp_path / "s"
    _cache(rnn, _data(0), out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["complete"] = False  # as if killed after the last shard
    manifest["shards"] = manifest["shards"][:1]
    (out / "manifest.json").write_text(json.dumps(manifest))
    b = _data(1)
    with pytest.raises(StaleStoreError, match="differ"):
        _cache(rnn, (b[i : i + 4] for i in range(0, 24, 4)), out)
    assert len(json.loads((out / "manifest.json").read_text())["shards"]) == 1


def test_a_truncated_shard_is_reported_on_open_and_recomputed_on_resume(rnn, tmp_path):
    out = tmp_path / "s"
    _cache(rnn, _data(0), out)
    shard = sorted((out / "shards").iterdir())[1]
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="truncated or replaced"):
        pk.ActivationStore.open(out)
    with pytest.warns(UserWarning, match="computed again"):
        store = _cache(rnn, _data(0), out)
    torch.testing.assert_close(store["hook_hidden"], rnn.run_with_cache(_data(0))[1]["hook_hidden"])


def test_a_tampered_shard_of_the_same_size_fails_verify(rnn, tmp_path):
    out = tmp_path / "s"
    _cache(rnn, _data(0), out)
    shard = sorted((out / "shards").iterdir())[0]
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256"):
        pk.ActivationStore.open(out).verify()


def test_a_manifest_pointing_outside_the_store_is_refused(rnn, tmp_path):
    out = tmp_path / "s"
    _cache(rnn, _data(0), out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["shards"][0]["file"] = "shards/../../../../etc/passwd"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="outside shards/"):
        pk.ActivationStore.open(out)


def test_wrong_recorded_shapes_are_refused(rnn, tmp_path):
    out = tmp_path / "s"
    _cache(rnn, _data(0), out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["n_items"] = 30
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="do not cover"):
        pk.ActivationStore.open(out)


def test_positions_that_select_nothing_are_an_error(rnn):
    with pytest.raises(ValueError, match="select no position"):
        pk.cache(rnn, _data(0), "hook_hidden", positions=slice(50, 60), progress=False)


def test_inputs_the_model_cannot_take_are_refused_before_the_forward_pass():
    from tiny_models import tiny_causal_lm

    model = pk.load(tiny_causal_lm("gpt2", vocab_size=40, n_positions=16), device="cpu")
    for data, message in (
        (torch.tensor([[1, 2, 40]]), "token id 40 is outside the vocabulary"),
        (torch.tensor([[1, -2, 3]]), "token id -2 is outside the vocabulary"),
        (torch.zeros(1, 17, dtype=torch.long), "longer than the model's context of 16"),
        (torch.zeros(2, 5, 3), "takes token ids"),
    ):
        with pytest.raises(ValueError, match=message):
            pk.cache(model, data, "blocks.0.hook_resid_post", progress=False)


def test_cli_cache_user_errors_exit_2_with_one_line(tmp_path, capsys):
    from tiny_models import tiny_causal_lm

    from probekit.cli import main

    model_dir = tmp_path / "m"
    tiny_causal_lm("gpt2", vocab_size=40, n_positions=16).save_pretrained(model_dir)
    capsys.readouterr()
    cases = {
        "ids.npy": np.array([[1, 2, 99]]),
        "long.npy": np.zeros((1, 40), dtype=np.int64),
        "float.npy": np.zeros((2, 5, 3), dtype=np.float32),
    }
    for name, array in cases.items():
        np.save(tmp_path / name, array)
        argv = ["cache", str(model_dir), "--data", str(tmp_path / name), "--names"]
        argv += ["blocks.0.hook_resid_post", "--out", str(tmp_path / "s"), "--quiet"]
        assert main(argv) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("probekit cache: error: data:"), err
    argv = ["cache", str(model_dir), "--data", str(tmp_path / "ids.npy"), "--names"]
    argv += ["blocks.0.hook_resid_post", "--out", str(tmp_path / "s"), "--device", "cuda"]
    if not torch.cuda.is_available():
        assert main(argv) == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_non_finite_positions_and_silent_networks_get_clear_errors():
    positions = torch.zeros(2, 10, 2)
    positions[1, 3, 0] = float("inf")
    with pytest.raises(ValueError, match="positions must be finite; sample 13"):
        pk.grid.ratemaps(torch.randn(2, 10, 4), positions, bins=5, extent=((-1, 1), (-1, 1)))
    with pytest.raises(ValueError, match="0 active unit"):
        pk.modularity.cluster(np.zeros((10, 4)))


def test_a_full_disk_is_one_line_and_the_store_stays_resumable(rnn, tmp_path, monkeypatch):
    import errno

    import probekit.activations as acts

    real = acts.save_safetensors_atomic
    calls = {"n": 0}

    def full_disk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(acts, "save_safetensors_atomic", full_disk)
    with pytest.raises(acts.StoreWriteError, match="No space left on device.*resume"):
        _cache(rnn, _data(0), tmp_path / "s")
    monkeypatch.setattr(acts, "save_safetensors_atomic", real)
    store = _cache(rnn, _data(0), tmp_path / "s")  # resumes: the first shard is kept
    torch.testing.assert_close(store["hook_hidden"], rnn.run_with_cache(_data(0))[1]["hook_hidden"])


def test_a_huge_text_line_is_refused_before_tokenising(tmp_path):
    from tiny_models import tiny_causal_lm

    model = pk.load(tiny_causal_lm("gpt2", vocab_size=40, n_positions=16), device="cpu")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab={f"w{i}": i for i in range(40)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    model.tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0", pad_token="w0")
    with pytest.raises(ValueError, match="more than fit in the model's context"):
        pk.cache(model, ["w1 w2", "w3 " * 3_000_000], "blocks.0.hook_resid_post", progress=False)
