"""fusex's version, read by the build (pyproject.toml) and written into every result's provenance."""

__version__ = "0.1.0"
