"""A seeded mutation fuzzer over what a careless or hostile user hands probekit: config values,
safetensors headers and data files. Every case ends in success or a clear probekit error
(``CheckpointError`` / ``UsageError``, both ``ValueError``s naming the file or field), never in
another exception type, and never grows the process by more than a set memory bound."""

from __future__ import annotations

import json
import random
import resource
import shutil
import struct

import numpy as np
import pytest
import torch

from probekit.fileio import CheckpointError
from probekit.inputs import UsageError, read_data
from probekit.models.loading import load_hf_plain

MEMORY_BOUND_MB = 1500
VALUES = [-1, 0, 1, 2, 3, 7, 64, 10**6, 10**9, 2**40, "two", 2.5, None, True, [], {}, "", -(10**9)]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fuzz") / "gpt2"
    cfg = GPT2Config(n_layer=2, n_embd=16, n_head=2, n_positions=16, vocab_size=40)
    GPT2LMHeadModel(cfg).save_pretrained(path)
    return path


def _load_or_clear_error(path) -> None:
    try:
        load_hf_plain(path, device="cpu")
    except CheckpointError as err:
        assert str(path) in str(err) or "config" in str(err), err
    # any other exception type fails the test


def test_fuzzed_config_values_load_or_fail_clearly(model_dir, tmp_path):
    rng = random.Random(0)
    fields = ["n_layer", "n_embd", "n_head", "vocab_size", "n_positions", "n_inner"]
    config = json.loads((model_dir / "config.json").read_text())
    start = _peak_mb()
    for case in range(120):
        target = tmp_path / f"c{case % 4}"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(model_dir, target)
        mutated = dict(config)
        for field in rng.sample(fields, rng.randint(1, 2)):
            mutated[field] = rng.choice(VALUES)
        (target / "config.json").write_text(json.dumps(mutated))
        _load_or_clear_error(target)
    assert _peak_mb() - start < MEMORY_BOUND_MB


def test_fuzzed_safetensors_headers_load_or_fail_clearly(model_dir, tmp_path):
    rng = random.Random(1)
    raw = (model_dir / "model.safetensors").read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    start = _peak_mb()
    for case in range(60):
        target = tmp_path / f"h{case % 4}"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(model_dir, target)
        data = bytearray(raw)
        kind = case % 4
        if kind == 0:  # flip bytes inside the JSON header
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(8, 8 + header_len)] = rng.randrange(256)
        elif kind == 1:  # a lying header length
            data[:8] = struct.pack("<Q", rng.choice([0, 1, header_len - 3, 2**40, 2**63]))
        elif kind == 2:  # truncated
            data = data[: rng.randrange(0, len(data))]
        else:  # a header naming other shapes or dtypes
            header = json.loads(bytes(data[8 : 8 + header_len]))
            name = rng.choice([k for k in header if k != "__metadata__"])
            if rng.random() < 0.5:
                header[name]["dtype"] = rng.choice(["I64", "I8", "BOOL", "U8"])
            else:
                header[name]["shape"] = [rng.choice([1, 3, 10**6]) for _ in header[name]["shape"]]
            text = json.dumps(header).encode()
            text += b" " * ((8 - len(text) % 8) % 8)
            data = struct.pack("<Q", len(text)) + text + data[8 + header_len :]
        (target / "model.safetensors").write_bytes(bytes(data))
        _load_or_clear_error(target)
    assert _peak_mb() - start < MEMORY_BOUND_MB


def test_fuzzed_data_files_read_or_fail_clearly(tmp_path):
    rng = random.Random(2)
    seeds = {
        ".txt": b"w1 w2 w3\nw4 w5 w6\n",
        ".jsonl": (
            json.dumps({"text": "w1 w2"}) + "\n" + json.dumps({"text": "w3"}) + "\n"
        ).encode(),
        ".npy": None,
    }
    good_npy = tmp_path / "good.npy"
    np.save(good_npy, np.arange(12).reshape(3, 4))
    seeds[".npy"] = good_npy.read_bytes()
    start = _peak_mb()
    for case in range(150):
        suffix = list(seeds)[case % 3]
        data = bytearray(seeds[suffix])
        for _ in range(rng.randint(1, 6)):
            op = rng.random()
            if op < 0.4 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif op < 0.7:
                data.insert(rng.randrange(len(data) + 1), rng.choice(b'{}[]":,\n\xff\x00'))
            elif data:
                del data[rng.randrange(len(data))]
        path = tmp_path / f"d{case}{suffix}"
        path.write_bytes(bytes(data))
        try:
            got = read_data(path, "--data")
        except UsageError as err:
            assert str(path) in str(err) and "\n" not in str(err), err
        else:
            assert isinstance(got, (list, torch.Tensor))
    assert _peak_mb() - start < MEMORY_BOUND_MB


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_layer": 1}, "weights hold tensor 'transformer.h.1"),
        ({"n_layer": -1}, "'n_layer' must be a non-negative integer"),
        ({"n_layer": "two"}, "'n_layer' must be a non-negative integer, got 'two'"),
        ({"n_layer": 1000000}, "the weights hold 2 layer"),
        ({"vocab_size": 2000000}, "'vocab_size' = 2000000 is larger than any tensor"),
        ({"n_embd": 32}, "has shape"),
    ],
)
def test_a_config_that_disagrees_with_its_weights_is_refused(model_dir, tmp_path, change, message):
    import probekit as pk

    target = tmp_path / "m"
    shutil.copytree(model_dir, target)
    config = json.loads((target / "config.json").read_text()) | change
    (target / "config.json").write_text(json.dumps(config))
    start = _peak_mb()
    with pytest.raises(CheckpointError, match=message):
        pk.load(target, device="cpu")
    assert _peak_mb() - start < 200  # refused before anything the config asks for is allocated


def test_unexpected_and_integer_tensors_are_refused_unless_strict_is_off(model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    import probekit as pk

    target = tmp_path / "m"
    shutil.copytree(model_dir, target)
    tensors = load_file(target / "model.safetensors")
    save_file(tensors | {"extra.weight": torch.zeros(3)}, target / "model.safetensors")
    with pytest.raises(CheckpointError, match="'extra.weight' that the config does not describe"):
        pk.load(target, device="cpu")
    assert pk.load(target, device="cpu", strict=False) is not None
    name = next(iter(tensors))
    save_file(tensors | {name: tensors[name].long()}, target / "model.safetensors")
    with pytest.raises(CheckpointError, match="must be floating point"):
        pk.load(target, device="cpu")
