"""Measure this machine's roofline: fp32 GEMM peak (GFLOP/s) and memory read bandwidth (GB/s).

Imported by the other benchmarks so every table is compared with limits measured in the same run.
Run alone: ``python bench/roofline.py``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Roofline:
    gemm_gflops: float  # fp32 matmul peak with all threads
    read_gbps: float  # streaming read bandwidth (sum over a large array)
    threads: int

    def seconds(self, flops: float, bytes_read: float) -> float:
        """Lower bound on run time: the larger of FLOP time at peak and byte time at bandwidth."""
        return max(flops / (self.gemm_gflops * 1e9), bytes_read / (self.read_gbps * 1e9))


def _best_of(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(repeats: int = 5, size: int = 2048, read_mib: int = 1024) -> Roofline:
    """Best-of-``repeats`` GEMM peak and read bandwidth with the current torch thread count."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    gemm_seconds = _best_of(lambda: torch.mm(a, b), repeats)
    gemm_gflops = 2 * size**3 / gemm_seconds / 1e9
    array = np.ones(read_mib * 1024 * 1024 // 4, dtype=np.float32)
    tensor = torch.from_numpy(array)
    read_seconds = _best_of(lambda: tensor.sum(), repeats)
    read_gbps = array.nbytes / read_seconds / 1e9
    return Roofline(gemm_gflops=gemm_gflops, read_gbps=read_gbps, threads=torch.get_num_threads())


if __name__ == "__main__":
    print(json.dumps(asdict(measure()), indent=2))
