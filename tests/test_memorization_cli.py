"""``probekit audit``: outputs, redaction, resume, and one clear error for bad data files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from probekit import memorization as mem
from probekit.cli import main

K, M = 8, 12


@pytest.fixture
def model_dir(tmp_path, word_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        num_hidden_layers=1,
        hidden_size=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        vocab_size=65,
    )
    model = LlamaForCausalLM(cfg)
    path = tmp_path / "model"
    model.save_pretrained(path)
    word_tokenizer.save_pretrained(path)
    return path


def _texts(n: int, seed: int) -> list[str]:
    ids = torch.randint(0, 64, (n, K + M + 2), generator=torch.Generator().manual_seed(seed))
    return [" ".join(f"w{i}" for i in row) for row in ids.tolist()]


def test_audit_command_writes_report_tables_and_summary(model_dir, tmp_path, capsys):
    import probekit as pk

    data = tmp_path / "members.txt"
    data.write_text("\n".join(_texts(5, 0)) + "\n")
    nonmembers = tmp_path / "nonmembers.jsonl"
    nonmembers.write_text("".join(json.dumps({"text": t}) + "\n" for t in _texts(4, 1)))
    out = tmp_path / "out"
    argv = ["audit", str(model_dir), "--data", str(data), "--nonmembers", str(nonmembers)]
    argv += ["--prefix", str(K), "--suffix", str(M), "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert "9 sequences" in capsys.readouterr().out
    table = pd.read_csv(out / "table.csv")
    assert table["set"].tolist() == ["data"] * 5 + ["nonmembers"] * 4
    assert pd.read_parquet(out / "table.parquet").shape == table.shape
    summary = json.loads((out / "summary.json").read_text())
    assert summary["audit"]["sequences"] == 9
    assert summary["membership"]["members"] == 5
    page = (out / "report.html").read_text()
    assert "Membership inference" in page and "fewer than one false positive" in page
    # the table equals the library audit of the same texts
    direct = mem.audit(str(model_dir), _texts(5, 0), prefix_len=K, suffix_len=M).frame
    np.testing.assert_allclose(table["ce"][:5], direct["ce"], rtol=1e-5)
    assert table["text"][0] == direct["text"][0]
    store = pk.ActivationStore.open(out / "store")
    assert len(store) == 9 and store["nonmember"].tolist() == [False] * 5 + [True] * 4


def test_audit_redact_hides_texts_everywhere(model_dir, tmp_path):
    secret = "w63 w62 w61 w60 w59 w58 w57 w56 w55 w54 w53 w52 w51 w50 w49 w48 w47 w46 w45 w44"
    data = tmp_path / "d.txt"
    data.write_text(secret + "\n")
    out = tmp_path / "out"
    argv = ["audit", str(model_dir), "--data", str(data), "--prefix", str(K), "--suffix", str(M)]
    assert main(argv + ["--out", str(out), "--redact", "--quiet"]) == 0
    for name in ("report.html", "table.csv", "summary.json"):
        assert "w63 w62" not in (out / name).read_text()
    table = pd.read_csv(out / "table.csv")
    assert "text" not in table and len(table["sha256"][0]) == 16
    assert table["chars"][0] == len(secret)


def test_audit_resumes_from_completed_shards(model_dir, tmp_path, monkeypatch):
    import probekit as pk

    ids = torch.randint(0, 64, (7, K + M), generator=torch.Generator().manual_seed(2))
    data = tmp_path / "d.npy"
    np.save(data, ids.numpy())
    out = tmp_path / "out"
    argv = ["audit", str(model_dir), "--data", str(data), "--prefix", str(K), "--suffix", str(M)]
    argv += ["--out", str(out), "--quiet", "--batch-size", "3"]

    calls = {"n": 0}
    real = mem._score_batch

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(mem, "_score_batch", interrupted)
    monkeypatch.setattr(mem, "_audit_shard_size", lambda batch_size: batch_size)
    assert main(argv) != 0  # interrupted in the second batch
    manifest = json.loads((out / "store" / "manifest.json").read_text())
    assert not manifest["complete"] and [s["start"] for s in manifest["shards"]] == [0]
    calls["n"] = 0

    def counted(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(mem, "_score_batch", counted)
    assert main(argv) == 0
    assert calls["n"] == 2  # batches 2 and 3 only
    resumed = pd.read_csv(out / "table.csv")
    fresh = mem.audit(str(model_dir), ids, prefix_len=K, suffix_len=M).frame
    assert resumed["lev"].tolist() == fresh["lev"].tolist()
    np.testing.assert_allclose(resumed["ce"], fresh["ce"], rtol=1e-6)
    store = pk.ActivationStore.open(out / "store")
    assert len(store) == 7
    assert torch.equal(store["tokens"], ids)
    assert store["logp"].shape == (7, K + M - 1) and store["generated"].shape == (7, M)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", "\n\n", "no sequences"),
        ("short.txt", "w1 w2 w3\n", "has 3 tokens; prefix_len \\+ suffix_len = 20"),
        ("bad.jsonl", '{"text": "w1"}\nnot json\n', "line 2 is not JSON"),
        ("nofield.jsonl", '{"words": "w1"}\n', "line 1 has neither 'text' nor 'tokens'"),
        ("vocab.jsonl", json.dumps({"tokens": list(range(60, 80))}) + "\n", "outside the vocab"),
        ("binary.txt", b"\xff\xfe\x00garbage", "line 1 is not UTF-8 text"),
        ("data.csv", "a,b\n", "unknown file type '.csv'"),
        ("float.npy", np.zeros((2, 20)), "integer token ids"),
    ],
)
def test_audit_bad_files_exit_2_with_one_line(model_dir, tmp_path, capsys, name, content, message):
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    argv = ["audit", str(model_dir), "--data", str(path), "--prefix", str(K), "--suffix", str(M)]
    assert main(argv + ["--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len([line for line in err.splitlines() if "error" in line]) == 1
    err = err.splitlines()[-1]
    assert str(path.name) in err
    import re

    assert re.search(message, err), err


def test_audit_missing_model_and_bad_numbers_exit_2(tmp_path, capsys, model_dir):
    data = tmp_path / "d.txt"
    data.write_text("\n".join(_texts(2, 3)))
    assert main(["audit", str(tmp_path / "nope"), "--data", str(data), "--out", "o"]) == 2
    assert "does not exist" in capsys.readouterr().err
    argv = ["audit", str(model_dir), "--data", str(data), "--out", str(tmp_path / "o")]
    assert main(argv + ["--prefix", "0"]) == 2
    assert "--prefix must be a positive integer" in capsys.readouterr().err
    assert main(argv) == 2  # 32 + 64 > context 32
    assert "exceeds the model's context of 32" in capsys.readouterr().err


def test_audit_refuses_an_out_holding_another_audit_unless_forced(model_dir, tmp_path, capsys):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("\n".join(_texts(3, 0)) + "\n")
    second.write_text("\n".join(_texts(3, 1)) + "\n")
    out = tmp_path / "out"
    base = ["audit", str(model_dir), "--prefix", str(K), "--suffix", str(M), "--out", str(out)]
    assert main([*base, "--data", str(first), "--quiet"]) == 0
    before = (out / "table.csv").read_text()
    capsys.readouterr()
    assert main([*base, "--data", str(second), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--force" in err and err.count("\n") == 0
    assert (out / "table.csv").read_text() == before  # nothing overwritten
    assert main([*base, "--data", str(second), "--quiet", "--force"]) == 0
    assert (out / "table.csv").read_text() != before


def test_redact_hashes_are_keyed(model_dir, tmp_path):
    import hashlib

    data = tmp_path / "d.txt"
    text = _texts(1, 3)[0]
    data.write_text(text + "\n")
    base = ["audit", str(model_dir), "--data", str(data), "--prefix", str(K), "--suffix", str(M)]
    hashes = []
    for i, key in enumerate((None, None, "k1", "k1")):
        argv = [*base, "--out", str(tmp_path / f"o{i}"), "--redact", "--quiet"]
        assert main(argv + (["--redact-key", key] if key else [])) == 0
        hashes.append(pd.read_csv(tmp_path / f"o{i}" / "table.csv")["sha256"][0])
    decoded = " ".join(text.split()[: K + M])
    assert hashlib.sha256(decoded.encode()).hexdigest()[:16] not in hashes  # not confirmable
    assert hashes[0] != hashes[1] and hashes[2] == hashes[3]
