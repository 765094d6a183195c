"""The ``fusex`` command line, run in-process through `fusex.cli.main` and once as a real subprocess."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from fusex.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    assert path.is_file(), f"{path} was not written"
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG file"
    assert len(data) > 1000, f"{path} is suspiciously small ({len(data)} bytes)"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current directory, so a figure written to the default path would be noticed."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def test_demo_prints_summary_and_writes_both_figures(
    tmp_path: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    figure = tmp_path / "demo.png"
    assert main(["demo", "--size", "48", "--seed", "1", "-o", str(figure)]) == 0

    out = capsys.readouterr().out
    assert "48x48 px" in out
    assert "(Sr, Ti, O)" in out  # the summary names the maps
    assert "NRMSE" in out
    for element in ("Sr", "Ti", "O"):
        line = re.search(rf"^\s*{element}: raw ([0-9.]+) -> fused ([0-9.]+)", out, re.MULTILINE)
        assert line is not None, f"no NRMSE line for {element} in:\n{out}"
        raw, fused = map(float, line.groups())
        assert 0 < fused < raw  # the demo's point: fused maps are closer to the truth than the raw counts
    assert_png(figure)
    assert_png(tmp_path / "demo-convergence.png")
    assert f"wrote {figure}" in out
    assert list(workdir.iterdir()) == []  # nothing written to the default path


def test_demo_of_the_shipped_dysco3_acquisition(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    figure = tmp_path / "dysco3.png"
    assert main(["demo", "--data", "dysco3", "-o", str(figure)]) == 0
    out = capsys.readouterr().out
    assert "DyScO3" in out and "256x256 px" in out and "(Sc, Dy, O)" in out
    assert "30 iterations" in out  # the tutorial's parameters
    assert "10.69761/MXVR4353" in out and "10.1038/s41524-021-00692-5" in out  # what to cite
    assert_png(figure)
    assert_png(tmp_path / "dysco3-convergence.png")


def test_help_exits_zero_and_lists_demo(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "demo" in capsys.readouterr().out


def test_demo_help_lists_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--size", "--dose", "--seed", "--backend", "--output", "--data"):
        assert option in out


@pytest.mark.parametrize(
    "argv, mentions",
    [
        (["demo", "--size", "-3"], "--size"),
        (["demo", "--size", "0"], "--size"),
        (["demo", "--size", "1"], "--size"),
        (["demo", "--dose", "-1"], "--dose"),
        (["demo", "--size", "16", "--backend", "nosuch"], "nosuch"),
    ],
    ids=["negative-size", "zero-size", "one-pixel", "negative-dose", "unknown-backend"],
)
def test_bad_demo_argument_gives_one_line_error_and_code_2(
    argv: list[str], mentions: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("fusex: error: ")
    assert mentions in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize("size", ["-3", "0"])
def test_bad_size_error_names_the_option(size: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--size", size]) == 2
    assert "--size" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--size", "abc"], "invalid int value"),
        (["demo", "--dose", "lots"], "invalid float value"),
        (["demo", "--colour", "red"], "unrecognized arguments"),
        (["nosuch"], "invalid choice"),
        ([], "required"),
    ],
    ids=["size-not-int", "dose-not-float", "unknown-option", "unknown-command", "no-command"],
)
def test_unparsable_arguments_exit_2_with_usage(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: fusex" in err
    assert "error:" in err
    assert message in err


def test_convergence_figure_lands_next_to_an_output_without_extension(tmp_path: Path, workdir: Path) -> None:
    pytest.importorskip("matplotlib")
    outdir = tmp_path / "run.1"
    outdir.mkdir()
    assert main(["demo", "--size", "32", "-o", str(outdir / "demo")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "run.1"]  # nothing beside run.1
    assert any("convergence" in p.name for p in outdir.iterdir())


def test_console_script_points_at_main() -> None:
    scripts = entry_points(group="console_scripts", name="fusex")
    if not scripts:
        pytest.skip("fusex is not installed as a distribution here (imported from the source tree)")
    (script,) = scripts
    assert script.value == "fusex.cli:main"
    assert script.load() is main


def test_module_runs_as_a_script(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    figure = tmp_path / "sub.png"
    proc = subprocess.run(
        [sys.executable, "-m", "fusex.cli", "demo", "--size", "32", "-o", str(figure)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "NRMSE" in proc.stdout
    assert_png(figure)
    assert_png(tmp_path / "sub-convergence.png")


def test_fuse_file_to_netcdf(scan: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fusex import io

    out = tmp_path / "fused.nc"
    argv = ["fuse", str(scan), "-o", str(out), "--param", "lambda_tv=0.01", "--param", "n_iter=7", "-q"]
    assert main(argv) == 0
    assert "fused 3 maps (Sr, Ti, O)" in capsys.readouterr().out
    result = io.load(out)
    assert result.attrs["lambda_tv"] == 0.01 and result.attrs["iterations_run"] <= 7


def test_fuse_file_with_published_preset_and_element_subset(scan: Path, tmp_path: Path) -> None:
    from fusex import io

    out = tmp_path / "fused.zarr"
    assert main(["fuse", str(scan), "-o", str(out), "--preset", "published", "--elements", "Sr", "O", "-q"]) == 0
    result = io.load(out)
    assert list(result.element.values) == ["Sr", "O"] and result.attrs["tv_method"] == "gp"


def test_fuse_file_with_a_batch_dimension(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    from fusex import io
    from fusex.datasets import phantom
    from fusex.xarray import label

    frames = [phantom((24, 24), seed=i) for i in range(2)]
    ds = label(frames[0].haadf, frames[0].maps, frames[0].elements)
    series = ds.expand_dims(frame=2).copy(
        data={"haadf": np.stack([f.haadf for f in frames]), "maps": np.stack([f.maps for f in frames])}
    )
    scan = tmp_path / "series.nc"
    io.save(series, scan)
    out = tmp_path / "fused.nc"
    assert (
        main(["fuse", str(scan), "-o", str(out), "-q", "--param", "n_iter=3", "--figure", str(tmp_path / "f.png")]) == 0
    )
    printed = capsys.readouterr()
    assert "fused a batch {'frame': 2}" in printed.out and "3-3 iterations (2 n_iter)" in printed.out
    assert "no figure written" in printed.err
    assert io.load(out).maps.dims == ("frame", "element", "y", "x")


def test_fuse_file_with_parameters_chosen_from_the_counts(
    scan: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    from fusex import io

    # a smaller default grid keeps the search short; tune's own tests cover the default one
    small = {"lambda_tv": (0.003, 0.01, 0.03), "lambda_chem": (0.01, 0.04)}
    monkeypatch.setattr(importlib.import_module("fusex.tune"), "DEFAULT_GRID", small)
    out = tmp_path / "fused.nc"
    assert main(["fuse", str(scan), "-o", str(out), "--preset", "auto", "-q"]) == 0
    result = io.load(out)
    for name in ("lambda_tv", "lambda_chem"):
        # one shared value, or one per element when that scored better on the held-out counts; the
        # grid is widened by up to two geometric steps past an edge a choice lands on
        grid = small[name]
        low, high = grid[0] / grid[1], grid[-1] / grid[-2]
        reach = [grid[0] * low**n for n in (1, 2)] + [grid[-1] * high**n for n in (1, 2)]
        chosen = result[f"param_{name}"].values if f"param_{name}" in result else [result.attrs[name]]
        assert all(any(abs(c - g) <= 1e-9 * g for g in (*grid, *reach)) for c in chosen), chosen


def test_fuse_file_with_per_element_weights(scan: Path, tmp_path: Path) -> None:
    from fusex import io

    out = tmp_path / "fused.nc"
    argv = [
        "fuse",
        str(scan),
        "-o",
        str(out),
        "-q",
        "--param",
        "lambda_tv=Sr:0.01, Ti:0.02,O:0.03",
        "--param",
        "n_iter=3",
    ]
    assert main(argv) == 0
    assert io.load(out)["param_lambda_tv"].sel(element="Ti") == 0.02


@pytest.mark.parametrize(
    ("extra", "code", "mentions"),
    [
        (["--param", "lambda_tvv=1"], 2, "unknown parameter"),
        (["--preset", "auto", "--param", "lambda_tv=0.01"], 2, "cannot be combined with --preset auto"),
        (["--param", "lambda_tv"], 2, "NAME=VALUE"),
        (["--param", "gamma=0.5"], 2, "FusionParams.gamma"),
        (["--param", "lambda_tv=Sr:0.1,O"], 2, "ELEMENT:VALUE"),
        (["--param", "lambda_tv=Sr:0.1,O:0.2"], 2, "but the maps are ['Sr', 'Ti', 'O']"),
        (["--elements", "Sr", "Xx"], 3, "Xx"),
        (["--param", "step=1e6", "--param", "backtracking=false"], 4, "diverged"),
    ],
)
def test_fuse_file_errors(
    scan: Path, tmp_path: Path, extra: list[str], code: int, mentions: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fused.nc"
    assert main(["fuse", str(scan), "-o", str(out), "-q", *extra]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fusex: error:") and mentions in err[-1]
    assert not out.exists()


def test_fuse_unreadable_input_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an archive")
    assert main(["fuse", str(bad), "-o", str(tmp_path / "o.nc")]) == 3
    assert main(["fuse", str(tmp_path / "missing.npz"), "-o", str(tmp_path / "o.nc")]) == 3
    assert "cannot read" in capsys.readouterr().err


def test_unwritable_output_exits_3(scan: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["fuse", str(scan), "-o", str(blocker / "out.nc"), "-q"]) == 3
    assert "cannot write" in capsys.readouterr().err
