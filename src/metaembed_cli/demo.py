"""``metaembed demo``: a real small MetaEmbed model on real offline data, across every budget.

``metaembed demo`` checks (or installs) the openclipart data, loads the
shipped model from ``models/demo``, indexes the held-out images, sweeps every
trained budget, prints the table with the single-vector baseline of the same
run, writes ``demo-results.json`` and a plot, and shows a few example searches.

The shipped model is trained by the general trainer
(``metaembed train configs/demo-openclipart.yaml``, see ``make demo-train``);
``metaembed demo --fit-baseline MODEL_DIR`` then fits the single-vector
baseline's linear map on the same train images and saves it next to the model.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import time

logger = logging.getLogger("metaembed.demo")

APT_PACKAGES = ("openclipart-png", "openclipart-svg")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command."""
    parser = subparsers.add_parser(
        "demo", help="run the offline openclipart demo (table, JSON, plot, examples)"
    )
    parser.add_argument(
        "--model", default="models/demo", help="trained demo model folder (default: models/demo)"
    )
    parser.add_argument(
        "--output", default=".", help="folder for demo-results.json and demo-results.png"
    )
    parser.add_argument(
        "--openclipart-root",
        default="/usr/share/openclipart",
        help="where Debian installs openclipart",
    )
    parser.add_argument(
        "--cache", default="cache", help="cache folder (converted LM, flattened images)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="items per forward pass")
    parser.add_argument("--examples", type=int, default=4, help="example searches to print")
    parser.add_argument(
        "--no-install", action="store_true", help="never run apt-get; only say what to install"
    )
    parser.add_argument(
        "--fit-baseline",
        metavar="MODEL_DIR",
        help="fit the single-vector baseline on MODEL_DIR's train images, save it there and exit",
    )
    parser.set_defaults(func=run)


def ensure_openclipart(root: str, allow_install: bool) -> bool:
    """Return True when the data is there, installing it with apt-get when running as root."""
    from metaembed.data.openclipart import (
        INSTALL_COMMAND,
        ClipartNotInstalledError,
        check_installed,
    )

    try:
        check_installed(root)
        return True
    except ClipartNotInstalledError:
        pass
    can_install = (
        allow_install and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get")
    )
    if not can_install:
        print(
            f"openclipart is not installed under {root}. Install it with:\n    {INSTALL_COMMAND}",
            file=sys.stderr,
        )
        return False
    print(f"installing {' '.join(APT_PACKAGES)} with apt-get (about 340 MB) ...", file=sys.stderr)
    environment = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    command = ["apt-get", "install", "-y", "--no-install-recommends", *APT_PACKAGES]
    if subprocess.run(command, env=environment, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=environment, check=False)
        if subprocess.run(command, env=environment, check=False).returncode != 0:
            print(
                f"apt-get failed; install the data by hand:\n    {INSTALL_COMMAND}", file=sys.stderr
            )
            return False
    check_installed(root)
    return True


def run(args: argparse.Namespace) -> int:
    """Run the demo (or ``--fit-baseline``); return the exit code."""
    start = time.perf_counter()
    os.environ.setdefault("METAEMBED_CACHE_DIR", args.cache)
    if not ensure_openclipart(args.openclipart_root, allow_install=not args.no_install):
        return 2
    if args.fit_baseline:
        from metaembed.demo.training import fit_demo_baseline

        path = fit_demo_baseline(
            args.fit_baseline,
            openclipart_root=args.openclipart_root,
            data_cache=os.path.join(args.cache, "openclipart"),
            show_progress=True,
        )
        print(f"baseline linear map -> {path}")
        return 0
    from metaembed.demo.report import format_examples, format_table, write_outputs
    from metaembed.demo.runner import DemoSettings, run_demo

    settings = DemoSettings(
        model_dir=args.model,
        openclipart_root=args.openclipart_root,
        data_cache=os.path.join(args.cache, "openclipart"),
        work_dir=os.path.join(args.cache, "demo-index"),
        batch_size=args.batch_size,
        num_examples=args.examples,
    )
    result = run_demo(settings)
    result.timings["total_wall"] = time.perf_counter() - start
    paths = write_outputs(result, args.output)
    info = result.info
    tasks = ", ".join(
        f"{name} {n['queries']}q/{n['candidates']}c" for name, n in info["tasks"].items()
    )
    print(f"\nopenclipart held-out: {info['heldout_images']} images; tasks: {tasks}")
    print(
        "R@1 / R@10 / NDCG@10: mean of the 4 retrieval tasks (text->image x3, image->text); "
        "class. acc.: image -> category name; FLOPs, latency, memory: the image collection\n"
    )
    print(format_table(result.rows))
    points = info.get("reference_points", {})
    if points:
        print(
            "no-model reference: "
            + ", ".join(f"{name} {100 * value:.1f}" for name, value in points.items())
        )
    print("\nexample searches (title -> top images, * = relevant):")
    print(format_examples(result.examples))
    timings = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in result.timings.items())
    print(f"\ntimings: {timings}")
    print(f"wrote {paths['results']} and {paths['plot']}")
    return 0
