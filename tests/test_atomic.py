"""The one atomic writer: complete outputs or nothing, whatever the writer does."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from common.atomic import atomic_path, remove_stale, temp_name, write_bytes, write_json
from conftest import ROOT


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_complete_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out" / "a.json"             # missing parents are made
    write_json(path, {"x": 1})
    write_json(path, {"x": 2})
    assert path.read_text() == '{\n "x": 2\n}\n' and listing(path.parent) == ["a.json"]
    with atomic_path(tmp_path / "depth.npy") as tmp:
        assert tmp.suffix == ".npy" and tmp.name.startswith(".depth.npy.tmp-")   # numpy keeps the name
        np.save(tmp, np.arange(3))
    assert np.load(tmp_path / "depth.npy").tolist() == [0, 1, 2]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_failed_write_leaves_the_old_file_and_nothing_else(tmp_path, error):
    path = tmp_path / "a.bin"
    write_bytes(path, b"old")
    with pytest.raises(error):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half of the new")
            raise error
    assert path.read_bytes() == b"old" and listing(tmp_path) == ["a.bin"]
    with pytest.raises(OSError, match="produced no file"):      # e.g. cv2.imwrite returning False
        with atomic_path(tmp_path / "b.png"):
            pass
    assert listing(tmp_path) == ["a.bin"]


def test_outputs_get_the_usual_permissions(tmp_path):
    with atomic_path(tmp_path / "a.bin") as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)     # as safetensors and mkstemp create files
        os.close(fd)
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_folder_is_published_whole_and_never_replaces_one(tmp_path):
    final = tmp_path / "s0000"
    with atomic_path(final, directory=True) as tmp:
        (tmp / "rgb").mkdir()
        (tmp / "rgb" / "00.png").write_bytes(b"first")
        assert not final.exists()
    assert (final / "rgb" / "00.png").read_bytes() == b"first"
    with atomic_path(final, directory=True) as tmp:          # a second writer of the same sample
        (tmp / "x").write_bytes(b"second")
    assert listing(final) == ["rgb"] and listing(tmp_path) == ["s0000"]
    with pytest.raises(ValueError):
        with atomic_path(tmp_path / "s0001", directory=True) as tmp:
            (tmp / "x").write_bytes(b"part")
            raise ValueError
    assert listing(tmp_path) == ["s0000"]


def test_a_killed_writer_leaves_only_a_temporary_that_remove_stale_clears(tmp_path):
    path = tmp_path / "big.bin"
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); from common.atomic import atomic_path\n"
            f"with atomic_path({str(path)!r}) as tmp:\n"
            "    tmp.write_bytes(b'x' * 1000); print('writing', flush=True); time.sleep(60)\n")
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert not path.exists() and len(list(tmp_path.glob(".big.bin.tmp-*"))) == 1
    remove_stale(path)
    assert listing(tmp_path) == [] and temp_name(path).parent == tmp_path
