"""The input formats `fusex.io.read` knows, by suffix, with what each holds (``fusex fuse --help`` lists them)."""

from __future__ import annotations

__all__ = ["INPUT_FORMATS", "MICROSCOPE_FORMATS"]

MICROSCOPE_FORMATS = {
    ".bcf": "Bruker Esprit: images and the EDS spectrum image (lines from its metadata)",
    ".emd": "Velox or NCEM EMD: HAADF, EDS/EELS maps, spectrum image (Velox's needs the sparse package)",
    ".dm3": "Gatan DigitalMicrograph 3: images and maps",
    ".dm4": "Gatan DigitalMicrograph 4: images and maps",
    ".hspy": "HyperSpy HDF5: one signal per file (give the HAADF file with --haadf)",
    ".zspy": "HyperSpy zarr: one signal per file (give the HAADF file with --haadf)",
    ".h5": "HDF5: HyperSpy's, or 2-D datasets HAADF plus one per element (the published tutorial's)",
    ".hdf5": "HDF5, as .h5",
}
"""Microscope and HyperSpy files, read through RosettaSciIO (optional: ``pip install "fusex[hyperspy]"``)."""

INPUT_FORMATS = {
    ".npz": "NumPy archive: HAADF plus one 2-D array per element (the published tutorials' layout)",
    ".nc": "netCDF Dataset with 'haadf' and 'maps' (element, y, x), or a saved fusex result",
    ".zarr": "zarr Dataset, as .nc",
    **MICROSCOPE_FORMATS,
}
"""Every suffix `fusex.io.read` opens, and what it holds."""
