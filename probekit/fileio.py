"""Safe, atomic file I/O shared by checkpoints, activation stores and reports.

Two promises live here so that every writer keeps them the same way:

- reading never executes code from a file: ``.pt``/``.pth``/``.bin`` go through
  ``torch.load(weights_only=True)`` unless the caller passes ``trust_pickle=True``;
- writing is atomic: data goes to a temporary file in the target directory, is flushed to
  disk, then renamed over the target, so a reader never sees a half-written file and an
  interrupted writer leaves the previous version intact.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where a tensor is read: writing a page needs none
    import torch

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


class CheckpointError(ValueError):
    """A checkpoint or store file is missing, corrupt, unsafe or does not match its config."""


# ----------------------------------------------------------------------------- writing


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; the finished file should get the usual umask modes (a report or a
    # store written here is meant to be read by others).
    umask = os.umask(0)
    os.umask(umask)
    tmp_path.chmod(0o666 & ~umask)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_safetensors_atomic(
    tensors: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``tensors`` as one safetensors file, atomically."""
    from safetensors.torch import save_file

    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata=dict(metadata) if metadata else None)


# ----------------------------------------------------------------------------- reading


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj


def read_safetensors(path: str | os.PathLike, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Load every tensor of a safetensors file; a truncated or corrupt file names itself."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"{path}: not a readable safetensors file (truncated or corrupt?): {err}"
        ) from err


def load_pickle_checkpoint(path: str | os.PathLike, trust_pickle: bool = False) -> Any:
    """Load a ``.pt``/``.pth``/``.bin`` file without running code from it.

    ``torch.load(weights_only=True)`` refuses any object that is not tensors, containers and
    plain scalars, so a malicious pickle's ``__reduce__`` never runs. Only an explicit
    ``trust_pickle=True`` falls back to a full unpickle.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not trust_pickle:
            raise CheckpointError(
                f"{path}: this pickle holds objects beyond tensors and plain containers, "
                "so it was not loaded (loading it could run arbitrary code). If you trust "
                "the file, pass trust_pickle=True."
            ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint (truncated or corrupt?): {err}"
        ) from err
    return torch.load(path, map_location="cpu", weights_only=False)


def read_state_dict(path: str | os.PathLike, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` from a safetensors file or a pickled state dict."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    if path.suffix in PICKLE_SUFFIXES:
        import torch

        obj = load_pickle_checkpoint(path, trust_pickle=trust_pickle)
        if isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        raise CheckpointError(
            f"{path}: expected a state dict of tensors, found {type(obj).__name__}"
        )
    raise CheckpointError(
        f"{path}: unknown weights format {path.suffix!r}; expected .safetensors or one of "
        f"{', '.join(PICKLE_SUFFIXES)}"
    )


def check_shape(
    file: str | os.PathLike, name: str, expected: tuple[int, ...], found: tuple[int, ...]
) -> None:
    """Raise a :class:`CheckpointError` naming the file, tensor and both shapes."""
    if tuple(expected) != tuple(found):
        raise CheckpointError(
            f"{file}: tensor {name!r} has shape {tuple(found)}, but the config expects "
            f"{tuple(expected)}"
        )
