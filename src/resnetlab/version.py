"""The package version (a leaf: the CLI and the provenance record read it without importing anything else)."""

__version__ = "0.2.0"
