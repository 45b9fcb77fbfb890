"""The native per-row top-k against torch.topk, and merge_top_k with and without it."""

from __future__ import annotations

import pytest
import torch

from metaembed.index import kernels
from metaembed.index.kernels import available_backends, merge_top_k

pytestmark = pytest.mark.skipif(
    "native" not in available_backends(), reason="native kernel not built here"
)


def expected_top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best first, equal scores by lower position, -inf slots as (-inf, -1): a stable sort."""
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]  # (Nq, k')
    values = torch.gather(scores, 1, order)
    positions = torch.where(torch.isneginf(values), -1, order)
    pad = k - values.shape[1]
    if pad > 0:
        values = torch.cat([values, torch.full((scores.shape[0], pad), float("-inf"))], 1)
        positions = torch.cat([positions, torch.full((scores.shape[0], pad), -1)], 1)
    return values, positions


@pytest.mark.parametrize("n", [1, 7, 8, 9, 100, 1003])
@pytest.mark.parametrize("k", [1, 5, 10, 64])
def test_native_top_k_equals_a_stable_sort(n, k):
    from metaembed.index.kernels_native import top_k_native

    generator = torch.Generator().manual_seed(n * 100 + k)
    scores = torch.randn(6, n, generator=generator)  # (Nq, n)
    scores[1] = torch.round(scores[1])  # many ties: the lower position comes first
    scores[2, ::2] = float("-inf")  # deleted rows' mark never enters
    scores[3] = float("-inf")
    scores[4] = 0.25
    values, positions = top_k_native(scores, k)
    want_values, want_positions = expected_top_k(scores, k)
    assert torch.equal(values, want_values)
    assert torch.equal(positions, want_positions)


def test_native_top_k_threads_and_non_contiguous_input(monkeypatch):
    from metaembed.index import kernels_native

    monkeypatch.setattr(kernels_native, "_TOP_K_SCORES_PER_THREAD", 1)  # a thread per row
    scores = torch.randn(300, 9).t()  # (9, 300), not contiguous
    values, positions = kernels_native.top_k_native(scores, 10)
    want_values, want_positions = expected_top_k(scores, 10)
    assert torch.equal(values, want_values)
    assert torch.equal(positions, want_positions)
    with pytest.raises(ValueError, match="k must be at least 1"):
        kernels_native.top_k_native(scores, 0)
    assert kernels_native.top_k_native(scores.double(), 3) is None  # not float32: torch's
    assert kernels_native.top_k_native(scores, 257) is None  # large k: torch's selection


def test_merge_top_k_is_the_same_with_and_without_the_kernel(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    best = torch.full((4, 10), float("-inf")), torch.full((4, 10), -1)
    chunks = [torch.randn(4, size, generator=generator) for size in (3, 50, 1000)]
    starts = (0, 3, 53)
    ids = [torch.arange(s, s + c.shape[1]) for s, c in zip(starts, chunks, strict=True)]

    def run():
        held = best
        for chunk, chunk_ids in zip(chunks, ids, strict=True):
            held = merge_top_k(*held, chunk, chunk_ids, 10)
        return held

    with_kernel = run()
    monkeypatch.setattr(kernels, "_native_module", lambda: None)  # torch.topk instead
    without = run()
    assert torch.equal(with_kernel[0], without[0])
    assert torch.equal(with_kernel[1], without[1])
