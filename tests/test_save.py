"""`fusex.io.save` never loses data: it replaces only fusex results, atomically, and survives a full disk or a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import fusex
from fusex import io
from fusex.errors import OutputExistsError
from fusex.io import files

pytest.importorskip("zarr")
pytest.importorskip("h5netcdf")


def version(k: float) -> xr.Dataset:
    """A small stand-in for a fusex result: two variables and an attribute that all say ``k``."""
    return xr.Dataset(
        {"a": (("y", "x"), np.full((16, 16), k)), "b": ("x", np.full(16, k))},
        attrs={"fusex_version": fusex.__version__, "k": k},
    )


def which(ds: xr.Dataset) -> float:
    """Return the version ``ds`` holds, checking that all its parts agree (no mix of two saves)."""
    k = float(ds.attrs["k"])
    assert np.all(ds["a"].values == k) and np.all(ds["b"].values == k), f"a store mixing versions: {ds}"
    return k


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (folders as None), to show nothing changed."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def can_exchange(folder: Path) -> bool:
    (folder / "probe-a").mkdir()
    (folder / "probe-b").mkdir()
    try:
        return files.exchange(folder / "probe-a", folder / "probe-b")
    finally:
        (folder / "probe-a").rmdir()
        (folder / "probe-b").rmdir()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".fusex-" in p.name)


def _plain_netcdf(path: Path) -> None:
    xr.Dataset({"v": ("x", np.arange(3.0))}).to_netcdf(path, engine="h5netcdf")


def _plain_zarr(path: Path) -> None:
    xr.Dataset({"v": ("x", np.arange(3.0))}).to_zarr(path, zarr_format=2, consolidated=True)


def _result_with_extra_file(path: Path) -> None:
    io.save(version(1), path)
    (path / "notes.txt").write_text("my notes")


def _folder_with_files(path: Path) -> None:
    (path / "keep").mkdir(parents=True)
    (path / "keep" / "f").write_text("x")


@pytest.mark.parametrize(
    ("name", "make", "mentions"),
    [
        ("d.zarr", _folder_with_files, "not a readable fusex result"),
        ("d.zarr", lambda p: p.mkdir(), "not a readable fusex result"),
        ("d.zarr", lambda p: p.write_text("x"), "it is a file"),
        ("d.nc", lambda p: p.write_text("precious"), "not a readable fusex result"),
        ("d.nc", lambda p: p.mkdir(), "it is a folder"),
        ("d.nc", _plain_netcdf, "fusex did not write"),
        ("d.zarr", _plain_zarr, "fusex did not write"),
        ("d.zarr", _result_with_extra_file, "notes.txt"),
    ],
    ids=["folder", "empty-folder", "file-as-zarr", "text-file", "folder-as-nc", "netcdf", "zarr", "extra-file"],
)
def test_save_never_replaces_what_fusex_did_not_write(tmp_path, name, make, mentions):
    path = tmp_path / name
    make(path)
    before = snapshot(tmp_path)
    with pytest.raises(OutputExistsError, match=mentions) as info:
        io.save(version(2), path)
    assert str(path) in str(info.value) and isinstance(info.value, FileExistsError)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_save_refuses_a_symbolic_link(tmp_path, suffix):
    target = io.save(version(1), tmp_path / f"real{suffix}")
    link = tmp_path / f"link{suffix}"
    link.symlink_to(target)
    with pytest.raises(OutputExistsError, match="symbolic link"):
        io.save(version(2), link)
    assert link.is_symlink() and which(io.load(target)) == 1


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_overwrite_decides_whether_a_result_is_replaced(tmp_path, suffix):
    path = io.save(version(1), tmp_path / f"r{suffix}")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        io.save(version(2), path, overwrite=False)
    assert which(io.load(path)) == 1
    io.save(version(3), path)  # the default replaces a result, as it always has
    assert which(io.load(path)) == 3
    with pytest.raises(TypeError, match="overwrite"):
        io.save(version(4), path, overwrite="no")
    assert leftovers(tmp_path) == []


def test_a_reader_always_sees_a_whole_store(tmp_path):
    path = io.save(version(0), tmp_path / "r.zarr")
    seen: list[float] = []
    failures: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                seen.append(which(io.load(path)))
            except BaseException as exc:  # every failure is what this test counts
                failures.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for k in range(1, 41):
            io.save(version(k), path)
    finally:
        done.set()
        reader.join()
    assert failures == []
    assert seen and set(seen) <= set(range(41))
    assert which(io.load(path)) == 40 and leftovers(tmp_path) == []


def test_without_an_atomic_exchange_the_old_store_moves_aside_and_back(tmp_path, monkeypatch):
    path = io.save(version(1), tmp_path / "r.zarr")
    monkeypatch.setattr(files, "exchange", lambda a, b: False)
    io.save(version(2), path)
    assert which(io.load(path)) == 2 and leftovers(tmp_path) == []


_CHILD = """
import os, sys, time
import numpy as np, xarray as xr
from fusex.io import files

path, marker, when = sys.argv[1:]

def pause():
    open(marker, "w").close()
    time.sleep(600)

real_exchange, real_rename = files.exchange, os.rename

def exchange(a, b):
    if when == "before-swap":
        pause()
    swapped = real_exchange(a, b)
    if when == "after-swap":
        pause()
    return swapped

def rename(src, dst):
    real_rename(src, dst)
    if os.fspath(src) == path:  # the old store has just moved aside
        pause()

if when == "between-renames":
    files.exchange = lambda a, b: False
    os.rename = rename
else:
    files.exchange = exchange
ds = xr.Dataset(
    {"a": (("y", "x"), np.full((16, 16), 2.0)), "b": ("x", np.full(16, 2.0))},
    attrs={"fusex_version": "0.1.0", "k": 2.0},
)
files.save(ds, path)
"""


@pytest.mark.parametrize(
    ("when", "at_path", "then"),
    [("before-swap", 1, 1), ("after-swap", 2, 2), ("between-renames", None, 1)],
)
def test_a_save_killed_at_any_point_loses_nothing(tmp_path, when, at_path, then):
    if when != "between-renames" and not can_exchange(tmp_path):
        pytest.skip("no atomic exchange on this system")
    path = io.save(version(1), tmp_path / "r.zarr")
    marker = tmp_path / "paused"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), str(marker), when],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while not marker.exists():
            if child.poll() is not None:
                pytest.fail(f"the saving process ended before the pause: {child.communicate()[1]}")
            time.sleep(0.05)
    finally:
        child.kill()
        child.communicate()
    marker.unlink()
    if at_path is None:
        assert not path.exists()  # the best effort's one window, which the next save repairs
    else:
        assert which(io.load(path)) == at_path
    assert leftovers(tmp_path), "the killed save should have left its temporary behind"

    # The next save to the path cleans up first (moving an old store back), then refuses to replace the result.
    with pytest.raises(OutputExistsError):
        io.save(version(3), path, overwrite=False)
    assert leftovers(tmp_path) == []
    assert which(io.load(path)) == then


def test_leftovers_of_a_running_save_are_not_touched(tmp_path):
    path = tmp_path / "r.zarr"
    mine = tmp_path / f".r.zarr.fusex-tmp-{os.getpid()}-0123abcd"  # this process counts as running
    mine.mkdir()
    io.save(version(1), path)
    assert mine.is_dir()


def _limit_file_size(limit: int):
    import resource  # POSIX only

    def apply() -> None:
        # Ignored, SIGXFSZ turns writes past the limit into EFBIG errors, as on a full disk.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file size limits")
@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_a_full_disk_leaves_the_old_result_and_no_temporary(tmp_path, suffix):
    from fusex.cli import main
    from fusex.datasets import phantom

    sample = phantom((64, 64), seed=2)
    scan = tmp_path / "scan.npz"
    np.savez(scan, HAADF=sample.haadf, **dict(zip(sample.elements, sample.maps)))
    out = tmp_path / f"out{suffix}"
    argv = ["fuse", str(scan), "-o", str(out), "-q", "--backend", "numpy", "--param", "n_iter=2"]
    assert main(argv) == 0
    before = snapshot(tmp_path)
    largest = out.stat().st_size if suffix == ".nc" else max(p.stat().st_size for p in out.rglob("*") if p.is_file())
    proc = subprocess.run(
        [sys.executable, "-m", "fusex.cli", *argv, "--overwrite", "--param", "n_iter=3"],
        preexec_fn=_limit_file_size(largest // 2),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"fusex: error: cannot write {out}") and "File too large" in last
    assert "Traceback" not in proc.stderr
    assert snapshot(tmp_path) == before  # the old result, byte for byte, and nothing else


def test_save_takes_a_dataset_only(tmp_path):
    sample = fusex.datasets.phantom((16, 16), seed=0)
    result = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=fusex.FusionParams(n_iter=1))
    with pytest.raises(TypeError, match="not a FusionResult; fuse labeled input"):
        io.save(result, tmp_path / "r.nc")
    assert list(tmp_path.iterdir()) == []
