"""backend="ray": the same store as the local backend, computed by Ray actors; resume after a
killed actor or a killed driver; stale stores refused; the audit through Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import ray
import torch

import probekit as pk
from probekit.activations import StaleStoreError

pytestmark = pytest.mark.ray

NAMES = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """One local Ray cluster for this module (2 CPUs, no dashboard), shut down at the end."""
    from probekit import distributed

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    distributed.shutdown_workers()
    if started:
        ray.shutdown()


def _gpt2(seed: int = 0):
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_models import tiny_causal_lm

    return tiny_causal_lm("gpt2", seed=seed)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpt2")
    _gpt2().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model(model_dir):
    return pk.load(model_dir, device="cpu")


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 65, (40, 12), generator=torch.Generator().manual_seed(0))


def _layout(store):
    return [(s["file"], s["start"], s["stop"], s["data_sha256"]) for s in store.meta["shards"]]


def _assert_same_store(local, remote):
    assert remote.shapes == local.shapes and remote.extras == local.extras
    assert {k: v for k, v in remote.meta.items() if k not in ("shards", "seconds")} == {
        k: v for k, v in local.meta.items() if k not in ("shards", "seconds")
    }  # fingerprints, names, shapes, dtypes, options, shard size
    assert _layout(remote) == _layout(local)
    for name in local.shapes:
        assert remote[name].dtype == local[name].dtype
        assert torch.equal(remote[name], local[name]), name  # bit-identical
    remote.verify()


def test_transformer_store_through_ray_is_bit_identical_to_local(model, tokens, tmp_path):
    kwargs = dict(batch_size=4, shard_size=8, dtype=torch.float32, progress=False)
    local = pk.cache(model, tokens, NAMES, out=tmp_path / "local", **kwargs)
    remote = pk.cache(model, tokens, NAMES, out=tmp_path / "ray", backend="ray", **kwargs)
    assert len(local.meta["shards"]) == 5
    _assert_same_store(local, remote)


def test_edited_model_is_shipped_by_weights_not_by_its_stale_path(model_dir, tokens, tmp_path):
    edited = pk.load(model_dir, device="cpu")
    with torch.no_grad():
        next(edited.parameters()).add_(0.5)  # the checkpoint on disk is now another model
    kwargs = dict(batch_size=8, dtype=torch.float32, progress=False, positions=-1)
    local = pk.cache(edited, tokens, NAMES, out=tmp_path / "local", **kwargs)
    remote = pk.cache(edited, tokens, NAMES, out=tmp_path / "ray", backend="ray", **kwargs)
    _assert_same_store(local, remote)


def test_rnn_store_through_ray_is_bit_identical_to_local(tmp_path):
    torch.manual_seed(0)
    rnn = pk.load(torch.nn.GRU(3, 5, batch_first=True), device="cpu")  # not from a path
    inputs = torch.randn(22, 6, 3, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(22) % 3
    kwargs = dict(batch_size=4, dtype=torch.float32, progress=False, extras={"label": labels})
    local = pk.cache(rnn, inputs, "hook_hidden", out=tmp_path / "local", **kwargs)
    remote = pk.cache(rnn, inputs, "hook_hidden", out=tmp_path / "ray", backend="ray", **kwargs)
    from probekit import distributed

    assert remote.extras == ["label"] and distributed.LAST_RUN["shards_computed"] == 1
    _assert_same_store(local, remote)


def test_rnn_subclass_is_rebuilt_as_its_own_class_on_the_actors(tmp_path):
    """A HookedRNN subclass with its own config and parameters (the SSL grid network) is shipped
    by weights and rebuilt as that class: the same store as the local backend."""
    from probekit.tasks import navigation

    model = navigation.ssl_grid_network(8, (8, 8), seed=2, seq_len=7, bins=8)
    velocities = torch.rand(10, 7, 2, generator=torch.Generator().manual_seed(3)) * 0.2 - 0.1
    kwargs = dict(batch_size=4, dtype=torch.float32, progress=False)
    local = pk.cache(model, velocities, "hook_hidden", out=tmp_path / "local", **kwargs)
    remote = pk.cache(
        model, velocities, "hook_hidden", out=tmp_path / "ray", backend="ray", **kwargs
    )
    _assert_same_store(local, remote)


def _slow(tokens, batch_size, delay):
    """The same data as an iterable that a slow loader yields batch by batch."""
    for start in range(0, len(tokens), batch_size):
        time.sleep(delay)
        yield tokens[start : start + batch_size]


def _shard_files(out: Path) -> list[Path]:
    return sorted((out / "shards").glob("shard-*.safetensors"))


DRIVER = """
import sys, time, torch, ray
import probekit as pk
ray.init(address=sys.argv[1], log_to_driver=False)
model = pk.load(sys.argv[2], device="cpu")
tokens = torch.load(sys.argv[3])
def slow():
    for start in range(0, len(tokens), 4):
        time.sleep(0.4)
        yield tokens[start : start + 4]
print("started", flush=True)
pk.cache(model, slow(), {names!r}, out=sys.argv[4], batch_size=4, shard_size=4,
         dtype=torch.float32, progress=False, backend="ray", workers=1)
print("finished", flush=True)
"""


def test_killed_driver_rerun_resumes_without_recomputing_and_equals_local(
    model, model_dir, tokens, tmp_path
):
    out = tmp_path / "ray"
    torch.save(tokens, tmp_path / "tokens.pt")
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(DRIVER.format(names=NAMES)))
    address = ray.get_runtime_context().gcs_address  # an existing cluster: ray.init(address=)
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    args = [sys.executable, str(script), address, str(model_dir), str(tmp_path / "tokens.pt")]
    proc = subprocess.Popen([*args, str(out)], env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    recorded: list = []
    while time.time() < deadline and proc.poll() is None:
        manifest = out / "manifest.json"
        if manifest.is_file():
            recorded = json.loads(manifest.read_text())["shards"]
            if len(recorded) >= 2:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # the driver dies mid-run, its lock and actors with it
    proc.wait()
    kept = json.loads((out / "manifest.json").read_text())
    assert not kept["complete"] and 2 <= len(kept["shards"]) < 10
    before = {s["file"]: (out / s["file"]).stat() for s in kept["shards"]}
    kwargs = dict(batch_size=4, shard_size=4, dtype=torch.float32, progress=False)
    remote = pk.cache(model, tokens, NAMES, out=out, backend="ray", **kwargs)
    from probekit import distributed

    assert distributed.LAST_RUN["shards_computed"] == 10 - len(kept["shards"])
    for file, stat in before.items():  # completed shards were not written again
        now = (out / file).stat()
        assert (now.st_ino, now.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    local = pk.cache(model, tokens, NAMES, out=tmp_path / "local", **kwargs)
    _assert_same_store(local, remote)


def test_stale_store_is_refused_through_ray_exactly_as_locally(model, tokens, tmp_path):
    kwargs = dict(batch_size=4, shard_size=8, dtype=torch.float32, progress=False)
    out = tmp_path / "store"
    pk.cache(model, tokens, NAMES, out=out, **kwargs)
    other = pk.load(_gpt2(seed=1), device="cpu")
    for args in ((other, tokens), (model, tokens.flip(0))):
        messages = []
        for backend in ("local", "ray"):
            with pytest.raises(StaleStoreError) as err:
                pk.cache(*args, NAMES, out=out, backend=backend, **kwargs)
            messages.append(str(err.value))
        assert messages[0] == messages[1]
    assert pk.ActivationStore.open(out).meta["complete"]  # nothing was touched


def test_audit_through_ray_equals_the_local_audit(tmp_path):
    import pandas as pd

    from probekit import memorization

    hf = _gpt2(seed=2).eval()  # a plain Hugging Face model, shipped by its weights
    seqs = torch.randint(0, 65, (20, 10), generator=torch.Generator().manual_seed(3))
    kwargs = dict(prefix_len=4, suffix_len=6, batch_size=4, include_text=False)
    local = memorization.audit(hf, seqs, out=tmp_path / "local", **kwargs)
    remote = memorization.audit(hf, seqs, out=tmp_path / "ray", backend="ray", workers=2, **kwargs)
    pd.testing.assert_frame_equal(local.frame, remote.frame)
    assert local.summary == remote.summary
    _assert_same_store(local.store, remote.store)


def test_cli_cache_and_audit_with_ray_equal_the_local_commands(model_dir, tmp_path, capsys):
    import pandas as pd

    from probekit.cli import main
    from probekit.fileio import save_safetensors_atomic

    data = torch.randint(0, 65, (24, 10), generator=torch.Generator().manual_seed(4))
    save_safetensors_atomic({"tokens": data}, tmp_path / "data.safetensors")
    base = ["cache", str(model_dir), "--data", str(tmp_path / "data.safetensors")]
    base += ["--names", *NAMES, "--dtype", "float32", "--batch-size", "4", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "c-local")]) == 0
    assert main([*base, "--out", str(tmp_path / "c-ray"), "--ray", "--workers", "2"]) == 0
    local, remote = (pk.ActivationStore.open(tmp_path / f"c-{b}") for b in ("local", "ray"))
    _assert_same_store(local, remote)

    base = ["audit", str(model_dir), "--data", str(tmp_path / "data.safetensors")]
    base += ["--prefix", "4", "--suffix", "6", "--batch-size", "4", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "a-local")]) == 0
    assert main([*base, "--out", str(tmp_path / "a-ray"), "--ray"]) == 0
    for name in ("table.csv", "summary.json"):
        assert (tmp_path / "a-local" / name).read_text() == (tmp_path / "a-ray" / name).read_text()
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "a-local" / "table.parquet"),
        pd.read_parquet(tmp_path / "a-ray" / "table.parquet"),
    )
    assert main([*base, "--out", str(tmp_path / "a-x"), "--workers", "2"]) == 2
    assert "--workers needs --ray" in capsys.readouterr().err


def test_ray_backend_asks_for_out_and_names_the_extra_when_ray_is_missing(model, tokens):
    with pytest.raises(ValueError, match="out"):
        pk.cache(model, tokens, NAMES, backend="ray")
    with pytest.raises(ValueError, match="backend"):
        pk.cache(model, tokens, NAMES, out="x", backend="spark")
    with pytest.raises(ValueError, match="workers"):
        pk.cache(model, tokens, NAMES, out="x", backend="ray", workers=0)
    saved = sys.modules.get("ray")
    sys.modules["ray"] = None  # as if Ray were not installed
    try:
        with pytest.raises(ImportError, match=r'pip install -e "\.\[ray\]"'):
            pk.cache(model, tokens, NAMES, out="x", backend="ray")
    finally:
        sys.modules["ray"] = saved


def test_import_probekit_and_its_cli_never_import_ray():
    code = (
        "import sys, probekit, probekit.activations, probekit.distributed, probekit.memorization\n"
        "import probekit.commands.cache, probekit.commands.audit\n"
        "assert 'ray' not in sys.modules, 'ray imported'\n"
    )
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_bad_data_fails_on_an_actor_with_the_local_error(model, tokens, tmp_path):
    bad = tokens.clone()
    bad[1, 3] = 70  # outside the vocabulary of 65
    messages = []
    for backend in ("local", "ray"):
        with pytest.raises(ValueError) as err:
            pk.cache(model, bad, NAMES, out=tmp_path / backend, backend=backend, progress=False)
        messages.append(str(err.value))
    assert messages[0] == messages[1] and "outside the vocabulary" in messages[0]


def test_killed_actor_mid_run_still_ends_with_the_local_store(model, tokens, tmp_path):
    from probekit import distributed

    kwargs = dict(batch_size=4, shard_size=4, dtype=torch.float32, progress=False)
    out = tmp_path / "ray"
    killed = []

    def kill_one_actor_after_two_shards():
        deadline = time.time() + 60
        while len(_shard_files(out)) < 2 and time.time() < deadline:
            time.sleep(0.05)
        actors = next(iter(distributed._POOLS.values()))
        ray.kill(actors[0], no_restart=True)  # gone for good: its shards go to the other actor
        killed.append(True)

    # warm the pool with this model first, so the kill lands while shards are being computed
    pk.cache(model, tokens[:4], NAMES, out=tmp_path / "warm", backend="ray", **kwargs)
    killer = threading.Thread(target=kill_one_actor_after_two_shards)
    killer.start()
    remote = pk.cache(model, _slow(tokens, 4, 0.15), NAMES, out=out, backend="ray", **kwargs)
    killer.join()
    assert killed and len(remote.meta["shards"]) == 10
    local = pk.cache(model, tokens, NAMES, out=tmp_path / "local", **kwargs)
    _assert_same_store(local, remote)
