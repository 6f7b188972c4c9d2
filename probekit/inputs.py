"""What a user hands probekit as data: files read once, sequences coerced once.

:func:`read_data` is the one reader of data files for every command (``.txt`` one text per
line, ``.jsonl`` with ``text`` or ``tokens``, ``.npy``, ``.npz[:KEY]``, ``.pt``/``.pth``,
``.safetensors``); :func:`as_token_matrix` turns texts or ids into the ``[N, L]`` token matrix an
analysis needs, checked against the model's vocabulary. Both raise :class:`UsageError` (a
``ValueError``) naming the file or argument, the line or row, and what was expected; the CLI
prints it as one line and exits 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from probekit.errors import UsageError


def read_data(path: str | Path, flag: str = "--data") -> list[str] | Tensor:
    """Texts (``list[str]``) or a tensor (token ids ``[N, L]``, RNN inputs ``[N, T, in]``).

    ``path`` may end in ``:KEY`` to pick one array of an ``.npz`` or ``.safetensors`` file; a
    file holding one tensor (or ``input_ids``) needs no key. ``.jsonl`` rows with ``tokens`` of
    different lengths are cut to the shortest.
    """
    path, key = _split_key(str(path))
    if not path.is_file():
        raise UsageError(f"{flag} {str(path)!r} is not a file")
    suffix = path.suffix.lower()
    if suffix in (".txt", ".jsonl"):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            line = path.read_bytes()[: err.start].count(b"\n") + 1
            raise UsageError(f"{flag} {path}: line {line} is not UTF-8 text") from None
        except OSError as err:
            raise UsageError(f"{flag} {path}: cannot be read: {err.strerror or err}") from None
        rows = _read_txt(text, path, flag) if suffix == ".txt" else _read_jsonl(text, path, flag)
        if not rows:
            raise UsageError(f"{flag} {path}: no sequences (the file is empty)")
        return rows if isinstance(rows[0], str) else torch.tensor(rows, dtype=torch.long)
    try:
        if suffix == ".npy":
            value: Any = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                value = {k: archive[k] for k in archive.files}
        elif suffix == ".safetensors":
            from probekit.fileio import read_safetensors

            value = read_safetensors(path)
        elif suffix in (".pt", ".pth"):
            from probekit.fileio import load_pickle_checkpoint

            value = load_pickle_checkpoint(path)
        else:
            raise UsageError(
                f"{flag} {path}: unknown file type {suffix!r}; expected .txt, .jsonl, .npy, "
                ".npz, .pt or .safetensors"
            )
    except UsageError:
        raise
    except Exception as err:  # numpy, safetensors and torch each raise their own types
        raise UsageError(f"{flag} {path}: cannot be read: {err}") from None
    tensor = _pick(value, key, path, flag)
    if tensor.dim() == 0 or len(tensor) == 0:
        raise UsageError(f"{flag} {path}: no items (shape {tuple(tensor.shape)})")
    if not (tensor.is_floating_point() or tensor.dtype in _INT_DTYPES):
        raise UsageError(f"{flag} {path}: expected token ids or float inputs, got {tensor.dtype}")
    return tensor


_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def _split_key(text: str) -> tuple[Path, str | None]:
    head, sep, key = text.rpartition(":")
    if sep and key and Path(head).suffix.lower() in (".npz", ".safetensors"):
        return Path(head), key
    return Path(text), None


def _pick(value: Any, key: str | None, path: Path, flag: str) -> Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if isinstance(value, Tensor):
        if key is not None:
            raise UsageError(f"{flag} {path}: holds one array; drop ':{key}'")
        return value
    if not isinstance(value, dict) or not value:
        raise UsageError(
            f"{flag} {path}: expected a tensor or arrays, found {type(value).__name__}"
        )
    if key is None:
        if len(value) == 1:
            key = next(iter(value))
        elif "input_ids" in value:
            key = "input_ids"
        else:
            raise UsageError(f"{flag} {path}: holds {sorted(value)}; name one as {path}:KEY")
    if key not in value:
        raise UsageError(f"{flag} {path}: no array {key!r} (it holds {sorted(value)})")
    picked = value[key]
    if isinstance(picked, np.ndarray):
        picked = torch.from_numpy(picked)
    if not isinstance(picked, Tensor):
        raise UsageError(f"{flag} {path}:{key} is a {type(picked).__name__}, not an array")
    return picked


def _read_txt(text: str, path: Path, flag: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _read_jsonl(text: str, path: Path, flag: str) -> list[Any]:
    rows: list[Any] = []
    field = None
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise UsageError(f"{flag} {path}: line {i} is not JSON: {err.msg}") from None
        key = "tokens" if isinstance(obj, dict) and "tokens" in obj else "text"
        if not isinstance(obj, dict) or key not in obj:
            raise UsageError(f"{flag} {path}: line {i} has neither 'text' nor 'tokens'")
        if field is not None and key != field:
            raise UsageError(f"{flag} {path}: line {i} mixes 'text' and 'tokens' rows")
        field = key
        value = obj[key]
        ok = isinstance(value, str) if key == "text" else _is_int_list(value)
        if not ok:
            what = "a string" if key == "text" else "a list of integers"
            raise UsageError(
                f"{flag} {path}: line {i}: '{key}' must be {what}, got {type(value).__name__}"
            )
        rows.append(value)
    if field == "tokens" and rows:
        shortest = min(len(r) for r in rows)
        rows = [r[:shortest] for r in rows]
    return rows


def _is_int_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    )


def as_token_matrix(
    sequences: Any, length: int, vocab_size: int, tokenizer: Any = None, name: str = "sequences"
) -> Tensor:
    """``sequences`` (token ids ``[N, L]`` or a list of texts) -> ``LongTensor [N, length]``.

    Texts are tokenised without special tokens; every sequence needs at least ``length`` tokens
    (longer ones are cut to their first ``length``), and every id must lie in
    ``[0, vocab_size)``. Errors name the offending row.
    """
    if isinstance(sequences, str):
        raise ValueError(f"{name} must be a list of texts or token ids [N, L], got one string")
    if isinstance(sequences, (list, tuple)) and sequences and isinstance(sequences[0], str):
        if tokenizer is None:
            raise ValueError(
                f"{name} are texts but the model has no tokenizer; pass tokenizer= or token ids"
            )
        rows = []
        # Only the first ``length`` tokens are used, and they lie within the first
        # length x (longest token) characters: a huge text is cut (with a wide margin, so the
        # word at the cut cannot change them) before tokenising.
        limit = 4 * length * max(len(t) for t in tokenizer.get_vocab()) + 1024
        for i, text in enumerate(sequences):
            if not isinstance(text, str):
                raise ValueError(f"{name}[{i}] must be a text, got {type(text).__name__}")
            ids = tokenizer(text[:limit], add_special_tokens=False)["input_ids"]
            if len(ids) < length:
                raise ValueError(
                    f"{name}[{i}] has {len(ids)} tokens; prefix_len + suffix_len = {length} needed"
                )
            rows.append(ids[:length])
        tokens = torch.tensor(rows, dtype=torch.long)
    else:
        if (
            isinstance(sequences, (list, tuple))
            and sequences
            and not isinstance(sequences[0], (list, tuple, np.ndarray, Tensor))
        ):
            raise ValueError(f"{name} must be texts or token ids [N, L]")
        try:
            tokens = torch.as_tensor(
                np.asarray(sequences) if isinstance(sequences, list) else sequences
            )
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"{name} must be texts or a rectangular [N, L] id array: {err}"
            ) from err
        if tokens.ndim != 2 or tokens.shape[0] == 0:
            raise ValueError(f"{name} must be token ids [N, L], got shape {tuple(tokens.shape)}")
        if tokens.is_floating_point() or tokens.dtype == torch.bool or tokens.is_complex():
            raise ValueError(f"{name} must be integer token ids, got dtype {tokens.dtype}")
        if tokens.shape[1] < length:
            raise ValueError(
                f"{name} has {tokens.shape[1]} tokens per row; prefix_len + suffix_len = {length}"
                " needed"
            )
        tokens = tokens[:, :length].long()
    if tokens.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    bad = (tokens < 0) | (tokens >= vocab_size)
    if bool(bad.any()):
        row = int(bad.any(dim=1).nonzero()[0])
        raise ValueError(
            f"{name}[{row}] has token ids outside the vocabulary [0, {vocab_size}): "
            f"{tokens[row][bad[row]].tolist()[:5]}"
        )
    return tokens
