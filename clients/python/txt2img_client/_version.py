"""The client's version: one place, read by the packaging without importing the package."""

__version__ = "0.1.0"
