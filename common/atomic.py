"""Atomic output: write to a temporary sibling, flush it to disk, rename it into place.

Readers (a resumed job, another shard, a user) see the old file or the complete new one, never part of
one; a writer that fails or is interrupted leaves nothing behind, and one killed outright (SIGKILL, power
loss) leaves only a ``.NAME.tmp-*`` sibling that :func:`remove_stale` clears on the next run.

    with atomic_path("out/depth.npy") as tmp:       # any writer that takes a path
        np.save(tmp, array)
    write_bytes("out/a.bin", data); write_text("out/a.md", text); write_json("out/a.json", obj)
    with atomic_path("out/s0003", directory=True) as tmp:   # a folder, published whole
        ...
"""
from __future__ import annotations

import json
import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def temp_name(path: str | Path) -> Path:
    """The temporary sibling a writer of ``path`` uses: hidden, unique per process and thread, and with
    ``path``'s suffix kept (some writers pick the format from it, numpy appends ``.npy`` without it)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_native_id()}{path.suffix}")


def remove_stale(path: str | Path) -> None:
    """Delete what killed writers of ``path`` left (``.NAME.tmp-*``); never a complete output."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        _remove(stale)


@contextmanager
def atomic_path(path: str | Path, directory: bool = False, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; publish it when the block ends.

    A file replaces any existing ``path``. A folder (``directory=True``; the temporary is created empty)
    never replaces one: if ``path`` already exists when the block ends, another writer of the same content
    finished first and this copy is dropped. ``durable`` fsyncs the content (every file of a folder)
    before the rename, so a power cut cannot publish an empty or partial file. On any exception, including
    KeyboardInterrupt, the temporary is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    _remove(tmp)
    if directory:
        tmp.mkdir()
    try:
        yield tmp
        if not directory and not tmp.is_file():
            raise OSError(f"{path}: the writer produced no file")
        files = sorted(p for p in tmp.rglob("*") if p.is_file()) if directory else [tmp]
        mode = 0o666 & ~_umask()
        for f in files:
            os.chmod(f, mode)  # some writers (safetensors, mkstemp) create 0600; outputs are for sharing
            if durable:
                _fsync(f)
        if directory:
            if path.exists():
                _remove(tmp)
                return
            os.rename(tmp, path)
        else:
            os.replace(tmp, path)
        if durable:
            _fsync_dir(path.parent)
    except BaseException:
        _remove(tmp)
        raise


def write_bytes(path: str | Path, data: bytes, durable: bool = True) -> Path:
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str, durable: bool = True) -> Path:
    return write_bytes(path, text.encode("utf-8"), durable=durable)


def write_text_if_changed(path: str | Path, text: str) -> Path:
    """Leave a file that already holds ``text`` untouched (its mtime too), so a rerun of a finished build writes
    nothing; otherwise write it atomically."""
    path = Path(path)
    if not (path.is_file() and path.read_bytes() == text.encode("utf-8")):
        write_text(path, text)
    return path


def write_json(path: str | Path, data, indent: int | None = 1, sort_keys: bool = False, durable: bool = True) -> Path:
    return write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n", durable=durable)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); some file systems refuse fsync on a folder, which is harmless."""
    try:
        _fsync(folder)
    except OSError:
        pass


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
