"""Datasets reachable offline: openclipart (Debian) and the retrieval tasks built from it."""

from __future__ import annotations

from metaembed.data.openclipart import ClipartImage, ClipartNotInstalledError, load_openclipart

__all__ = ["ClipartImage", "ClipartNotInstalledError", "load_openclipart"]
