"""Make the figures and command outputs of the page "From the microscope to fused maps".

Run from the repository root (needs fusex with HyperSpy, exspy and matplotlib, e.g.
``pip install -e ".[hyperspy,plot]"``)::

    python docs/scripts/make_microscope_figures.py

The vendor files the page is about are not fusex's to ship, so the script writes two
look-alikes with HyperSpy's ``.hspy`` writer into a temporary folder: a TEM scan like a Velox
``.emd`` (an EDS spectrum image of SrTiO3 columns with the X-ray lines in its metadata, and a
uint16 HAADF image with a few saturated pixels and another axis offset) and an SEM scan like a
Bruker ``.bcf`` (an EDS spectrum image without element metadata, and a BSE image).  The spectra
are Poisson counts of Gaussian lines on a smooth background.  It then runs the ``fusex``
commands the page shows on them, writes their printed output to ``docs/figures/microscope-*.txt``
(the page includes those files) and draws the figures.  It takes about a minute.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import hyperspy.api as hs
import matplotlib.pyplot as plt
import numpy as np

import fusex
import fusex.io
import fusex.plot
from fusex.spectra import detector_fwhm, xray_line

OUT = Path(__file__).resolve().parents[1] / "figures"
DPI = 80
SEED = 0
CHANNEL_KEV = 0.01
FWHM_MN_KA = 130.0  # eV, a typical silicon-drift detector
CMAP = "magma"


def spectrum_image(
    abundance: dict[str, np.ndarray],
    lines: dict[str, str],
    dose: float,
    beam_kev: float,
    channels: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Poisson counts (H, W, channels) of Gaussian X-ray lines on a bremsstrahlung-like background.

    Each element contributes its line with ``dose * abundance`` counts per pixel, spread by the
    detector resolution at the line's energy.
    """
    energy = (np.arange(channels) + 0.5) * CHANNEL_KEV
    shape = next(iter(abundance.values())).shape
    mean = np.zeros((*shape, channels))
    for element, line in lines.items():
        e0 = xray_line(line).energy
        sigma = detector_fwhm(e0, FWHM_MN_KA) / 1000 / 2.3548  # keV
        profile = np.exp(-0.5 * ((energy - e0) / sigma) ** 2)
        mean += dose * abundance[element][..., None] * (profile / profile.sum())
    continuum = np.clip(beam_kev - energy, 0, None) / energy * (1 - np.exp(-energy / 0.8))  # Kramers, absorbed
    mean += 0.6 * dose * continuum / continuum.sum()
    return rng.poisson(mean).astype(np.uint16)


def eds_signal(counts: np.ndarray, kind: str, beam_kev: float, pixel_nm: float, lines: list[str] | None):
    """Return a HyperSpy/exspy EDS signal of ``counts`` with the calibration and metadata a microscope writes."""
    signal = hs.signals.Signal1D(counts)
    signal.set_signal_type(kind)
    names = ("y", "x", "Energy")
    for axis, name, scale, units in zip(
        signal.axes_manager._axes, names, (pixel_nm, pixel_nm, CHANNEL_KEV), ("nm", "nm", "keV")
    ):
        axis.name, axis.scale, axis.units = name, scale, units
    signal.axes_manager["Energy"].offset = CHANNEL_KEV / 2
    microscope = "TEM" if kind == "EDS_TEM" else "SEM"
    signal.metadata.set_item(f"Acquisition_instrument.{microscope}.beam_energy", beam_kev)
    signal.metadata.set_item(f"Acquisition_instrument.{microscope}.Detector.EDS.energy_resolution_MnKa", FWHM_MN_KA)
    if lines:
        signal.metadata.set_item("Sample.xray_lines", lines)
        signal.metadata.set_item("Sample.elements", sorted({line.split("_")[0] for line in lines}))
    signal.metadata.General.title = "EDS"
    return signal


def image_signal(image: np.ndarray, title: str, pixel_nm: float, offset_nm: float):
    """Return a HyperSpy image with the scan's calibration (and an axis offset, as Velox writes)."""
    signal = hs.signals.Signal2D(image)
    for axis, name in zip(signal.axes_manager._axes, ("y", "x")):
        axis.name, axis.scale, axis.units, axis.offset = name, pixel_nm, "nm", offset_nm
    signal.metadata.General.title = title
    return signal


def tem_lookalike(folder: Path, rng: np.random.Generator) -> None:
    """Write a Velox-like TEM scan: SrTiO3 columns, Sr_La/Ti_Ka/O_Ka in the metadata, a uint16 HAADF."""
    sample = fusex.datasets.phantom((64, 64), dose=1.0, seed=SEED)
    truth = dict(zip(sample.elements, sample.truth))
    counts = spectrum_image(
        truth, {"Sr": "Sr_La", "Ti": "Ti_Ka", "O": "O_Ka"}, dose=4.0, beam_kev=200.0, channels=1024, rng=rng
    )
    eds_signal(counts, "EDS_TEM", 200.0, 0.05, ["O_Ka", "Sr_La", "Ti_Ka"]).save(folder / "tem-eds.hspy")
    haadf = sample.haadf - sample.haadf.min()
    brightest = np.quantile(haadf, 1 - 20 / haadf.size)  # the detector clips the 20 brightest pixels
    haadf = np.round(2000 + haadf / brightest * 63535).clip(0, 65535).astype(np.uint16)
    image_signal(haadf, "HAADF", 0.05, 0.025).save(folder / "tem-haadf.hspy")


def sem_lookalike(folder: Path, rng: np.random.Generator) -> None:
    """Write a Bruker-like SEM scan: Al and Cu grains in an oxide, no element metadata, a BSE image."""
    y, x = np.mgrid[0:60, 0:80]
    grains = np.sin(x / 7.0) * np.cos(y / 9.0) + 0.4 * np.sin((x + y) / 5.0)
    cu = (grains > 0.35).astype(float)
    al = 1.0 - cu
    oxide = 0.5 + 0.5 * (np.hypot(x - 40, y - 30) > 18)
    abundance = {"Al": al, "Cu": cu, "O": oxide * al}
    counts = spectrum_image(
        abundance, {"Al": "Al_Ka", "Cu": "Cu_Ka", "O": "O_Ka"}, dose=12.0, beam_kev=20.0, channels=2048, rng=rng
    )
    eds_signal(counts, "EDS_SEM", 20.0, 40.0, None).save(folder / "sem-eds.hspy")
    bse = 1000 + 800 * (0.3 * al + 1.0 * cu) + rng.normal(0, 40, cu.shape)
    image_signal(bse.astype(np.float32), "BSE", 40.0, 0.0).save(folder / "sem-bse.hspy")


# The command line as installed, except that each warning prints as its category and message
# (Python adds the file and line that raised it) and HyperSpy's own deprecation notices are hidden.
CLI = (
    "import sys, warnings; "
    "warnings.filterwarnings('ignore', module='hyperspy'); "
    "warnings.showwarning = lambda m, c, *a, **k: print(f'{c.__name__}: {m}', file=sys.stderr); "
    "from fusex.cli import main; sys.exit(main(sys.argv[1:]))"
)


def _python(folder: Path, code: str, *args: str, what: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python in ``folder``; stdout and stderr together, as a terminal shows them."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    if done.returncode:
        raise RuntimeError(f"{what} failed: {done.stdout}")
    return done


def run(folder: Path, name: str, *args: str) -> None:
    """Run ``fusex ARGS`` in ``folder`` and keep what it printed as ``microscope-NAME.txt``."""
    command = " ".join(["fusex", *args])
    done = _python(folder, CLI, *args, what=command)
    (OUT / f"microscope-{name}.txt").write_text(f"$ {command}\n{done.stdout}")
    print(f"$ {command}\n{done.stdout}")


PYTHON = """\
import hyperspy.api as hs

import fusex
import fusex.io

ds = fusex.io.read("tem-eds.hspy", haadf="tem-haadf.hspy")
print(ds.attrs["source"])
print(ds["maps"].dtype, dict(ds["maps"].sizes), ds["maps"].attrs.get("units"))
out = fusex.fuse(ds)
print("saturated HAADF pixels left out:", out.attrs["saturated_pixels"])
print("counts per element, raw:", out["raw"].sum(("y", "x")).values)
print("counts per element, fused:", out["maps"].sum(("y", "x")).values.round(1))

# the same from HyperSpy signals (lazy ones stay lazy), and back
eds, haadf = hs.load("tem-eds.hspy"), hs.load("tem-haadf.hspy")
again = fusex.fuse(fusex.io.from_hyperspy(eds, haadf))
signals = fusex.io.to_hyperspy(again)
print([(s.metadata.General.title, s.metadata.Signal.signal_type) for s in signals])
"""


def run_python(folder: Path) -> None:
    """Run the page's Python example in ``folder`` and keep the code and what it printed."""
    done = _python(folder, PYTHON_PREAMBLE + PYTHON, what="the Python example")
    (OUT / "microscope-python.py").write_text(PYTHON)
    (OUT / "microscope-python.txt").write_text(done.stdout)
    print(PYTHON, done.stdout, sep="\n")


# As for the command line: each warning prints as its category and message.
PYTHON_PREAMBLE = (
    "import sys, warnings\n"
    "warnings.filterwarnings('ignore', module='hyperspy')\n"
    "warnings.showwarning = lambda m, c, *a, **k: print(f'{c.__name__}: {m}', file=sys.stderr)\n"
)


def spectrum_figure(folder: Path) -> None:
    """Draw the TEM look-alike's sum spectrum with fusex's integration windows marked."""
    signal = hs.load(folder / "tem-eds.hspy")
    axis = signal.axes_manager.signal_axes[0].axis
    total = np.asarray(signal.data, dtype=float).sum(axis=(0, 1))
    fig, ax = plt.subplots(figsize=(6.4, 2.4))
    ax.semilogy(axis, total + 1, color="0.2", lw=0.8)
    for line, color in zip(("O_Ka", "Sr_La", "Ti_Ka"), ("tab:blue", "tab:orange", "tab:green")):
        e0 = xray_line(line).energy
        half = detector_fwhm(e0, FWHM_MN_KA) / 1000  # fusex integrates 2 FWHM, centred on the line
        ax.axvspan(e0 - half, e0 + half, color=color, alpha=0.3, lw=0)
        ax.annotate(line, (e0, total.max()), ha="center", va="top", fontsize=8)
    ax.set(xlim=(0, 6), xlabel="energy (keV)", ylabel="counts (sum of all pixels)")
    fig.tight_layout()
    save(fig, "microscope-spectrum.png")


def maps_figure(result_path: Path, name: str, image: str) -> None:
    """Draw the HAADF (or BSE) image and model, raw and fused maps of a saved result."""
    ds = fusex.io.load(result_path)
    elements = [str(e) for e in ds.element.values]
    fig, axes = plt.subplots(2, len(elements) + 1, figsize=(1.9 * (len(elements) + 1), 3.9))
    axes[0, 0].imshow(ds["haadf"].values, cmap="gray")
    axes[0, 0].set_title(image, fontsize=9)
    model = ds["haadf_model"].values
    axes[1, 0].imshow(model, cmap="gray")
    axes[1, 0].set_title(f"{image} model", fontsize=9)
    for i, element in enumerate(elements):
        for row, (var, label) in enumerate((("raw", "raw"), ("maps", "fused"))):
            ax = axes[row, i + 1]
            ax.imshow(ds[var].sel(element=element).values, cmap=CMAP)
            ax.set_title(f"{element} {label}", fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    save(fig, name)


def save(fig: plt.Figure, name: str) -> None:
    """Save a compact PNG and close the figure."""
    fig.savefig(OUT / name, dpi=DPI, pil_kwargs={"optimize": True})
    plt.close(fig)


def main() -> int:
    """Write the look-alikes, run the commands on them and draw the figures."""
    OUT.mkdir(exist_ok=True)
    rng = np.random.default_rng(SEED)
    folder = Path(tempfile.mkdtemp(prefix="fusex-microscope-"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tem_lookalike(folder, rng)
            sem_lookalike(folder, rng)
        run(folder, "inspect-tem", "inspect", "tem-eds.hspy", "--haadf", "tem-haadf.hspy")
        run(folder, "fuse-tem", "fuse", "tem-eds.hspy", "--haadf", "tem-haadf.hspy", "-o", "fused.nc", "-q")
        run(folder, "inspect-sem", "inspect", "sem-eds.hspy", "--haadf", "sem-bse.hspy")
        run(
            folder,
            "fuse-sem",
            "fuse",
            "sem-eds.hspy",
            "--haadf",
            "sem-bse.hspy",
            "--elements",
            "Al",
            "Cu",
            "O",
            "-o",
            "sem.nc",
            "-q",
        )
        run(
            folder,
            "lines-sem",
            "fuse",
            "sem-eds.hspy",
            "--haadf",
            "sem-bse.hspy",
            "--lines",
            "Al_Ka",
            "Cu_La",
            "O_Ka",
            "-o",
            "sem-lines.nc",
            "-q",
        )
        run_python(folder)
        spectrum_figure(folder)
        maps_figure(folder / "fused.nc", "microscope-tem.png", "HAADF")
        maps_figure(folder / "sem.nc", "microscope-sem.png", "BSE")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
