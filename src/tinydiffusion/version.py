"""The package's version, here so that what records it (an export) need not import the package's face."""

__version__ = "0.1.0"
