"""The activation store: run a model over data once, keep the activations that matter.

``pk.cache`` runs a hooked model (TransformerBridge or HookedRNN) batch by batch on the GPU when
there is one, and streams the requested hook activations to a directory of safetensors shards
plus a ``manifest.json``. Peak memory grows with the batch (and shard) size, not with the data.

The on-disk format is made to be resumed and merged:

- every shard is written atomically (temporary file + rename) and is self-describing (its
  safetensors metadata holds the item range and both fingerprints), so a reader never sees a
  half-written shard and shards written by several workers can be listed in one manifest;
- the manifest records the model fingerprint (sha256 over config and weights), the data
  fingerprint (sha256 over the exact inputs), hook names, per-item shapes, dtype and which
  shards are complete. A killed run resumes at the first incomplete shard and ends with the same
  store as an uninterrupted run; a store written by another model or other data is refused.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import shutil
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from probekit.fileio import (
    CheckpointError,
    read_json,
    save_safetensors_atomic,
    write_json_atomic,
)
from probekit.report.page import Rendered
from probekit.validation import check_positive_int

FORMAT = "probekit-activations"
VERSION = 1
MANIFEST = "manifest.json"
SHARD_DIR = "shards"
DEFAULT_SHARD_BYTES = 64 * 2**20
_EXTRAS = ("tokens", "attention_mask")

Positions = int | Sequence[int] | slice | None


class StaleStoreError(ValueError):
    """An existing store was written by a different model, different data or other options."""


# ----------------------------------------------------------------------------- the store


class ActivationStore:
    """Cached activations, one tensor per hook name, the first dimension the item.

    Open a store written by :func:`cache` with ``ActivationStore.open(path)``::

        store = pk.ActivationStore.open("acts/")
        store.names                     # hook names cached
        store.meta["model_fingerprint"]
        store["blocks.0.hook_resid_post"]          # [n_items, T, d_model]
        for batch in store.iter("blocks.0.hook_resid_post", batch_size=256):
            ...                                    # bounded memory

    Besides hook names, ``store["tokens"]`` (token-id inputs) and ``store["attention_mask"]``
    (text inputs, 1 = real token) are kept when they apply: see ``store.extras``.
    """

    def __init__(
        self,
        manifest: dict[str, Any],
        path: Path | None = None,
        memory: list[dict[str, torch.Tensor]] | None = None,
    ):
        self._manifest = manifest
        self.path = path
        self._memory = memory

    @classmethod
    def open(cls, path: str | Path) -> ActivationStore:
        """Open a complete store directory; an incomplete or corrupt one raises."""
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{path}: not an activation store (no {MANIFEST})")
        manifest = read_json(manifest_path)
        if manifest.get("format") != FORMAT:
            raise CheckpointError(f"{manifest_path}: not a probekit activation store manifest")
        if not manifest.get("complete"):
            done = len(manifest.get("shards", []))
            raise CheckpointError(
                f"{path}: the store is incomplete ({done} shards written); rerun pk.cache "
                "with the same model, data and out= (resume=True; the CLI's default) to finish it"
            )
        _check_manifest(manifest, manifest_path)
        for shard in manifest["shards"]:
            problem = _shard_problem(path, shard, full=False)
            if problem:
                raise CheckpointError(
                    f"{path}: {problem}; rerun pk.cache with the same model, data and out= to "
                    "recompute it"
                )
        return cls(manifest, path=path)

    def verify(self) -> None:
        """Check every shard against the sha256 recorded when it was written (reads every
        byte; :meth:`open` checks only that each file has its recorded size)."""
        if self.path is None:
            return
        for shard in self._manifest["shards"]:
            problem = _shard_problem(self.path, shard, full=True)
            if problem:
                raise CheckpointError(f"{self.path}: {problem}")

    # -- description
    @property
    def meta(self) -> dict[str, Any]:
        """The manifest: fingerprints, names, shapes, dtype, shards, options."""
        return dict(self._manifest)

    @property
    def names(self) -> list[str]:
        return list(self._manifest["names"])

    @property
    def extras(self) -> list[str]:
        if "extras" in self._manifest:
            return list(self._manifest["extras"])
        return [e for e in _EXTRAS if e in self._manifest["shapes"]]

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-item shape of each stored tensor (without the leading item dimension)."""
        return {k: tuple(v) for k, v in self._manifest["shapes"].items()}

    def __len__(self) -> int:
        return int(self._manifest["n_items"])

    def __contains__(self, name: object) -> bool:
        return name in self._manifest["shapes"]

    def __repr__(self) -> str:
        where = str(self.path) if self.path else "in memory"
        return f"ActivationStore({where}, n_items={len(self)}, names={self.names})"

    # -- reading
    def _check_name(self, name: str) -> None:
        if name not in self._manifest["shapes"]:
            known = list(self._manifest["shapes"])
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"; did you mean {close}?" if close else ""
            raise KeyError(f"{name!r} is not in this store (it holds {known}){hint}")

    def _shard_tensor(self, index: int, name: str) -> torch.Tensor:
        if self._memory is not None:
            return self._memory[index][name]
        from safetensors import safe_open

        file = self.path / self._manifest["shards"][index]["file"]
        try:
            with safe_open(str(file), framework="pt") as handle:
                return handle.get_tensor(name)
        except Exception as err:  # safetensors raises several types for a damaged file
            raise CheckpointError(f"{file}: cannot read {name!r}: {err}") from err

    def __getitem__(self, name: str) -> torch.Tensor:
        """All items of ``name`` as one tensor ``[n_items, ...]``."""
        self._check_name(name)
        parts = [self._shard_tensor(i, name) for i in range(len(self._manifest["shards"]))]
        if not parts:
            shape = self._manifest["shapes"][name]
            return torch.empty((0, *shape), dtype=_dtype_of(self._manifest["dtypes"][name]))
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def iter(self, name: str, batch_size: int = 256) -> Iterator[torch.Tensor]:
        """Yield ``name`` in batches of ``batch_size`` items, one shard in memory at a time."""
        self._check_name(name)
        check_positive_int("batch_size", batch_size)
        pending: list[torch.Tensor] = []
        held = 0
        for index in range(len(self._manifest["shards"])):
            tensor = self._shard_tensor(index, name)
            start = 0
            while start < len(tensor):
                take = min(batch_size - held, len(tensor) - start)
                pending.append(tensor[start : start + take])
                held += take
                start += take
                if held == batch_size:
                    yield torch.cat(pending) if len(pending) > 1 else pending[0]
                    pending, held = [], 0
        if pending:
            yield torch.cat(pending) if len(pending) > 1 else pending[0]


class StoreWriteError(OSError):
    """The disk refused a write (full, read-only, no permission); the store stays resumable."""


class StoreLockedError(ValueError):
    """Another process is writing this store (or audit) right now."""


def _shard_file(root: Path, shard: Mapping[str, Any]) -> Path:
    """The shard's file, which must lie inside ``root/shards`` (a manifest never points out)."""
    name = shard.get("file")
    if not isinstance(name, str) or not name.startswith(f"{SHARD_DIR}/"):
        raise CheckpointError(f"{root}: manifest lists a shard file {name!r} outside {SHARD_DIR}/")
    file = (root / name).resolve()
    base = (root / SHARD_DIR).resolve()
    if file.parent != base:
        raise CheckpointError(f"{root}: manifest lists a shard file {name!r} outside {SHARD_DIR}/")
    return file


def _file_sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _shard_problem(root: Path, shard: Mapping[str, Any], full: bool) -> str | None:
    """Why the shard's file cannot be trusted (missing, other size, other bytes), or None."""
    file = _shard_file(root, shard)
    if not file.is_file():
        return f"shard {shard['file']} listed in the manifest is missing"
    size = shard.get("bytes")
    if size is not None and file.stat().st_size != size:
        return (
            f"shard {shard['file']} has {file.stat().st_size} bytes, the manifest recorded {size} "
            "(truncated or replaced)"
        )
    if full and shard.get("sha256") is not None and _file_sha256(file) != shard["sha256"]:
        return f"shard {shard['file']} does not match its recorded sha256 (changed on disk)"
    return None


def _check_manifest(manifest: Mapping[str, Any], where: Path) -> None:
    """Shapes, dtypes and shard ranges that make sense before any shard is read."""
    shapes, dtypes = manifest.get("shapes"), manifest.get("dtypes")
    n_items = manifest.get("n_items")
    ok = isinstance(shapes, dict) and isinstance(dtypes, dict) and set(shapes) == set(dtypes)
    ok = ok and isinstance(n_items, int) and not isinstance(n_items, bool) and n_items >= 0
    ok = ok and all(
        isinstance(v, list) and all(isinstance(d, int) and d >= 0 for d in v)
        for v in shapes.values()
    )
    ok = ok and all(isinstance(getattr(torch, str(d), None), torch.dtype) for d in dtypes.values())
    if not ok:
        raise CheckpointError(f"{where}: malformed manifest (shapes, dtypes or n_items)")
    cursor = 0
    for shard in manifest.get("shards", []):
        if shard.get("start") != cursor or not isinstance(shard.get("stop"), int):
            raise CheckpointError(f"{where}: shard ranges do not cover items 0..{n_items}")
        cursor = shard["stop"]
    if cursor != n_items:
        raise CheckpointError(f"{where}: shard ranges do not cover items 0..{n_items}")


class _StoreLock:
    """An advisory lock file ``out/.lock`` (writer pid, host, start time) held while a store is
    written: a second writer is refused; a lock left by a dead process on this host is taken
    over. Readers never look at it."""

    def __init__(self, out: Path):
        self.file = out / ".lock"
        self.record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        self.held = False

    def __enter__(self) -> _StoreLock:
        import json

        self.file.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and not self._dead(holder):
                    raise StoreLockedError(
                        f"out: {self.file.parent} is being written by process {holder.get('pid')} "
                        f"on {holder.get('host')}; wait for it to finish, or use another out"
                    ) from None
                self.file.unlink(missing_ok=True)  # a dead writer's lock: take it over
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(self.record, fh)
            self.held = True
            return self
        raise StoreLockedError(f"out: {self.file.parent} is locked by another writer")

    def __exit__(self, *exc: Any) -> None:
        if self.held and self._holder() == self.record:
            self.file.unlink(missing_ok=True)
        self.held = False

    def _holder(self) -> dict[str, Any] | None:
        import json

        try:
            return json.loads(self.file.read_text())
        except (OSError, ValueError):
            return None  # half-written by a writer that died at once: stale

    @staticmethod
    def _dead(holder: Mapping[str, Any]) -> bool:
        if holder.get("host") != socket.gethostname():
            return False  # another machine's writer: never assume it is gone
        try:
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, ValueError, TypeError):
            return False
        return False


def open_store(store: ActivationStore | str | Path) -> ActivationStore:
    """``store`` itself, or the store at a path: what analyses taking a store accept."""
    if isinstance(store, ActivationStore):
        return store
    if isinstance(store, (str, Path)) or hasattr(store, "__fspath__"):
        return ActivationStore.open(store)
    raise TypeError(f"expected an ActivationStore or a path to one, got {type(store).__name__}")


def _dtype_of(name: str) -> torch.dtype:
    return getattr(torch, name.removeprefix("torch."))


# ----------------------------------------------------------------------------- data


@dataclass
class _Batch:
    inputs: torch.Tensor  # token ids [b, T] or RNN inputs [b, T, in]
    mask: torch.Tensor | None  # [b, T], 1 = real token (text inputs only)


class _DataSource:
    """Turns the accepted kinds of ``data`` into batches and fingerprints them.

    The data fingerprint is sha256 over a header (kind, dtype, per-item shape) followed by the
    raw bytes of every input (and mask) in order, so it does not depend on the batching.
    """

    def __init__(self, model: nn.Module, data: Any, batch_size: int):
        self.batch_size = batch_size
        self.n_items: int | None = None
        self._iterable: Iterable[Any] | None = None
        self._tensor: torch.Tensor | None = None
        self._mask: torch.Tensor | None = None
        if isinstance(data, np.ndarray):
            data = torch.from_numpy(data)
        if isinstance(data, torch.Tensor):
            self._tensor = _check_input_tensor(data, "data")
        elif isinstance(data, (list, tuple)) and data and all(isinstance(t, str) for t in data):
            self._tensor, self._mask = _tokenize(model, list(data))
        elif isinstance(data, (str, bytes, Mapping)):
            raise TypeError(
                "data must be a token-id tensor [N, T], an RNN input tensor [N, T, in], a list "
                f"of strings, or an iterable of such batches; got {type(data).__name__}"
            )
        elif isinstance(data, Iterable):
            self._iterable = data
        else:
            raise TypeError(
                "data must be a token-id tensor [N, T], an RNN input tensor [N, T, in], a list "
                f"of strings, or an iterable of such batches; got {type(data).__name__}"
            )
        if self._tensor is not None:
            self.n_items = len(self._tensor)
            if self.n_items == 0:
                raise ValueError("data is empty (0 items)")
        self._model = model

    def upfront_fingerprint(self, extras: Mapping[str, torch.Tensor]) -> str | None:
        """The data fingerprint when it can be computed before the run (tensor data)."""
        if self._tensor is None:
            return None
        h = _DataFingerprint(self._tensor, self._mask)
        h.update(self._tensor, self._mask)
        return _with_extras(h.hexdigest(), extras)

    def batches(self) -> Iterator[_Batch]:
        if self._tensor is not None:
            for start in range(0, len(self._tensor), self.batch_size):
                stop = start + self.batch_size
                mask = None if self._mask is None else self._mask[start:stop]
                yield _Batch(self._tensor[start:stop], mask)
            return
        for i, raw in enumerate(self._iterable):
            yield _coerce_batch(self._model, raw, i)


def _check_input_tensor(data: torch.Tensor, argument: str) -> torch.Tensor:
    if data.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
        if data.dim() != 2:
            raise ValueError(f"{argument}: token ids must be [N, T], got shape {tuple(data.shape)}")
        return data.long()
    if data.is_floating_point():
        if data.dim() != 3:
            raise ValueError(
                f"{argument}: float inputs must be RNN inputs [N, T, in], got shape {tuple(data.shape)}"
            )
        return data
    raise ValueError(
        f"{argument}: unsupported dtype {data.dtype}; expected token ids or float inputs"
    )


def _coerce_batch(model: nn.Module, raw: Any, index: int) -> _Batch:
    where = f"data batch {index}"
    if isinstance(raw, np.ndarray):
        raw = torch.from_numpy(raw)
    if isinstance(raw, torch.Tensor):
        return _Batch(_check_input_tensor(raw, where), None)
    if isinstance(raw, Mapping) and "input_ids" in raw:
        mask = raw.get("attention_mask")
        return _Batch(
            _check_input_tensor(torch.as_tensor(raw["input_ids"]), where),
            None if mask is None else torch.as_tensor(mask).long(),
        )
    if isinstance(raw, (list, tuple)) and raw and all(isinstance(t, str) for t in raw):
        tokens, mask = _tokenize(model, list(raw))
        return _Batch(tokens, mask)
    raise TypeError(
        f"{where}: expected a tensor, a list of strings or a dict with 'input_ids'; "
        f"got {type(raw).__name__}"
    )


def _tokenize(model: nn.Module, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise with the model's own tokenizer and its special-token convention, right-padded.

    With right padding and causal attention, padding never changes a real token's
    activations; the attention mask says which positions are real.
    """
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(
            "data is a list of strings but the model has no tokenizer; pass token ids [N, T]"
        )
    from probekit.models.runner import runner

    context = runner(model).max_length
    if context is not None:
        # A text longer than (context x the longest token) characters cannot fit: refuse it
        # before tokenising it (a 10 MB line would otherwise cost gigabytes).
        limit = context * max(len(t) for t in tokenizer.get_vocab())
        for i, text in enumerate(texts):
            if len(text) > limit:
                raise ValueError(
                    f"data: text {i} has {len(text)} characters, more than fit in the model's "
                    f"context of {context} tokens"
                )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    encoded = tokenizer(texts, padding=True, return_tensors="pt", padding_side="right")
    return encoded["input_ids"].long(), encoded["attention_mask"].long()


class _DataFingerprint:
    """sha256 over a header (dtype, per-item shape, whether a mask exists), the stream of all
    input bytes, and the stream of all mask bytes: independent of how the data is batched."""

    def __init__(self, inputs: torch.Tensor, mask: torch.Tensor | None):
        self._header = (
            f"{FORMAT}-data\0{inputs.dtype}\0{tuple(inputs.shape[1:])}\0{mask is not None}"
        )
        self._inputs = hashlib.sha256()
        self._mask = hashlib.sha256()

    def update(self, inputs: torch.Tensor, mask: torch.Tensor | None) -> None:
        self._inputs.update(_bytes(inputs))
        if mask is not None:
            self._mask.update(_bytes(mask))

    def hexdigest(self) -> str:
        parts = (self._header, self._inputs.hexdigest(), self._mask.hexdigest())
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _with_extras(data_fingerprint: str, extras: Mapping[str, torch.Tensor]) -> str:
    """The data fingerprint, extended by the extras' names, dtypes, shapes and bytes."""
    if not extras:
        return data_fingerprint
    h = hashlib.sha256(data_fingerprint.encode())
    for name in sorted(extras):
        t = extras[name]
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(_bytes(t))
    return h.hexdigest()


def _bytes(t: torch.Tensor) -> bytes:
    return t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


# ----------------------------------------------------------------------------- names


def resolve_names(
    model: nn.Module, names: str | Sequence[str] | Callable[[str], bool]
) -> list[str]:
    """Hook names to cache, validated against ``model.hook_dict``."""
    available = list(model.hook_dict)
    if callable(names) and not isinstance(names, str):
        chosen = [n for n in available if names(n)]
        if not chosen:
            raise ValueError("names: the filter matched no hook of this model")
        return chosen
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, Sequence) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"names must be a hook name, a non-empty list of hook names or a filter; got {names!r}"
        )
    for name in names:
        if name not in model.hook_dict:
            close = difflib.get_close_matches(name, available, n=3)
            hint = f" Did you mean {close}?" if close else f" Some hooks: {available[:6]}"
            raise ValueError(f"names: {name!r} is not a hook of this model.{hint}")
    if len(set(names)) != len(names):
        raise ValueError(f"names: duplicate hook names in {list(names)}")
    return list(names)


# ----------------------------------------------------------------------------- positions


def _select_positions(
    acts: torch.Tensor, positions: Positions, mask: torch.Tensor | None
) -> torch.Tensor:
    """``acts`` [b, T, ...] -> the chosen positions.

    An int gives [b, ...]; a negative int counts back from each item's last real token when
    a padding mask exists. A list gives [b, len(list), ...]; a slice slices time.
    """
    if positions is None:
        return acts
    if isinstance(positions, slice):
        kept = acts[:, positions]
        if kept.shape[1] == 0:
            raise ValueError(
                f"positions {positions!r} select no position of sequences of length {acts.shape[1]}"
            )
        return kept
    T = acts.shape[1]
    single = isinstance(positions, int)
    pos = torch.as_tensor([positions] if single else list(positions), device=acts.device)
    if mask is not None:
        lengths = mask.to(acts.device).sum(1, keepdim=True)  # [b, 1]
        index = torch.where(pos < 0, lengths + pos, pos)  # [b, P]
    else:
        index = torch.where(pos < 0, T + pos, pos).expand(acts.shape[0], -1)
    if (index < 0).any() or (index >= T).any():
        raise ValueError(f"positions {positions!r} fall outside sequences of length {T}")
    gathered = acts[torch.arange(acts.shape[0], device=acts.device)[:, None], index]
    return gathered[:, 0] if single else gathered


def _positions_key(positions: Positions) -> Any:
    if positions is None or isinstance(positions, int):
        return positions
    if isinstance(positions, slice):
        return {"slice": [positions.start, positions.stop, positions.step]}
    return [int(p) for p in positions]


def _check_positions(positions: Positions) -> None:
    ok = (
        positions is None
        or isinstance(positions, (int, slice))
        and not isinstance(positions, bool)
        or isinstance(positions, Sequence)
        and positions
        and all(isinstance(p, int) and not isinstance(p, bool) for p in positions)
    )
    if not ok:
        raise ValueError(
            f"positions must be None, an int, a list of ints or a slice; got {positions!r}"
        )


# ----------------------------------------------------------------------------- running


def cache(
    model: nn.Module,
    data: Any,
    names: str | Sequence[str] | Callable[[str], bool],
    out: str | Path | None = None,
    batch_size: int = 32,
    device: str | torch.device = "auto",
    dtype: torch.dtype | None = torch.float16,
    positions: Positions = None,
    resume: bool = True,
    progress: bool = True,
    shard_size: int | None = None,
    extras: Mapping[str, Any] | None = None,
    backend: str = "local",
    workers: int | None = None,
) -> ActivationStore:
    """Run ``model`` over ``data`` and keep the activations at ``names``.

    Args:
        model: a hooked model from :func:`probekit.load` (TransformerBridge or HookedRNN).
        data: token ids ``[N, T]``; a list of strings (tokenised by the model's tokenizer,
            right-padded; the mask is stored as ``attention_mask``); RNN inputs
            ``[N, T, in]``; or an iterable of such batches (its own batching is kept).
        names: hook names (``"blocks.0.hook_resid_post"``, ``"hook_hidden"``), a list, or a
            filter ``fn(name) -> bool``.
        out: directory for the shards and ``manifest.json``; None keeps the store in memory.
        batch_size: items per forward pass (ignored for an iterable of batches).
        device: ``"auto"`` = CUDA when present, else CPU. The model is moved there.
        dtype: storage dtype of the activations (None = as computed). Default float16.
        positions: None for all positions; an int (e.g. ``-1``, the last real token) gives
            ``[N, ...]``; a list of ints ``[N, P, ...]``; a slice.
        resume: continue an interrupted store in ``out``; with False an existing store there
            is replaced.
        progress: show a progress bar.
        shard_size: items per shard (a multiple of batch_size); default aims at 64 MiB.
            Memory holds at most two shards (one filling, one being written).
        extras: per-item tensors kept beside the activations (``{"task_id": [N], "positions":
            [N, T, 2]}``), e.g. the labels an analysis of the store needs; each must have
            ``N`` items (tensor ``data`` only). ``store[name]`` returns them and
            ``store.extras`` lists them.
        backend: ``"local"`` (this process) or ``"ray"``: shards computed by Ray actors, each
            holding one copy of the model (one actor per GPU, else ``workers`` CPU actors,
            default 2), written by the actors into ``out`` (required; on a shared filesystem
            for a multi-machine cluster). Uses the running Ray (``ray.init(address=...)``), or
            starts a local one. The store is the same as the local backend's; see
            :mod:`probekit.distributed`.
        workers: number of Ray actors (``backend="ray"`` only).

    Returns:
        the :class:`ActivationStore`.

    Raises:
        StaleStoreError: ``out`` holds a store of another model, other data or other options
            and ``resume`` is True.
    """
    from probekit.models.fingerprint import fingerprint
    from probekit.validation import resolve_device

    if not isinstance(model, nn.Module) or not hasattr(model, "hook_dict"):
        raise TypeError(
            f"model must be a hooked model from probekit.load, got {type(model).__name__}"
        )
    check_positive_int("batch_size", batch_size)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a torch floating dtype or None, got {dtype!r}")
    _check_positions(positions)
    names = resolve_names(model, names)
    device = resolve_device(device)
    first = next(model.parameters(), None)
    if first is not None and first.device != device:
        model.to(device)
    model.eval()
    _check_backend(backend, workers, out)
    compute = activation_compute(model, names, positions, dtype, device)
    options = {
        "names": names,
        "dtype": None if dtype is None else str(dtype).removeprefix("torch."),
        "positions": _positions_key(positions),
        "batch_size": batch_size,
    }
    return build_store(
        _DataSource(model, data, batch_size),
        compute,
        model_fingerprint=fingerprint(model),
        options=options,
        model_class=type(model).__name__,
        out=out,
        resume=resume,
        progress=progress,
        shard_size=shard_size,
        extras=extras,
        desc="caching",
        backend=backend,
        workers=workers,
        remote=_remote_activations(model, names, positions, dtype) if backend == "ray" else None,
    )


def activation_compute(
    model: nn.Module,
    names: Sequence[str],
    positions: Positions,
    dtype: torch.dtype | None,
    device: torch.device,
) -> Compute:
    """The per-batch computation of :func:`cache`: ``compute(inputs, mask)`` -> the activations
    at ``names`` (positions selected, cast to ``dtype``), for ``model`` on ``device``."""
    from probekit.models.runner import runner

    run = runner(model)

    def compute(inputs: torch.Tensor, mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        check_inputs(run, inputs, "data")
        with torch.inference_mode():
            acts = run.activations(inputs.to(device), names)
            mask = None if mask is None else mask.to(device)
            return {
                name: _select_positions(a, positions, mask).to(dtype or a.dtype)
                for name, a in acts.items()
            }

    return compute


def _remote_activations(
    model: nn.Module, names: list[str], positions: Positions, dtype: torch.dtype | None
) -> Any:
    """What a Ray actor needs to rebuild :func:`activation_compute` (the model shipped by path
    or by state dict)."""
    from probekit.distributed import RemoteCompute

    return RemoteCompute(
        factory="probekit.activations:activation_compute",
        models={"model": model},
        kwargs={"names": names, "positions": positions, "dtype": dtype},
    )


def _check_backend(backend: str, workers: int | None, out: Any) -> None:
    """``backend``/``workers`` values that make sense (before any work)."""
    from probekit.validation import check_choice

    check_choice("backend", backend, ("local", "ray"))
    if workers is not None:
        check_positive_int("workers", workers)
        if backend != "ray":
            raise ValueError('workers: only used with backend="ray"')
    if backend == "ray" and out is None:
        raise ValueError(
            'out: backend="ray" writes its shards to a directory (a shared filesystem on a '
            "multi-machine cluster); give out="
        )
    if backend == "ray":
        from probekit.distributed import import_ray

        import_ray()  # a clear error naming the extra when Ray is not installed


def check_inputs(run: Any, inputs: torch.Tensor, argument: str) -> None:
    """Inputs the model can take, checked before the forward pass (a clear error instead of an
    IndexError deep in torch): token ids for token models, each in ``[0, vocab)``, no longer
    than the context; float ``[N, T, in]`` for an RNN without an embedding."""
    takes_tokens = run.family == "transformer" or run.vocab_size is not None
    if takes_tokens and inputs.is_floating_point():
        raise ValueError(
            f"{argument}: this model takes token ids [N, T], got float inputs of shape "
            f"{tuple(inputs.shape)}"
        )
    if not takes_tokens:
        if not inputs.is_floating_point() or inputs.dim() != 3:
            raise ValueError(
                f"{argument}: this RNN takes float inputs [N, T, {run.model.cfg.input_size}], got "
                f"{inputs.dtype} of shape {tuple(inputs.shape)}"
            )
        if inputs.shape[-1] != run.model.cfg.input_size:
            raise ValueError(
                f"{argument}: this RNN takes {run.model.cfg.input_size} input features per step, "
                f"got {inputs.shape[-1]}"
            )
        return
    if inputs.numel():
        low, high = int(inputs.min()), int(inputs.max())
        if low < 0 or high >= run.vocab_size:
            bad = low if low < 0 else high
            raise ValueError(
                f"{argument}: token id {bad} is outside the vocabulary [0, {run.vocab_size})"
            )
    if run.max_length is not None and inputs.shape[1] > run.max_length:
        raise ValueError(
            f"{argument}: sequences of {inputs.shape[1]} tokens are longer than the model's "
            f"context of {run.max_length}"
        )


#: ``compute(inputs [b, ...] on CPU, mask [b, T] or None) -> {name: tensor [b, ...]}``
Compute = Callable[[torch.Tensor, "torch.Tensor | None"], Mapping[str, torch.Tensor]]


def build_store(
    source: _DataSource | Any,
    compute: Compute,
    model_fingerprint: str,
    options: dict[str, Any],
    model_class: str = "",
    out: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    shard_size: int | None = None,
    extras: Mapping[str, Any] | None = None,
    desc: str = "caching",
    batch_size: int | None = None,
    backend: str = "local",
    workers: int | None = None,
    remote: Any = None,
) -> ActivationStore:
    """The store writer every per-item computation shares (activations, audit scores).

    ``source`` is a :class:`_DataSource` (or raw ``data``, batched by ``batch_size``);
    ``compute`` turns one batch of inputs into per-item tensors; ``options`` (JSON-able) are
    recorded in the manifest and must match on resume, as must both fingerprints. Shards are
    written atomically; an interrupted run resumes at the first incomplete shard.

    ``backend="ray"`` computes the shards on Ray actors instead (:mod:`probekit.distributed`);
    ``remote`` (a :class:`probekit.distributed.RemoteCompute`) says how an actor rebuilds
    ``compute``; ``workers`` is the number of actors. The lock, the staleness checks and the
    resulting store are the same as locally.
    """
    _check_backend(backend, workers, out)
    if backend == "ray" and remote is None:
        raise ValueError('remote: backend="ray" needs a RemoteCompute to rebuild compute on actors')
    if not isinstance(source, _DataSource):
        source = _DataSource(None, source, batch_size or options.get("batch_size", 32))
    batch_size = source.batch_size
    if shard_size is not None:
        check_positive_int("shard_size", shard_size)
    if shard_size is not None and source.n_items is not None and shard_size % batch_size:
        # whole batches per shard keep shard boundaries identical across resumed runs
        raise ValueError(
            f"shard_size ({shard_size}) must be a multiple of batch_size ({batch_size})"
        )
    extra_tensors = _check_extras(extras, source.n_items)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "model_fingerprint": model_fingerprint,
        "data_fingerprint": source.upfront_fingerprint(extra_tensors),
        **options,
        "model_class": model_class,
        "shard_size": shard_size,
        "shards": [],
        "complete": False,
    }
    out_path = Path(out) if out is not None else None
    if out_path is None:
        writer = _ShardWriter(None, manifest)
        _run(source, compute, extra_tensors, manifest, writer, progress, desc)
        return ActivationStore(manifest, memory=writer.memory)
    if out_path.exists() and not out_path.is_dir():
        raise ValueError(f"out: {out_path} exists and is not a directory")
    with _StoreLock(out_path):
        existing = _prepare_out(out_path, manifest, list(options), resume)
        if existing is not None:
            if existing.get("complete"):
                # Data known only as it streams (an iterable) is checked shard by shard.
                if manifest["data_fingerprint"] is None:
                    _check_streamed_data(source, extra_tensors, existing, out_path)
                return ActivationStore.open(out_path)
            manifest = existing
        writer = _ShardWriter(out_path, manifest)
        try:
            try:
                if backend == "ray":
                    from probekit.distributed import run_sharded

                    run_sharded(
                        source, remote, extra_tensors, manifest, out_path, progress, desc, workers
                    )
                else:
                    _run(source, compute, extra_tensors, manifest, writer, progress, desc)
            finally:
                writer.close()
        except OSError as err:
            done = len(manifest["shards"])
            raise StoreWriteError(
                f"out: could not write to {out_path}: {err.strerror or err}; {done} complete "
                "shard(s) are kept, rerun the same command to resume"
            ) from None
    return ActivationStore.open(out_path)


def _check_extras(extras: Mapping[str, Any] | None, n_items: int | None) -> dict[str, torch.Tensor]:
    if not extras:
        return {}
    if not isinstance(extras, Mapping):
        raise ValueError(f"extras must be a dict of name -> per-item tensor, got {type(extras)}")
    if n_items is None:
        raise ValueError("extras need tensor (or text) data with a known number of items")
    checked = {}
    for name, value in extras.items():
        if not isinstance(name, str) or not name or name in ("tokens", "attention_mask"):
            raise ValueError(f"extras: {name!r} is not a usable name")
        tensor = torch.as_tensor(
            np.asarray(value) if not isinstance(value, torch.Tensor) else value
        )
        if tensor.dim() == 0 or len(tensor) != n_items:
            raise ValueError(
                f"extras[{name!r}] must have one entry per item ({n_items}), got shape "
                f"{tuple(tensor.shape)}"
            )
        checked[name] = tensor.detach().cpu()
    return checked


def _prepare_out(
    out: Path, manifest: dict[str, Any], option_keys: list[str], resume: bool
) -> dict[str, Any] | None:
    """Check an existing store in ``out`` (its writer's lock held); returns its manifest when
    resuming it."""
    manifest_path = out / MANIFEST
    for stale_tmp in out.glob(f"{SHARD_DIR}/.*.tmp") if out.is_dir() else ():
        stale_tmp.unlink()  # temp files of a killed writer; never renamed, never valid
    if not manifest_path.is_file():
        return None
    existing = read_json(manifest_path)
    if existing.get("format") != FORMAT:
        raise ValueError(f"out: {manifest_path} is not a probekit activation store manifest")
    if not resume:
        shutil.rmtree(out / SHARD_DIR, ignore_errors=True)
        manifest_path.unlink()
        return None
    problems = []
    if existing.get("model_fingerprint") != manifest["model_fingerprint"]:
        problems.append(
            f"it was written by model {str(existing.get('model_fingerprint'))[:12]}…, "
            f"this model is {manifest['model_fingerprint'][:12]}…"
        )
    if manifest["data_fingerprint"] is not None and existing.get("data_fingerprint") not in (
        None,
        manifest["data_fingerprint"],
    ):
        problems.append(
            f"it was written for data {str(existing.get('data_fingerprint'))[:12]}…, "
            f"this data is {manifest['data_fingerprint'][:12]}…"
        )
    for key in option_keys:
        if existing.get(key) != manifest[key]:
            problems.append(f"{key} was {existing.get(key)!r}, now {manifest[key]!r}")
    if manifest["shard_size"] is not None and existing.get("shard_size") != manifest["shard_size"]:
        problems.append(
            f"shard_size was {existing.get('shard_size')!r}, now {manifest['shard_size']!r}"
        )
    if problems:
        raise StaleStoreError(
            f"out: {out} already holds an activation store that does not match: "
            + "; ".join(problems)
            + ". Use another out directory, or resume=False (CLI: --no-resume) to replace it."
        )
    kept = []
    for shard in existing["shards"]:
        problem = _shard_problem(out, shard, full=True)
        if problem is None:
            kept.append(shard)
        else:
            warnings.warn(f"{out}: {problem}; it is computed again", stacklevel=3)
    if len(kept) != len(existing["shards"]):
        existing["complete"] = False
    existing["shards"] = kept
    return existing


def _check_streamed_data(
    source: _DataSource,
    extras: Mapping[str, torch.Tensor],
    manifest: Mapping[str, Any],
    out: Path,
) -> None:
    """Stream ``source`` (no model run) and compare every shard's data hash with the one
    recorded: a complete store is reused only for the very data that wrote it."""
    bounds = {s["start"]: s for s in manifest["shards"]}
    digest, start, cursor = hashlib.sha256(), 0, 0
    for batch in source.batches():
        digest.update(_bytes(batch.inputs))
        if batch.mask is not None:
            digest.update(_bytes(batch.mask))
        cursor += len(batch.inputs)
        shard = bounds.get(start)
        if shard is not None and cursor >= shard["stop"]:
            if cursor != shard["stop"] or digest.hexdigest() != shard["data_sha256"]:
                raise StaleStoreError(
                    f"out: {out} holds a store written for other data (items {start}.."
                    f"{shard['stop']} differ); use another out, or resume=False (CLI: "
                    "--no-resume) to replace it"
                )
            digest, start = hashlib.sha256(), cursor
    if cursor != manifest.get("n_items"):
        raise StaleStoreError(
            f"out: {out} holds a store of {manifest.get('n_items')} items, the data has {cursor}; "
            "use another out, or resume=False (CLI: --no-resume) to replace it"
        )


def write_shard(
    out: Path,
    start: int,
    stop: int,
    tensors: Mapping[str, torch.Tensor],
    data_sha: str,
    model_fingerprint: str,
) -> dict[str, Any]:
    """Write items ``start..stop`` as one shard file (temporary file + rename) and return its
    manifest record ``{file, start, stop, data_sha256, bytes, sha256}``. Run by the local
    writer thread and by Ray actors alike."""
    file = f"{SHARD_DIR}/shard-{start:010d}-{stop:010d}.safetensors"
    metadata = {
        "format": FORMAT,
        "start": str(start),
        "stop": str(stop),
        "model_fingerprint": model_fingerprint,
        "shard_data_sha256": data_sha,
    }
    written = Path(out) / file
    save_safetensors_atomic(tensors, written, metadata=metadata)
    return {
        "file": file,
        "start": start,
        "stop": stop,
        "data_sha256": data_sha,
        "bytes": written.stat().st_size,
        "sha256": _file_sha256(written),
    }


def record_shard(manifest: dict[str, Any], entry: Mapping[str, Any]) -> None:
    """Put a shard's record in ``manifest["shards"]`` (replacing one at the same start)."""
    shards = [s for s in manifest["shards"] if s["start"] != entry["start"]]
    shards.append(dict(entry))
    manifest["shards"] = sorted(shards, key=lambda s: s["start"])


def batch_tensors(
    compute: Compute,
    inputs: torch.Tensor,
    mask: torch.Tensor | None,
    extra_rows: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Everything stored for one batch, on the CPU: ``compute``'s tensors, then the extras'
    rows of these items, the attention mask (text) and the token ids (token inputs)."""
    kept = dict(compute(inputs, mask))
    kept.update(extra_rows)
    if mask is not None:
        kept["attention_mask"] = mask
    if not inputs.is_floating_point():
        kept["tokens"] = inputs
    return {k: v.to("cpu") for k, v in kept.items()}


def shard_size_for(per_item_bytes: int, batch_items: int) -> int:
    """Default items per shard: whole batches of ``batch_items`` filling about
    ``DEFAULT_SHARD_BYTES``."""
    return max(1, DEFAULT_SHARD_BYTES // max(1, per_item_bytes * batch_items)) * batch_items


def shard_is_done(
    done: Mapping[int, Mapping[str, Any]], start: int, stop: int, digest: str
) -> bool:
    """Whether items ``start..stop`` are already stored (their data hash checked)."""
    if start not in done:
        return False
    if done[start]["stop"] != stop or done[start]["data_sha256"] != digest:
        raise StaleStoreError(
            f"data: items {start}..{stop} differ from those already cached in this store"
        )
    return True


class _ShardWriter:
    """Writes shards (and the manifest after each) on a background thread, in order."""

    def __init__(self, out: Path | None, manifest: dict[str, Any]):
        self.out = out
        self.manifest = manifest
        self.memory: list[dict[str, torch.Tensor]] = []
        self._pool = ThreadPoolExecutor(max_workers=1) if out is not None else None
        self._pending: list[Future] = []

    def submit(
        self, start: int, stop: int, tensors: dict[str, torch.Tensor], data_sha: str
    ) -> None:
        if self.out is None:
            self.memory.append(tensors)
            self._record(start, stop, None, data_sha)
            return
        # One shard is written while the next fills: memory holds at most two shards.
        while self._pending:
            self._pending.pop(0).result()
        self._pending.append(self._pool.submit(self._write, start, stop, tensors, data_sha))

    def _write(
        self, start: int, stop: int, tensors: dict[str, torch.Tensor], data_sha: str
    ) -> None:
        entry = write_shard(
            self.out, start, stop, tensors, data_sha, self.manifest["model_fingerprint"]
        )
        record_shard(self.manifest, entry)
        write_json_atomic(self.out / MANIFEST, self.manifest)

    def _record(self, start: int, stop: int, file: None, data_sha: str) -> None:
        record_shard(
            self.manifest, {"file": file, "start": start, "stop": stop, "data_sha256": data_sha}
        )

    def flush(self) -> None:
        while self._pending:
            self._pending.pop(0).result()

    def finish(self) -> None:
        self.flush()
        if self.out is not None:
            write_json_atomic(self.out / MANIFEST, self.manifest)

    def close(self) -> None:
        if self._pool is not None:
            try:
                self.flush()
            finally:
                self._pool.shutdown(wait=True)


def _run(
    source: _DataSource,
    compute: Compute,
    extras: Mapping[str, torch.Tensor],
    manifest: dict[str, Any],
    writer: _ShardWriter,
    progress: bool,
    desc: str,
) -> None:
    from probekit.progress import bar as progress_bar

    done = {s["start"]: s for s in manifest["shards"]}
    shard_size = manifest.get("shard_size")
    data_hash = None
    shard_hash = hashlib.sha256()
    buffer: dict[str, torch.Tensor] | None = None
    shard_start = cursor = 0
    skipping = False
    bar = progress_bar(total=source.n_items, unit="item", desc=desc, enabled=progress)
    started = time.perf_counter()
    for batch in source.batches():
        n = len(batch.inputs)
        if data_hash is None:
            data_hash = _DataFingerprint(batch.inputs, batch.mask)
            item_shape = tuple(batch.inputs.shape[1:])
        elif tuple(batch.inputs.shape[1:]) != item_shape:
            raise ValueError(
                f"data: every batch must have items of shape {item_shape}, batch at item "
                f"{cursor} has {tuple(batch.inputs.shape[1:])}"
            )
        data_hash.update(batch.inputs, batch.mask)
        shard_hash.update(_bytes(batch.inputs))
        if batch.mask is not None:
            shard_hash.update(_bytes(batch.mask))
        if cursor == shard_start:
            skipping = shard_start in done and shard_size is not None
        if skipping:
            bar.update(n)
        else:
            rows = {name: values[cursor : cursor + n] for name, values in extras.items()}
            kept = batch_tensors(compute, batch.inputs, batch.mask, rows)
            if shard_size is None:
                per_item = sum(v[0].numel() * v.element_size() for v in kept.values())
                shard_size = shard_size_for(per_item, n)
                manifest["shard_size"] = shard_size
            if "shapes" not in manifest:
                manifest["shapes"] = {k: list(v.shape[1:]) for k, v in kept.items()}
                manifest["extras"] = [
                    k for k in kept if k in extras or k in ("tokens", "attention_mask")
                ]
                manifest["dtypes"] = {
                    k: str(v.dtype).removeprefix("torch.") for k, v in kept.items()
                }
            if buffer is None:  # one preallocated buffer per shard: no concatenation copies
                buffer = {
                    k: torch.empty((shard_size, *v.shape[1:]), dtype=v.dtype)
                    for k, v in kept.items()
                }
            offset = cursor - shard_start
            if offset + n > len(buffer[next(iter(buffer))]):  # uneven batches from an iterable
                buffer = {
                    k: torch.cat([b[:offset], torch.empty((n, *b.shape[1:]), dtype=b.dtype)])
                    for k, b in buffer.items()
                }
            for k, v in kept.items():
                buffer[k][offset : offset + n] = v
            bar.update(n)
        cursor += n
        if cursor - shard_start >= shard_size:
            _close_shard(writer, done, shard_start, cursor, buffer, shard_hash)
            buffer, shard_start, shard_hash = None, cursor, hashlib.sha256()
    if cursor > shard_start:
        _close_shard(writer, done, shard_start, cursor, buffer, shard_hash)
    bar.close()
    seal_manifest(manifest, data_hash, extras, cursor, started)
    writer.flush()
    manifest["complete"] = True
    writer.finish()


def seal_manifest(
    manifest: dict[str, Any],
    data_hash: _DataFingerprint | None,
    extras: Mapping[str, torch.Tensor],
    n_items: int,
    started: float,
) -> None:
    """Record what a finished pass over the data saw (its fingerprint, the item count, the
    time), refusing data that differs from what the store was started with. Shared by the
    local writer and the Ray driver."""
    if data_hash is None:
        raise ValueError("data is empty (no batches)")
    fingerprint = _with_extras(data_hash.hexdigest(), extras)
    if manifest["data_fingerprint"] not in (None, fingerprint):
        raise StaleStoreError(
            "data: the inputs differ from those the store was started with "
            f"({manifest['data_fingerprint'][:12]}… vs {fingerprint[:12]}…)"
        )
    manifest["data_fingerprint"] = fingerprint
    manifest["n_items"] = n_items
    manifest["seconds"] = round(time.perf_counter() - started, 3)


def _close_shard(
    writer: _ShardWriter,
    done: dict[int, dict[str, Any]],
    start: int,
    stop: int,
    buffer: dict[str, torch.Tensor] | None,
    shard_hash: Any,
) -> None:
    digest = shard_hash.hexdigest()
    if shard_is_done(done, start, stop, digest):
        return
    writer.submit(start, stop, {k: v[: stop - start] for k, v in buffer.items()}, digest)


# ----------------------------------------------------------------------------- summary


@dataclass
class StoreSummary(Rendered):
    """What a store holds, as a report section: one row per stored tensor."""

    frame: Any
    summary: dict[str, Any]
    _figures: list[Any]
    title: str = "Activation store"
    description: str = ""

    def figures(self) -> list[Any]:
        return list(self._figures)


def summarize(store: ActivationStore, max_points: int = 2000) -> StoreSummary:
    """Per-tensor statistics (streamed over the store) and, per hook, a PCA of its vectors.

    Vectors are the last dimension of each hook (``d_model`` for the residual stream, units
    for an RNN); statistics cover every stored value, the PCA the first ``max_points`` vectors.
    """
    import pandas as pd
    import plotly.graph_objects as go

    rows, figures = [], []
    for name in store.names:
        count = nonfinite = 0
        total = total_sq = norm_sum = 0.0
        sample: list[torch.Tensor] = []
        held = 0
        for batch in store.iter(name, batch_size=256):
            values = batch.float()
            finite = torch.isfinite(values)
            nonfinite += int((~finite).sum())
            values = torch.where(finite, values, torch.zeros_like(values))
            count += values.numel()
            total += float(values.sum())
            total_sq += float((values.double() ** 2).sum())
            vectors = values.reshape(-1, values.shape[-1]) if values.dim() > 1 else values[:, None]
            norm_sum += float(vectors.norm(dim=-1).sum())
            if held < max_points:
                sample.append(vectors[: max_points - held])
                held += len(sample[-1])
        n_vectors = count // max(1, (store.shapes[name] or (1,))[-1])
        mean = total / max(1, count)
        rows.append(
            {
                "name": name,
                "shape": "[" + ", ".join(map(str, (len(store), *store.shapes[name]))) + "]",
                "dtype": store.meta["dtypes"][name],
                "mean": mean,
                "std": max(0.0, total_sq / max(1, count) - mean**2) ** 0.5,
                "mean_vector_norm": norm_sum / max(1, n_vectors),
                "non_finite": nonfinite,
            }
        )
        points = torch.cat(sample) if sample else torch.zeros(0, 1)
        if points.shape[0] >= 3 and points.shape[1] >= 2:
            centred = points - points.mean(0)
            _, s, v = torch.linalg.svd(centred, full_matrices=False)
            xy = centred @ v[:2].T
            explained = (s[:2] ** 2 / (s**2).sum()).tolist()
            figures.append(
                go.Figure(
                    go.Scattergl(
                        x=xy[:, 0].numpy(), y=xy[:, 1].numpy(), mode="markers", marker={"size": 3}
                    ),
                    layout={
                        "title": f"{name}: PCA of {len(points)} vectors",
                        "xaxis_title": f"PC1 ({explained[0]:.1%} of variance)",
                        "yaxis_title": f"PC2 ({explained[1]:.1%} of variance)",
                        "height": 420,
                    },
                )
            )
    meta = store.meta
    summary = {
        "items": len(store),
        "hooks": len(store.names),
        "model_fingerprint": meta["model_fingerprint"],
        "data_fingerprint": meta["data_fingerprint"],
        "model_class": meta.get("model_class"),
        "shards": len(meta["shards"]),
        "positions": meta.get("positions"),
    }
    where = str(store.path) if store.path else "memory"
    return StoreSummary(
        frame=pd.DataFrame(rows),
        summary=summary,
        _figures=figures,
        title=f"Activation store ({where})",
        description="Statistics over every stored value; PCA over the first "
        f"{max_points} vectors of each hook.",
    )
