"""Output files written atomically (text, JSON, safetensors) and read back with one-line errors;
file hashes and the package versions recorded with results."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file, save_file

from ..errors import OutputError


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


#: errors that only writing raises (a full disk or quota, a read-only file system)
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


@contextlib.contextmanager
def write_errors_name(target: Path) -> Iterator[None]:
    """A full disk (or quota, or read-only file system) while writing `target` is an OutputError that
    names it (one line, exit 2 on the command line), not a bare OSError; other errors pass unchanged."""
    try:
        yield
    except OSError as exc:
        if exc.errno in WRITE_ERRNOS:
            raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~current_umask())  # mkstemp makes 0600 files; outputs get ordinary modes
    try:
        with write_errors_name(target):
            yield tmp_path
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text so that readers see either the old file or the whole new one."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON (indented, sorted keys kept as given) atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, with a one-line error when it is missing or malformed."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise OutputError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise OutputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def save_tensors_atomic(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                        metadata: dict[str, str] | None = None) -> None:
    """Save a dict of tensors as safetensors, atomically."""
    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata=metadata)
        os.chmod(tmp, 0o666 & ~current_umask())  # safetensors may recreate the file with mode 0600


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a safetensors file (no pickle involved)."""
    return load_file(str(path))


def current_umask() -> int:
    """The process umask (read without changing it): files get mode ``0o666 & ~current_umask()``."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour determines results."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("pathprune", "torch", "timm", "torch-pruning", "numpy", "onnx", "onnxruntime-gpu",
                 "onnxruntime", "safetensors"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
