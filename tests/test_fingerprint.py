"""pk.fingerprint: the same across processes and load paths, different for any change."""

from __future__ import annotations

import subprocess
import sys

import torch

import probekit as pk


def _fingerprint_in_subprocess(path) -> str:
    code = f"import probekit as pk; print(pk.fingerprint(pk.load({str(path)!r}, device='cpu')))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return proc.stdout.strip().splitlines()[-1]


def test_fingerprint_same_in_another_process_and_after_save(tmp_path):
    torch.manual_seed(0)
    rnn = pk.load(torch.nn.LSTM(4, 6, batch_first=True))
    rnn.save(tmp_path / "rnn")
    here = pk.fingerprint(rnn)
    assert pk.fingerprint(pk.load(tmp_path / "rnn")) == here
    assert _fingerprint_in_subprocess(tmp_path / "rnn") == here


def test_fingerprint_of_hf_directory_matches_in_memory_model(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=8, vocab_size=20))
    hf.save_pretrained(tmp_path)
    from_dir = pk.fingerprint(pk.load(tmp_path, device="cpu"))
    assert _fingerprint_in_subprocess(tmp_path) == from_dir
    assert pk.fingerprint(pk.load(hf, device="cpu")) == from_dir


def test_fingerprint_changes_with_weights_dtype_and_config():
    torch.manual_seed(0)
    gru = torch.nn.GRU(3, 5, batch_first=True)
    base = pk.fingerprint(pk.load(gru))
    assert pk.fingerprint(pk.load(gru, dtype=torch.float64)) != base
    edited = pk.load(gru)
    with torch.no_grad():
        edited.weight_hh[0, 0] += 1e-6
    assert pk.fingerprint(edited) != base
    assert pk.fingerprint(pk.load(torch.nn.RNN(3, 5, batch_first=True))) != base
