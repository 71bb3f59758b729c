"""vimprof's version (a leaf module: anything may import it without an import cycle)."""

__version__ = "0.1.0"
