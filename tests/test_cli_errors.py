"""Every failure of ``fusex fuse`` is one line with a documented exit code, and no ``--param`` value is guessed."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import fusex
from fusex import FusionParams, io
from fusex._cli_params import parse_param
from fusex.cli import main

pytest.importorskip("zarr")
pytest.importorskip("h5netcdf")


def fails(argv: list[str], code: int, capsys: pytest.CaptureFixture[str]) -> str:
    """Run the command, check its exit code and that it printed one error line; return that line."""
    assert main(argv) == code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    lines = [line for line in captured.err.splitlines() if line.startswith("fusex: error: ")]
    assert len(lines) == 1, captured.err
    return lines[0]


def fuse_argv(scan: Path, out: Path, *extra: str) -> list[str]:
    return ["fuse", str(scan), "-o", str(out), "-q", "--backend", "numpy", "--param", "n_iter=2", *extra]


# --- unreadable input: exit 3 -------------------------------------------------------------------


def _truncated_npz(scan: Path, tmp_path: Path) -> Path:
    data = scan.read_bytes()
    scan.write_bytes(data[: len(data) // 2])
    return scan


def _empty_npz(scan: Path, tmp_path: Path) -> Path:
    scan.write_bytes(b"")
    return scan


def _garbled_zarr_chunk(scan: Path, tmp_path: Path) -> Path:
    store = io.save(io.read(scan), tmp_path / "scan.zarr")
    (store / "maps" / "0.0.0").write_bytes(b"\x00garbage" * 16)
    return store


def _repeated_labels(scan: Path, tmp_path: Path) -> Path:
    ds = io.read(scan).assign_coords(element=["Sr", "Sr", "O"])
    path = tmp_path / "repeated.nc"
    ds.to_netcdf(path)
    return path


@pytest.mark.parametrize(
    ("make", "extra", "mentions"),
    [
        (_truncated_npz, [], "not a complete .npz archive"),
        (_empty_npz, [], "empty"),
        (_garbled_zarr_chunk, [], "scan.zarr"),
        (_repeated_labels, ["--elements", "Sr", "O"], "repeat ['Sr']"),
    ],
    ids=["truncated-npz", "empty-npz", "garbled-zarr-chunk", "repeated-labels"],
)
def test_unreadable_input_exits_3_with_one_line(scan, tmp_path, make, extra, mentions, capsys):
    bad = make(scan, tmp_path)
    out = tmp_path / "out.nc"
    line = fails(fuse_argv(bad, out, *extra), 3, capsys)
    assert line.startswith(f"fusex: error: cannot read {bad}: ") and mentions in line
    assert not out.exists()


# --- bad arguments: exit 2 ----------------------------------------------------------------------


def test_repeated_elements_exit_2(scan, tmp_path, capsys):
    line = fails(fuse_argv(scan, tmp_path / "o.nc", "--elements", "Sr", "Sr"), 2, capsys)
    assert "--elements names ['Sr'] more than once" in line


def test_an_unknown_torch_device_exits_2(scan, tmp_path, capsys):
    pytest.importorskip("torch")
    line = fails(fuse_argv(scan, tmp_path / "o.nc", "--backend", "torch", "--device", "gpu"), 2, capsys)
    assert "'gpu'" in line and "'cuda'" in line


# --- outputs: never replace what fusex did not write (exit 3), --overwrite for a result ---------


def test_an_existing_folder_is_kept_and_exits_3(scan, tmp_path, capsys):
    out = tmp_path / "d.zarr"
    (out / "keep").mkdir(parents=True)
    (out / "keep" / "f").write_text("x")
    for extra in ([], ["--overwrite"]):
        line = fails(fuse_argv(scan, out, *extra), 3, capsys)
        assert f"will not replace {out}" in line
        assert (out / "keep" / "f").read_text() == "x"


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_an_earlier_result_is_replaced_only_with_overwrite(scan, tmp_path, suffix, capsys, monkeypatch):
    out = tmp_path / f"fused{suffix}"
    assert main(fuse_argv(scan, out)) == 0
    capsys.readouterr()

    def no_fusing(*args, **kwargs):
        raise AssertionError("fused although the output was to be refused")

    with monkeypatch.context() as m:
        m.setattr(fusex.api, "fuse", no_fusing)  # the refusal comes before the work
        assert "--overwrite" in fails(fuse_argv(scan, out, "--param", "n_iter=3"), 3, capsys)
    assert io.load(out).attrs["n_iter"] == 2
    assert main([*fuse_argv(scan, out, "--param", "n_iter=3"), "--overwrite"]) == 0
    assert io.load(out).attrs["n_iter"] == 3


# --- anything else: a documented code, still one line ------------------------------------------


@pytest.mark.parametrize(
    ("raised", "code", "mentions"),
    [
        (RuntimeError("boom"), 1, "internal error, please report it"),
        (MemoryError("needs 16 GiB"), 5, "not enough memory: needs 16 GiB"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
    ids=["internal", "memory", "interrupt"],
)
def test_other_failures_have_their_own_codes(scan, tmp_path, raised, code, mentions, capsys, monkeypatch):
    def failing(*args, **kwargs):
        raise raised

    monkeypatch.setattr(fusex.api, "fuse", failing)
    line = fails(fuse_argv(scan, tmp_path / "o.nc"), code, capsys)
    assert mentions in line
    if code == 1:
        assert "RuntimeError: boom" in line and "FUSEX_DEBUG=1" in line


@pytest.mark.parametrize("how", ["env", "flag"])
def test_debug_adds_the_traceback(scan, tmp_path, how, capsys, monkeypatch):
    def failing(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(fusex.api, "fuse", failing)
    if how == "env":
        monkeypatch.setenv("FUSEX_DEBUG", "1")
    argv = fuse_argv(scan, tmp_path / "o.nc")
    assert main(["--debug", *argv] if how == "flag" else argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("fusex: error: internal error")


# --- --param: every field, parsed by its type ---------------------------------------------------

# One command-line value for each FusionParams field; a new field must be added here.
EVERY_FIELD = {
    "gamma": ("1.6", 1.6),
    "lambda_haadf": ("none", None),
    "lambda_chem": ("Sr:0.01,Ti:0.02,O:0.03", {"Sr": 0.01, "Ti": 0.02, "O": 0.03}),
    "lambda_tv": ("0.01,0.02", (0.01, 0.02)),
    "prior": ("Sr:tv,Ti:Huber,O:dtv", {"Sr": "tv", "Ti": "huber", "O": "dtv"}),
    "huber_delta": ("0.1", 0.1),
    "dtv_eta": ("0.05", 0.05),
    "dtv_strength": ("Sr:0.5,Ti:0,O:1", {"Sr": 0.5, "Ti": 0.0, "O": 1.0}),
    "n_iter": ("3", 3),
    "n_tv": ("10", 10),
    "n_dtv": ("30", 30),
    "tv_growth": ("2", 2),
    "tv_method": ("GP", "gp"),
    "eps": ("0.1", 0.1),
    "haadf_weights": ("1.0", (1.0,)),
    "normalize": ("none", "none"),
    "step": ("ExponentialDecay(eta0=1, rate=0.02)", fusex.ExponentialDecay(1.0, 0.02)),
    "backtracking": ("off", False),
    "backtrack_factor": ("0.25", 0.25),
    "max_backtracks": ("5", 5),
    "tol": ("0", 0.0),
    "divergence_patience": ("0", 0),
    "accel": ("none", "none"),
    "tv_warm": ("no", False),
    "haadf_model": ("minmax", "minmax"),
    "background": ("none", None),
    "background_modes": ("4", 4),
    "refit_every": ("5", 5),
    "rescale_totals": ("off", False),
    "init": ("counts", "counts"),
}


def test_every_field_is_settable_from_the_command_line():
    assert set(EVERY_FIELD) == {f.name for f in dataclasses.fields(FusionParams)}
    for name, (text, expected) in EVERY_FIELD.items():
        assert parse_param(f"{name}={text}") == (name, expected)
        if name != "haadf_weights":  # one weight fits a single map only
            FusionParams(**{name: expected})
    FusionParams(haadf_weights=parse_param("haadf_weights=1,2,3")[1])


@pytest.mark.parametrize(
    ("text", "value"),
    [(t, True) for t in ("true", "True", "YES", "on", "1")] + [(t, False) for t in ("false", "no", "Off", "0")],
)
def test_booleans_parse_strictly(text, value):
    assert parse_param(f"backtracking={text}") == ("backtracking", value)


@pytest.mark.parametrize(
    ("param", "mentions"),
    [
        ("backtracking=maybe", "takes true/false (or yes/no, on/off, 1/0), got 'maybe'"),
        ("backtracking=", "takes true/false"),
        ("n_iter=3.5", "n_iter takes an integer"),
        ("gamma=high", "gamma takes a number or numbers separated by commas"),
        ("eps=nan", "eps takes a number"),
        ("normalize=zscore", "one of scale/minmax/none"),
        ("step=Foo(1)", "ExponentialDecay(eta0=..., rate=...)"),
        ("lambda_haadf=none,1", "lambda_haadf takes none, a number"),
    ],
)
def test_a_value_of_none_of_the_fields_types_exits_2(scan, tmp_path, param, mentions, capsys):
    line = fails(fuse_argv(scan, tmp_path / "o.nc", "--param", param), 2, capsys)
    assert mentions in line


def test_backtracking_no_turns_it_off(scan, tmp_path):
    out = tmp_path / "o.nc"
    assert main(fuse_argv(scan, out, "--param", "backtracking=no", "--param", "normalize=none")) == 0
    used = json.loads(io.load(out).attrs["fusex_params"])
    assert used["backtracking"] is False and used["normalize"] == "none"


def test_help_lists_every_field_with_its_default_and_meaning(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fuse", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    listing = out.split("parameters (--param NAME=VALUE", 1)[1].split("exit codes:", 1)[0].splitlines()
    for field in dataclasses.fields(FusionParams):
        default = (
            str(field.default).lower() if field.default is None or isinstance(field.default, bool) else field.default
        )
        at = next(i for i, line in enumerate(listing) if line.startswith(f"  {field.name}={default}  "))
        assert listing[at + 1].startswith("      ") and len(listing[at + 1].strip()) > 10  # its meaning
    assert "5 not enough memory" in out.replace("\n", " ")
