"""Cost of the MMR loss with the paper's five groups relative to one group (the largest).

All groups slice one token-level similarity computation, so five groups should cost close
to one. Prints the forward+backward time of each and the ratio; writes ``bench/results/loss.json``.

    python bench/loss.py [--batch 64] [--dim 1024]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from metaembed import PAPER_GROUPS
from metaembed.losses import MMRLoss

RESULTS = Path(__file__).parent / "results"


def step_seconds(loss_fn: MMRLoss, tensors: list[torch.Tensor], repeats: int) -> float:
    def step() -> None:
        inputs = [t.detach().requires_grad_() for t in tensors]
        loss_fn(*inputs).loss.backward()

    step()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)

    def unit(*shape: int) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.randn(*shape, generator=generator), dim=-1)

    tensors = [
        unit(args.batch, 16, args.dim),
        unit(args.batch, 64, args.dim),
        unit(args.batch, 64, args.dim),
    ]
    one = step_seconds(MMRLoss(groups=PAPER_GROUPS[-1:]), tensors, args.repeats)
    five = step_seconds(MMRLoss(groups=PAPER_GROUPS), tensors, args.repeats)
    print(f"{'groups':>7} {'fwd+bwd ms':>11}")
    print(f"{1:>7} {1e3 * one:>11.1f}")
    print(f"{5:>7} {1e3 * five:>11.1f}")
    print(
        f"ratio 5 groups / 1 group: {five / one:.2f} "
        f"(batch {args.batch}, dim {args.dim}, one hard negative)"
    )
    RESULTS.mkdir(exist_ok=True)
    out = {
        "batch": args.batch,
        "dim": args.dim,
        "one_group_ms": 1e3 * one,
        "five_groups_ms": 1e3 * five,
        "ratio": five / one,
    }
    (RESULTS / "loss.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
