"""``metaembed train CONFIG [--key value ...]``: train a MetaEmbed model from a YAML/TOML config.

Examples::

    metaembed train configs/tiny-llama.yaml
    metaembed train configs/tiny-llama.yaml --max_steps 100 --output_dir runs/try
    torchrun --nproc_per_node 2 -m metaembed_cli.main train configs/tiny-llama.yaml
    torchrun --nproc_per_node 8 -m metaembed_cli.main train big.yaml --strategy fsdp2

Every key of the config can be overridden as ``--key value`` (``--key=value``
too); see docs/training.md for the keys and their paper defaults. A run
resumes from the newest checkpoint in ``output_dir`` unless ``--resume false``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``train`` sub-command."""
    parser = subparsers.add_parser(
        "train",
        help="train a MetaEmbed model (one process or under torchrun)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="YAML (.yaml/.yml) or TOML (.toml) training config")
    parser.add_argument(
        "overrides", nargs=argparse.REMAINDER, help="--key value pairs overriding the config"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the config, train, print the summary; return an exit code (2 for bad config or data)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from metaembed.training.arguments import load_config
    from metaembed.training.data import DataError
    from metaembed.training.trainer import train

    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        config = load_config(args.config, list(args.overrides or []))
        result = train(config)
    except (DataError, ValueError, FileNotFoundError) as error:
        print(f"metaembed train: error: {error}", file=sys.stderr)
        return 2
    finally:
        _leave_process_group()
    if rank == 0:
        print(result.summary())
    return 0


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
