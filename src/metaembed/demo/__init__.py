"""The offline demo: a real small MetaEmbed model on openclipart, baselines, the budget sweep.

Library functions only (they return results and never print); ``metaembed demo``
in :mod:`metaembed_cli.demo` prints them.
"""

from __future__ import annotations

__all__: list[str] = []
