"""Sharded computation of a store on Ray actors: ``pk.cache(..., backend="ray")``.

The store (:mod:`probekit.activations`) is already made of independent shards, each covering a
row range of the items, written atomically and listed in one manifest. This module computes
those shards on Ray actors instead of in the calling process:

- the driver (the calling process) holds the store's writer lock, runs the same staleness
  checks as the local backend, streams the *inputs*, hashes them, and cuts them into the same
  shards the local backend would (the shard size is fixed from the batch size and the first
  batch before anything is dispatched, so the layout never depends on the number of workers);
- each actor holds one loaded copy of the model (shipped by checkpoint path when the model came
  from one and still matches it, else by ``ray.put`` of its state dict plus its config), runs
  the shard's batches exactly as the local backend would, writes the shard file into the store
  directory (temporary file + rename) and returns only the shard's manifest record;
- the driver records each finished shard in the manifest (written atomically after every
  shard) and never holds activations, only the inputs of the shards in flight.

A killed run resumes from the manifest like a local one; a killed actor is restarted by Ray
(or its shards go to the other actors). With ``ray.init(address=...)`` already called, the
existing cluster is used (the store directory must then be on a filesystem every node
shares), as is the one ``RAY_ADDRESS`` names; otherwise a local cluster is started (``ray.init(num_cpus=..., include_dashboard=False)``)
and left running for later calls. Ray itself is imported only here, only when asked for.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

INSTALL_HINT = 'pip install -e ".[ray]"'
DEFAULT_CPU_WORKERS = 2
#: shards queued per actor: one computing, one waiting (bounds the inputs the driver holds)
IN_FLIGHT_PER_ACTOR = 2
#: timings of the last finished Ray run in this process (workers, per-shard compute and write
#: seconds): what ``benchmarks/ray_bench.py`` reports. The manifest stays the local one's.
LAST_RUN: dict[str, Any] = {}


def import_ray() -> Any:
    """The ``ray`` module, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ImportError(
            f'backend="ray" needs Ray, which is not installed; install it with {INSTALL_HINT}'
        ) from None
    return ray


@dataclass
class RemoteCompute:
    """How an actor rebuilds a store's ``compute``: ``factory`` (``"module:function"``) is
    called as ``factory(**models, **kwargs, device=device)`` with each model of ``models``
    rebuilt on the actor's device (plus ``tokenizer`` keyword arguments where a model has one
    and the factory takes it)."""

    factory: str
    models: dict[str, nn.Module]
    kwargs: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- models


@dataclass
class ModelSpec:
    """A model as shipped to an actor: a checkpoint path, or a state dict in Ray's object
    store plus what rebuilds the module (``kind``: ``rnn``, ``hf``, ``bridge``)."""

    kind: str
    fingerprint: str
    dtype: torch.dtype
    path: str | None = None
    config: Any = None
    cls: str | None = None
    state: Any = None  # ray.ObjectRef of {name: CPU tensor}
    tokenizer: Any = None
    attention: str | None = None  # the driver's attention implementation (eager, sdpa, ...)

    def build(self, device: torch.device) -> nn.Module:
        from probekit.models.fingerprint import fingerprint

        model = self._build(device)
        if self.tokenizer is not None and getattr(model, "tokenizer", None) is None:
            model.tokenizer = self.tokenizer
        found = fingerprint(model)
        if found != self.fingerprint:
            raise _Mismatch(
                f"the model rebuilt on a worker ({found[:12]}…) is not the driver's model "
                f"({self.fingerprint[:12]}…)"
            )
        return model

    def _build(self, device: torch.device) -> nn.Module:
        from probekit.models.loading import load, load_hf_plain

        if self.path is not None:
            if self.kind == "hf":
                model, tokenizer = load_hf_plain(self.path, device=device, dtype=self.dtype)
                model.tokenizer = self.tokenizer or tokenizer
                return model.eval()
            return load(self.path, device=device, dtype=self.dtype)
        import ray

        state = ray.get(self.state)
        module, name = self.cls.rsplit(".", 1)
        if self.kind == "rnn":  # HookedRNN or a subclass (e.g. HookedSSLGrid): its own class
            model = getattr(importlib.import_module(module), name)(self.config)
            model.load_state_dict(state)
            return model.to(device=device, dtype=self.dtype).eval()
        hf_class = getattr(importlib.import_module(module), name)
        config_class = hf_class.config_class
        config = config_class.from_dict(self.config)
        if self.attention:  # not part of to_dict(); eager vs sdpa differ in the last bits
            config._attn_implementation = self.attention
        hf = hf_class(config)
        hf.load_state_dict(state, strict=True)
        hf = hf.to(device=device, dtype=self.dtype).eval()
        if self.kind == "hf":
            return hf
        return load(hf, device=device, dtype=self.dtype)


class _Mismatch(RuntimeError):
    """A model rebuilt on an actor is not the driver's model."""


def _checkpoint_path(model: nn.Module) -> str | None:
    """The Hugging Face directory ``model`` was loaded from, when it names one."""
    from probekit.models.runner import hf_model_of

    hf = hf_model_of(model) or model
    path = getattr(getattr(hf, "config", None), "_name_or_path", "") or ""
    return path if path and (Path(path) / "config.json").is_file() else None


def ship_model(model: nn.Module, by_path: bool = True) -> ModelSpec:
    """``model`` as a :class:`ModelSpec` (puts its state dict in Ray's object store unless it
    goes by path)."""
    from probekit.models.fingerprint import fingerprint
    from probekit.models.rnn import HookedRNN
    from probekit.models.runner import is_bridge, runner

    ray = import_ray()
    first = next(model.parameters(), None)
    dtype = first.dtype if first is not None else torch.float32
    tokenizer = getattr(model, "tokenizer", None)
    spec = ModelSpec(kind="", fingerprint=fingerprint(model), dtype=dtype, tokenizer=tokenizer)
    if isinstance(model, HookedRNN):
        spec.kind, spec.config = "rnn", model.config_dict()
        spec.cls = f"{type(model).__module__}.{type(model).__qualname__}"
        spec.state = ray.put({k: v.detach().cpu() for k, v in model.state_dict().items()})
        return spec
    spec.kind = "bridge" if is_bridge(model) else "hf"
    path = _checkpoint_path(model) if by_path else None
    if path is not None:
        spec.path = path
        return spec
    plain = runner(model).plain_module() if is_bridge(model) else model
    spec.cls = f"{type(plain).__module__}.{type(plain).__qualname__}"
    spec.config = plain.config.to_dict()
    spec.attention = getattr(plain.config, "_attn_implementation", None)
    spec.state = ray.put({k: v.detach().cpu() for k, v in plain.state_dict().items()})
    return spec


def _resolve(factory: str) -> Callable[..., Any]:
    module, name = factory.split(":")
    return getattr(importlib.import_module(module), name)


# ----------------------------------------------------------------------------- the actor


class ShardWorker:
    """One Ray actor: holds one set of models (rebuilt when a run brings others) and computes
    and writes whole shards. A pool of these outlives a run, so a second run in the same
    process pays only the model load, not the imports."""

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.key: str | None = None
        self.problem: str | None = None
        self.compute: Callable[..., Any] | None = None
        self.model_fingerprint = ""

    def setup(self, key: str, boxed: list) -> dict[str, Any]:
        """Build the run's models and ``compute`` (``boxed[0]``: the object ref of ``(specs,
        factory, kwargs, model_fingerprint)``) unless this actor holds them already."""
        import ray

        if self.key == key:
            return {"problem": self.problem, "pid": os.getpid()}
        specs, factory, kwargs, self.model_fingerprint = ray.get(boxed[0])
        self.key, self.problem, self.compute = key, None, None
        device = torch.device("cuda" if ray.get_gpu_ids() else "cpu")
        try:
            models = {name: spec.build(device) for name, spec in specs.items()}
        except _Mismatch as err:
            self.problem = str(err)
        except Exception as err:  # noqa: BLE001 - a path this node cannot read: go by weights
            if not any(spec.path for spec in specs.values()):
                raise
            self.problem = f"{type(err).__name__}: {err}"
        else:
            self.compute = _resolve(factory)(**models, **kwargs, device=device)
        return {"problem": self.problem, "pid": os.getpid()}

    def probe(self, key: str, boxed: list, inputs: torch.Tensor, mask: Any, rows: dict) -> dict:
        """Per-item shapes, dtypes and bytes of what one batch stores (no tensor returned)."""
        from probekit.activations import batch_tensors

        self.setup(key, boxed)
        kept = batch_tensors(self.compute, inputs, mask, rows)
        return {
            k: (
                list(v.shape[1:]),
                str(v.dtype).removeprefix("torch."),
                v[0].numel() * v.element_size(),
            )
            for k, v in kept.items()
        }

    def shard(
        self, key: str, boxed: list, out: str, start: int, stop: int, batches: list, data_sha: str
    ) -> dict[str, Any]:
        """Compute items ``start..stop`` batch by batch (the local backend's batches) and write
        them as one shard into ``out``; returns its manifest record and the seconds spent."""
        from probekit.activations import batch_tensors, write_shard

        self.setup(key, boxed)  # a restarted actor rebuilds its models here
        began = time.perf_counter()
        parts = [batch_tensors(self.compute, inputs, mask, rows) for inputs, mask, rows in batches]
        tensors = {
            k: torch.cat([p[k] for p in parts]) if len(parts) > 1 else parts[0][k] for k in parts[0]
        }
        computed = time.perf_counter()
        entry = write_shard(Path(out), start, stop, tensors, data_sha, self.model_fingerprint)
        done = time.perf_counter()
        return {"entry": entry, "compute_s": computed - began, "write_s": done - computed}

    def pid(self) -> int:
        return os.getpid()


# ----------------------------------------------------------------------------- the driver

#: live actor pools of this process: (job, kind, count) -> actor handles
_POOLS: dict[tuple, list] = {}


def shutdown_workers() -> None:
    """End this process's Ray actors (and free the models they hold)."""
    import sys

    ray = sys.modules.get("ray")
    for actors in _POOLS.values():
        for actor in actors:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone, or Ray shut down
                pass
    _POOLS.clear()


def _ensure_ray(workers: int | None) -> Any:
    ray = import_ray()
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):  # a cluster named by the environment: join it
            ray.init(log_to_driver=False)
        else:
            cpus = max(os.cpu_count() or 1, workers or DEFAULT_CPU_WORKERS)
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    return ray


def _pool(ray: Any, workers: int | None) -> tuple[tuple, list]:
    """This process's actors for ``workers``: one per GPU when the cluster has GPUs, else
    ``workers`` CPU actors (default 2), started once and reused by later runs."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    count = workers or (gpus if gpus else DEFAULT_CPU_WORKERS)
    key = (ray.get_runtime_context().get_job_id(), "gpu" if gpus else "cpu", count)
    if key not in _POOLS:
        if gpus:
            options = {"num_gpus": 1, "num_cpus": 1}
        else:
            # One core per actor when the cluster has them free; a share of what is left else
            # (another driver's actors may hold the rest), so actors never wait forever.
            free = float(ray.available_resources().get("CPU", 0))
            options = {"num_cpus": round(min(1.0, free / count), 3)}
        actor_class = ray.remote(ShardWorker)
        _POOLS[key] = [
            actor_class.options(max_restarts=1, max_task_retries=1, **options).remote()
            for _ in range(count)
        ]
    return key, _POOLS[key]


def _setup_actors(ray: Any, remote: RemoteCompute, fp: str, workers: int | None):
    """The pool, its models loaded for this run: ``(actors, run key, boxed setup ref)``."""
    by_path = True
    for _attempt in range(3):
        specs = {name: ship_model(m, by_path=by_path) for name, m in remote.models.items()}
        boxed = [ray.put((specs, remote.factory, remote.kwargs, fp))]
        run_key = uuid.uuid4().hex
        pool_key, actors = _pool(ray, workers)
        try:
            states = _get(ray, [a.setup.remote(run_key, boxed) for a in actors])
        except ray.exceptions.RayActorError:
            _POOLS.pop(pool_key, None)  # an actor of the pool died between runs: a fresh pool
            for actor in actors:
                ray.kill(actor)
            continue
        problems = [s["problem"] for s in states if s["problem"]]
        if not problems:
            return actors, run_key, boxed
        if not by_path:
            raise RuntimeError(problems[0])
        # The checkpoint on disk is not this (edited) model, or this node cannot read it:
        # ship the weights instead.
        by_path = False
    raise RuntimeError("could not start Ray workers (they died while loading the model)")


def _get(ray: Any, refs: Any) -> Any:
    """``ray.get``, re-raising an actor's own exception as itself (a ValueError about the data
    reads as it does locally, not wrapped in a remote traceback)."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, BaseException):
            raise cause from None
        raise


@dataclass
class _Job:
    start: int
    stop: int
    batches: list
    data_sha: str


def run_sharded(
    source: Any,
    remote: RemoteCompute,
    extras: Mapping[str, torch.Tensor],
    manifest: dict[str, Any],
    out: Path,
    progress: bool,
    desc: str,
    workers: int | None,
) -> None:
    """The Ray counterpart of ``probekit.activations._run``: the same shards, fingerprints and
    manifest, computed and written by actors. ``manifest`` is new or the resumed one."""
    from tqdm.auto import tqdm

    from probekit.activations import (
        MANIFEST,
        _bytes,
        _DataFingerprint,
        record_shard,
        seal_manifest,
        shard_is_done,
        shard_size_for,
    )
    from probekit.fileio import write_json_atomic

    ray = _ensure_ray(workers)
    started = time.perf_counter()
    actors, run_key, boxed = _setup_actors(ray, remote, manifest["model_fingerprint"], workers)
    load = {i: 0 for i in range(len(actors))}
    in_flight: dict[Any, tuple[int, _Job]] = {}
    timings: list[dict[str, float]] = []
    bar = tqdm(total=source.n_items, unit="item", desc=desc, disable=not progress, leave=False)

    def submit(job: _Job) -> None:
        live = [i for i in load if load[i] < IN_FLIGHT_PER_ACTOR]
        while not live:
            collect()
            live = [i for i in load if load[i] < IN_FLIGHT_PER_ACTOR]
        i = min(live, key=lambda j: (load[j], j))
        ref = actors[i].shard.remote(
            run_key, boxed, str(out), job.start, job.stop, job.batches, job.data_sha
        )
        in_flight[ref] = (i, job)
        load[i] += 1

    def collect() -> None:
        (ref,), _ = ray.wait(list(in_flight), num_returns=1)
        i, job = in_flight.pop(ref)
        try:
            result = _get(ray, ref)
        except ray.exceptions.RayActorError:
            load.pop(i, None)  # this actor is gone for good (Ray already retried once)
            for other in [r for r, (j, _) in in_flight.items() if j == i]:
                submit_again = in_flight.pop(other)[1]
                _requeue(submit_again)
            _requeue(job)
            return
        load[i] -= 1
        record_shard(manifest, result["entry"])
        write_json_atomic(out / MANIFEST, manifest)
        timings.append({k: result[k] for k in ("compute_s", "write_s")})
        bar.update(job.stop - job.start)

    def _requeue(job: _Job) -> None:
        if not load:
            raise RuntimeError(
                f"every Ray worker died; {len(manifest['shards'])} complete shard(s) are kept in "
                f"{out}, rerun the same command to resume"
            )
        submit(job)

    done = {s["start"]: s for s in manifest["shards"]}
    shard_size = manifest.get("shard_size")
    batches = iter(source.batches())
    data_hash = None
    shard_hash = hashlib.sha256()
    shard_start = cursor = 0
    pending: list = []
    item_shape: tuple[int, ...] = ()
    try:
        for batch in batches:
            n = len(batch.inputs)
            rows = {name: values[cursor : cursor + n] for name, values in extras.items()}
            if data_hash is None:
                data_hash = _DataFingerprint(batch.inputs, batch.mask)
                item_shape = tuple(batch.inputs.shape[1:])
            elif tuple(batch.inputs.shape[1:]) != item_shape:
                raise ValueError(
                    f"data: every batch must have items of shape {item_shape}, batch at item "
                    f"{cursor} has {tuple(batch.inputs.shape[1:])}"
                )
            if shard_size is None or "shapes" not in manifest:
                # Fix the layout before dispatch: the local backend's rule on the first batch.
                probe = _get(
                    ray, actors[0].probe.remote(run_key, boxed, batch.inputs, batch.mask, rows)
                )
                if shard_size is None:
                    shard_size = shard_size_for(sum(v[2] for v in probe.values()), n)
                    manifest["shard_size"] = shard_size
                if "shapes" not in manifest:
                    manifest["shapes"] = {k: v[0] for k, v in probe.items()}
                    manifest["extras"] = [
                        k for k in probe if k in extras or k in ("tokens", "attention_mask")
                    ]
                    manifest["dtypes"] = {k: v[1] for k, v in probe.items()}
            data_hash.update(batch.inputs, batch.mask)
            shard_hash.update(_bytes(batch.inputs))
            if batch.mask is not None:
                shard_hash.update(_bytes(batch.mask))
            if shard_start not in done:
                pending.append((batch.inputs, batch.mask, rows))
            else:
                bar.update(n)
            cursor += n
            if cursor - shard_start >= shard_size:
                digest = shard_hash.hexdigest()
                if not shard_is_done(done, shard_start, cursor, digest):
                    submit(_Job(shard_start, cursor, pending, digest))
                pending, shard_start, shard_hash = [], cursor, hashlib.sha256()
        if cursor > shard_start:
            digest = shard_hash.hexdigest()
            if not shard_is_done(done, shard_start, cursor, digest):
                submit(_Job(shard_start, cursor, pending, digest))
        while in_flight:
            collect()
    except BaseException:
        if in_flight:  # stop them at once: no shard may land after the lock is released
            shutdown_workers()
        raise
    finally:
        bar.close()
    seal_manifest(manifest, data_hash, extras, cursor, started)
    LAST_RUN.clear()
    LAST_RUN.update(
        workers=len(actors),
        shards_computed=len(timings),
        compute_s=[t["compute_s"] for t in timings],
        write_s=[t["write_s"] for t in timings],
        seconds=manifest["seconds"],
    )
    manifest["complete"] = True
    write_json_atomic(out / MANIFEST, manifest)
