"""``metaembed index``: inspect and check an embedded MultiVectorIndex folder.

``metaembed index stats PATH`` prints sizes and bytes per budget as JSON;
``metaembed index verify PATH`` re-reads every file against the manifest's
CRC-32 checksums and exits with 1 (printing the damaged file) on corruption;
``metaembed index compact PATH`` rewrites all segments into one without
deleted rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _stats(args: argparse.Namespace) -> int:
    from metaembed.index.multivector import MultiVectorIndex

    index = MultiVectorIndex.open(args.path, verify=False)
    print(json.dumps(index.stats(), indent=1))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from metaembed.index.multivector import MultiVectorIndex
    from metaembed.index.storage import CorruptIndexError

    try:
        index = MultiVectorIndex.open(args.path, verify=True)
    except (CorruptIndexError, FileNotFoundError) as error:
        print(f"damaged: {error}", file=sys.stderr)
        return 1
    stats = index.stats()
    print(
        f"ok: {stats['num_candidates']} candidates in {stats['num_segments']} segments, "
        "checksums match"
    )
    return 0


def _compact(args: argparse.Namespace) -> int:
    from metaembed.index.multivector import MultiVectorIndex

    with MultiVectorIndex.open(args.path) as index:
        before = index.stats()["num_segments"]
        index.compact()
        print(f"compacted {before} segments into {index.stats()['num_segments']}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``index stats|verify|compact PATH``."""
    parser = subparsers.add_parser(
        "index", help="inspect, verify or compact a MultiVectorIndex folder"
    )
    actions = parser.add_subparsers(dest="index_command", required=True)
    for name, function, text in (
        ("stats", _stats, "print sizes and bytes per budget as JSON"),
        ("verify", _verify, "check every file against its checksum"),
        ("compact", _compact, "merge segments and drop deleted rows"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("path", help="index folder")
        action.set_defaults(func=function)
