"""File I/O for results: atomic text and JSON writes (never a half-written file)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "atomic_write_dir",
    "atomic_write_text",
    "read_safetensors",
    "read_safetensors_header",
    "release_free_memory",
    "save_json",
    "write_safetensors",
]


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same folder and a rename.

    A crash or error while writing never leaves a half-written file at ``path``.

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.json"
        >>> atomic_write_text(p, "{}").read_text()
        '{}'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_json(path: str | Path, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON (non-JSON values via ``str``)."""
    return atomic_write_text(path, json.dumps(data, indent=1, default=str))


def atomic_write_dir(target: str | Path, write: Callable[[Path], None]) -> Path:
    """Fill a folder by ``write(tmp)`` in a temporary sibling, then rename it to ``target``.

    An error or interrupt leaves no half-written folder; if another process created
    ``target`` meanwhile, its folder is kept and ours is discarded.

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()) / "model"
        >>> atomic_write_dir(d, lambda tmp: (tmp / "a.txt").write_text("x")).name
        'model'
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write(tmp)
        if target.exists():  # a concurrent writer won
            shutil.rmtree(tmp)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def release_free_memory() -> None:
    """Give freed heap memory back to the operating system (glibc ``malloc_trim``).

    glibc keeps memory freed by large phases (a statistics pass over float64 activations:
    0.28 GB on SmolLM2) in its heap, where later phases of other sizes do not reuse it, so
    the resident set only grows; trimming between phases keeps the run's peak at the
    largest single phase. A no-op where there is no glibc.
    """
    import ctypes
    import ctypes.util

    try:
        name = ctypes.util.find_library("c")
        if name:
            ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):
        pass


SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_safetensors_header(f: Any) -> tuple[dict[str, Any], int]:
    """The tensor entries of an open safetensors file's header and where its data starts.

    Args:
        f: The file, opened in binary mode at its start.

    Returns:
        ``(header without "__metadata__", offset of the data block)``; each entry's
        ``data_offsets`` count from that offset.

    Examples:
        >>> import tempfile, torch
        >>> from safetensors.torch import save_file
        >>> from tl_unlearn.core.files import read_safetensors_header
        >>> path = tempfile.mkdtemp() + "/w.safetensors"
        >>> save_file({"a": torch.zeros(2)}, path)
        >>> with open(path, "rb") as f:
        ...     header, start = read_safetensors_header(f)
        >>> header["a"]["shape"], header["a"]["data_offsets"]
        ([2], [0, 8])
    """
    import json
    import struct

    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header, 8 + n


def read_safetensors(path: Any) -> dict[str, Tensor]:
    """Every tensor of a safetensors file, read with plain file reads into memory of its own.

    ``safetensors`` memory-maps the file: its tensors share one mapping that stays resident
    until the last of them is freed. Read this way, each tensor is freed on its own.

    Args:
        path: The ``.safetensors`` file.

    Returns:
        The tensors by name.

    Raises:
        ValueError: A truncated file or a dtype this reader does not know.

    Examples:
        >>> import tempfile, torch
        >>> from safetensors.torch import save_file
        >>> from tl_unlearn.core.files import read_safetensors
        >>> path = tempfile.mkdtemp() + "/w.safetensors"
        >>> save_file({"a": torch.arange(6.0).reshape(2, 3)}, path)
        >>> read_safetensors(path)["a"].tolist()
        [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    """
    out = {}
    with open(path, "rb") as f:
        header, data_start = read_safetensors_header(f)
        for key, info in header.items():
            dtype = SAFETENSORS_DTYPES.get(info["dtype"])
            if dtype is None:
                raise ValueError(f"{path}: tensor {key!r} has dtype {info['dtype']}.")
            start, end = info["data_offsets"]
            buf = bytearray(end - start)
            f.seek(data_start + start)
            if f.readinto(buf) != len(buf):
                raise ValueError(f"{path} is truncated (tensor {key!r}).")
            t = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
            out[key] = t.reshape(info["shape"])
    return out


def write_safetensors(tensors: dict[str, Tensor], path: Any) -> None:
    """Write tensors in the safetensors format one at a time (``safetensors.torch.save_file``
    first builds the whole file in memory, the size of every tensor again).

    Args:
        tensors: Tensors by name (each is made contiguous on the CPU as it is written).
        path: The file to write.

    Raises:
        ValueError: A dtype the format does not have here.

    Examples:
        >>> import tempfile, torch
        >>> from safetensors.torch import load_file
        >>> from tl_unlearn.core.files import write_safetensors
        >>> path = tempfile.mkdtemp() + "/w.safetensors"
        >>> write_safetensors({"a": torch.tensor(2.5), "b": torch.ones(2, 2)}, path)
        >>> load_file(path)["b"].tolist(), load_file(path)["a"].item()  # scalars too
        ([[1.0, 1.0], [1.0, 1.0]], 2.5)
    """
    import json
    import struct

    names = {v: k for k, v in SAFETENSORS_DTYPES.items()}
    header: dict[str, Any] = {}
    offset = 0
    for key, t in tensors.items():
        if t.dtype not in names:
            raise ValueError(f"Tensor {key!r} has dtype {t.dtype}, which this writer lacks.")
        n = t.numel() * t.element_size()
        header[key] = {
            "dtype": names[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + n],
        }
        offset += n
    raw = json.dumps({"__metadata__": {"format": "pt"}, **header}, separators=(",", ":"))
    raw = raw.encode() + b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for t in tensors.values():
            t = t.detach().cpu().contiguous()
            f.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
