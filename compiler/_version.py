"""moec's version (its own module: code that stamps it does not import the package's public API)."""
__version__ = "0.1.0"
