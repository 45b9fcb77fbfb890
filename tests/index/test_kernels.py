"""Scoring kernels: every backend and storage dtype against the reference MaxSim (decoded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metaembed import maxsim
from metaembed.index import kernels
from metaembed.index.codecs import STORAGE_DTYPES, decode, encode
from metaembed.index.kernels import available_backends, decode_block_torch, score_tiers
from metaembed.index.storage import tier_bounds


def normalized(rng: np.random.Generator, *shape: int) -> np.ndarray:
    values = rng.standard_normal(shape).astype(np.float32)
    return values / np.linalg.norm(values, axis=-1, keepdims=True)


def tiered(candidates: np.ndarray, dtype: str):
    """Encode (N, R, D) float32 into tiers; return raw tiers, scales and the decoded (N, R, D)."""
    raw_tiers, scale_tiers, decoded = [], [], []
    for start, stop in tier_bounds(candidates.shape[1]):
        raw, scales = encode(candidates[:, start:stop], dtype)
        raw_tiers.append(raw)
        scale_tiers.append(scales)
        decoded.append(decode(raw, scales, dtype))
    return raw_tiers, (scale_tiers if dtype == "int8" else None), np.concatenate(decoded, axis=1)


@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("dtype", STORAGE_DTYPES)
def test_backends_match_reference(rng, backend, dtype):
    candidates = normalized(rng, 37, 64, 24)
    queries = torch.from_numpy(normalized(rng, 3, 16, 24))
    raw_tiers, scales, decoded = tiered(candidates, dtype)
    for r_q, r_c in [(1, 1), (2, 4), (4, 8), (8, 16), (16, 64), (3, 5), (5, 17), (7, 63)]:
        got = score_tiers(queries[:, :r_q], raw_tiers, r_c, dtype, scales, backend=backend)
        expected = maxsim(queries, torch.from_numpy(decoded), budget=(r_q, r_c))
        torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)


COMPILED = [name for name in available_backends() if name != "torch"]


def assert_budgets_match_reference(
    queries, candidates, dtype, backend, budgets, threads=(None,), atol=2e-5,
    instruction_set=None, lane_groups=None,
):  # fmt: skip
    """Every (r_q, r_c) and thread count: ``score_tiers`` equals maxsim on the decoded tiers.

    With ``instruction_set``, the native kernel held to that instruction set (and
    ``lane_groups`` choice) is checked.
    """
    raw_tiers, scales, decoded = tiered(candidates, dtype)
    for r_q, r_c in budgets:
        expected = maxsim(queries, torch.from_numpy(decoded), budget=(r_q, r_c))
        for count in threads:
            if instruction_set is not None:
                from metaembed.index.kernels_native import score_tiers_native

                got = score_tiers_native(
                    queries[:, :r_q], raw_tiers, scales, r_c, dtype, count,
                    instruction_set=instruction_set, lane_groups=lane_groups,
                )  # fmt: skip
            else:
                got = score_tiers(
                    queries[:, :r_q], raw_tiers, r_c, dtype, scales, backend=backend,
                    num_threads=count,
                )  # fmt: skip
            torch.testing.assert_close(got, expected, atol=atol, rtol=1e-5)


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("dtype", STORAGE_DTYPES)
def test_compiled_thread_ranges_match_reference(rng, backend, dtype):
    candidates = normalized(rng, 301, 64, 40)  # 301: ranges that do not divide evenly
    queries = torch.from_numpy(normalized(rng, 2, 16, 40))
    budgets = [(1, 1), (16, 1), (2, 4), (3, 7), (16, 64), (5, 17)]  # (16, 1): 32 rows
    budgets += [(3, 1), (4, 1)]  # 6 and 8 query vectors at r_c = 1: tiles of 3 candidates
    assert_budgets_match_reference(queries, candidates, dtype, backend, budgets, (1, 2, 3))


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("dtype", STORAGE_DTYPES)
@pytest.mark.parametrize("dim", [1, 13, 2100])
def test_compiled_odd_dims_and_query_groups_match_reference(rng, backend, dtype, dim):
    """Dims that are not a multiple of 8 (tails), and queries too big to transpose at once."""
    candidates = normalized(rng, 23, 20, dim)
    queries = torch.from_numpy(normalized(rng, 5, 16, dim))
    budgets = [(1, 1), (4, 1), (1, 3), (2, 4), (4, 20), (5, 9), (9, 1), (16, 20)]
    budgets += [(1, 2), (3, 2), (8, 2), (2, 5), (6, 16), (8, 19)]  # short and partial tiles
    for num_queries in (1, 2, 5):
        assert_budgets_match_reference(
            queries[:num_queries], candidates, dtype, backend, budgets, atol=5e-5
        )


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_compiled_query_batches_match_reference(rng, backend, dtype):
    """Batches whose lanes are whole queries (r_q = 1: transposed write-out) and mixed sizes."""
    candidates = normalized(rng, 301, 16, 24)
    queries = torch.from_numpy(normalized(rng, 19, 16, 24))
    budgets = [(1, 1), (1, 4), (2, 4), (1, 16), (3, 1)]
    assert_budgets_match_reference(queries, candidates, dtype, backend, budgets, (1, 3))


def test_auto_picks_the_fastest_available_backend(rng):
    candidates = normalized(rng, 9, 4, 8)
    queries = torch.from_numpy(normalized(rng, 2, 2, 8))
    assert available_backends()[-1] == "torch"
    assert kernels.default_backend() == available_backends()[0]
    auto = score_tiers(queries, [candidates], 4)
    chosen = score_tiers(queries, [candidates], 4, backend=available_backends()[0])
    assert torch.equal(auto, chosen)


@pytest.mark.parametrize("backend", available_backends())
def test_small_blocks_and_single_tier(rng, backend):
    candidates = normalized(rng, 11, 3, 5)
    queries = torch.from_numpy(normalized(rng, 2, 1, 5))
    got = score_tiers(queries, [candidates], 3, "float32", backend=backend, block_candidates=2)
    torch.testing.assert_close(got, maxsim(queries, torch.from_numpy(candidates)))


def test_half_decoding_is_exact_including_subnormals():
    values = np.array([0.0, -0.0, 1.0, -2.5, 6.1e-5, 5.96e-8, -3.0e-7, 65504.0], dtype=np.float16)
    raw = torch.from_numpy(values.view(np.int16))
    assert decode_block_torch(raw, None, "float16").tolist() == values.astype(np.float32).tolist()
    tier = values.reshape(1, 1, -1)
    query = torch.eye(values.size, dtype=torch.float32)[:, None, :]  # picks one element each
    for backend in COMPILED:
        got = score_tiers(query, [tier], 1, "float16", backend=backend)[:, 0]
        assert got.tolist() == values.astype(np.float32).tolist()
        one_at_a_time = [  # one query vector: the loops that decode inside the dot product
            score_tiers(query[i : i + 1], [tier], 1, "float16", backend=backend).item()
            for i in range(values.size)
        ]
        assert one_at_a_time == values.astype(np.float32).tolist()


def test_bad_arguments_are_rejected(rng, monkeypatch):
    candidates = normalized(rng, 4, 8, 6)
    queries = torch.from_numpy(normalized(rng, 1, 2, 6))
    with pytest.raises(ValueError, match="r_c=9 is outside 1..8"):
        score_tiers(queries, [candidates], 9)
    with pytest.raises(ValueError, match="scales"):
        score_tiers(queries, [candidates.astype(np.int8)], 2, "int8")
    with pytest.raises(ValueError, match="unknown backend"):
        score_tiers(queries, [candidates], 2, backend="fortran")
    with monkeypatch.context() as patch:  # a compiled backend missing here: named, with the fix
        patch.setitem(kernels._COMPILED, "native", lambda: None)
        with pytest.raises(ValueError, match=r"backend='native' is not available here.*AVX2"):
            score_tiers(queries, [candidates], 2, backend="native")
    with pytest.raises(ValueError, match=r"\(num_candidates, size, 6\)"):
        score_tiers(queries, [candidates[:, :, :5]], 2)


def test_native_library_missing_or_unsupported_means_no_native_backend(monkeypatch):
    """No compiled extension (no compiler at install time): load_library says so, no error."""
    from metaembed.index import kernels_native

    kernels_native.load_library.cache_clear()
    monkeypatch.setattr(kernels_native.importlib.util, "find_spec", lambda name: None)
    try:
        assert kernels_native.load_library() is None
    finally:
        kernels_native.load_library.cache_clear()


def test_stale_native_library_is_not_used(monkeypatch, caplog):
    """A build from before the current entry point: warned about, and numba or torch take over."""
    from metaembed.index import kernels_native

    class StaleLibrary:
        def __init__(self, path):
            self.metaembed_native_supported = lambda: 1

    kernels_native.load_library.cache_clear()
    monkeypatch.setattr(kernels_native.ctypes, "CDLL", StaleLibrary)
    try:
        with caplog.at_level("WARNING", logger=kernels_native.__name__):
            assert kernels_native.load_library() is None
        assert "out of date; reinstall metaembed" in caplog.text
    finally:
        kernels_native.load_library.cache_clear()


def _builds_native_here() -> bool:
    """Whether the native kernel should build here: x86-64 with AVX2 and a C compiler."""
    import platform
    import shutil
    from pathlib import Path

    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text().split() if cpuinfo.exists() else []
    return (
        platform.machine() == "x86_64"
        and all(flag in flags for flag in ("avx2", "fma", "f16c"))
        and any(shutil.which(compiler) for compiler in ("cc", "gcc", "clang"))
    )


@pytest.mark.skipif(not _builds_native_here(), reason="no AVX2 CPU or no C compiler here")
def test_native_kernel_is_built_where_it_can_be():
    """The extension is optional so installs without a compiler succeed; where a compiler and
    an AVX2 CPU exist, a missing kernel means the C build failed (pip only warns), and every
    native test below would be skipped instead of failing."""
    assert "native" in available_backends(), (
        "the native kernel did not build: reinstall with `pip install -e . -v` to see the "
        "compiler's error"
    )


@pytest.mark.skipif("native" not in available_backends(), reason="native kernel not built here")
def test_native_caps_its_thread_count(rng):
    """More threads than the kernel starts (256): capped, not an error, same scores."""
    candidates = normalized(rng, 20_000, 4, 16)
    queries = torch.from_numpy(normalized(rng, 1, 2, 16))
    assert_budgets_match_reference(queries, candidates, "float16", "native", [(2, 4)], (1000,))


NATIVE_SETS = []
if "native" in available_backends():
    from metaembed.index.kernels_native import instruction_sets

    NATIVE_SETS = list(instruction_sets())


@pytest.mark.parametrize("instruction_set", NATIVE_SETS)
@pytest.mark.parametrize("dtype", STORAGE_DTYPES)
@pytest.mark.parametrize("dim", [13, 40, 64, 224, 448, 2100])
def test_every_native_instruction_set_matches_reference(rng, instruction_set, dtype, dim):
    """Each copy of the C kernel (AVX2: 8 floats, AVX-512: 16, AMX: 16 x 16 tiles) in every
    form and tail (64: whole 32-dim AMX steps, no masked tail, and the AMX copy's direct
    forms for bfloat16 and int8 at budgets ending at a tier's end, with a decoded
    remainder; at most 8 query vectors take the packed direct form (float16, up to 16,
    split a pair of row tiles at a time; int8 from 6 vectors in two digit tiles), its query
    tiles resident at 64 and rotated at 224, seven bfloat16 steps, and 448, seven int8
    steps). A pair of queries at (8, 4), (5, 9), (8, 19) or one at (16, 20) fills one
    16-lane block with r_c % 8 in 1..4: the 1 x 4 tiles of the packed form. At 448 and 2100
    one block of query vectors is scored a dim block at a time over groups of units
    (``score_ring``), with a shorter last block (and at 2100 a tail), a partial last group
    (67 candidates over 1 and 3 threads) and r_c = 1 ((16, 1))."""
    candidates = normalized(rng, 67, 20, dim)
    queries = torch.from_numpy(normalized(rng, 19, 16, dim))
    budgets = [(1, 1), (2, 1), (4, 1), (8, 1), (1, 3), (2, 4), (4, 8), (8, 16), (16, 20)]
    budgets += [(3, 2), (5, 8), (5, 9), (6, 16), (8, 19), (16, 1), (8, 4)]
    for num_queries in (1, 2, 19):  # one query, a pair, a batch with a partial lane block
        assert_budgets_match_reference(
            queries[:num_queries], candidates, dtype, "native", budgets, (1, 3), atol=5e-5,
            instruction_set=instruction_set,
        )  # fmt: skip


@pytest.mark.skipif("avx512" not in NATIVE_SETS, reason="no AVX-512 on this machine")
@pytest.mark.parametrize("dtype", STORAGE_DTYPES)
@pytest.mark.parametrize("dim", [13, 64, 224, 448])
def test_avx512_lane_groups_on_and_off_match_reference(rng, dtype, dim):
    """The AVX-512 copy's two forms for 3-8 query vectors (lane groups of 2 or 4 dims per
    query vector in one 16-lane block, or the grouped dims-along-lanes form that Zen 5 takes),
    each held on by ``lane_groups``, whatever this CPU's rule picks; the two sum in different
    orders, so unequal bits show the choice reaches the kernel."""
    from metaembed.index.kernels_native import score_tiers_native

    candidates = normalized(rng, 67, 20, dim)
    queries = torch.from_numpy(normalized(rng, 3, 16, dim))
    budgets = [(3, 8), (4, 8), (5, 16), (8, 16), (8, 20), (5, 1), (8, 1)]
    for lane_groups in (True, False):
        for num_queries in (1, 3):
            assert_budgets_match_reference(
                queries[:num_queries, :8], candidates, dtype, "native", budgets, (1, 3),
                atol=5e-5, instruction_set="avx512", lane_groups=lane_groups,
            )  # fmt: skip
    raw_tiers, scales, _ = tiered(candidates, dtype)
    on, off = (
        score_tiers_native(queries[:1, :4], raw_tiers, scales, 8, dtype, 1, "avx512", None, flag)
        for flag in (True, False)
    )
    assert not torch.equal(on, off)


@pytest.mark.parametrize("instruction_set", NATIVE_SETS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "int8"])
def test_native_direct_forms_with_few_rows_per_block(rng, instruction_set, dtype):
    """24 stored vectors (tiers 1, 3, 4, 8, 8): at r_c = 24 a block holds 48 rows, so the
    decode buffer (hi and lo: 96 rows) is smaller than the packed float16 form's parts (two
    pairs of row tiles, hi and lo: 128 rows), which score_queries sizes for; every copy and
    form is held to the reference there (an overrun need not show as a wrong score, so this
    checks the scores, not the sizing)."""
    candidates = normalized(rng, 70, 24, 64)
    queries = torch.from_numpy(normalized(rng, 2, 16, 64))
    for num_queries in (1, 2):
        assert_budgets_match_reference(
            queries[:num_queries], candidates, dtype, "native",
            [(16, 24), (8, 24), (4, 24), (1, 24)],
            (1, 2), atol=5e-5, instruction_set=instruction_set,
        )  # fmt: skip


@pytest.mark.parametrize("instruction_set", NATIVE_SETS)
@pytest.mark.parametrize("dtype", STORAGE_DTYPES)
def test_native_first_vector_forms_at_small_counts(rng, instruction_set, dtype):
    """r_c = 1 forms that split a range into sub-ranges (4 candidate streams) or tiles of
    consecutive candidates, at 1 to 9 candidates: empty sub-ranges and every remainder."""
    queries = torch.from_numpy(normalized(rng, 1, 4, 96))
    for count in range(1, 10):
        candidates = normalized(rng, count, 2, 96)
        assert_budgets_match_reference(
            queries, candidates, dtype, "native", [(1, 1), (2, 1), (4, 1)], (1,), atol=5e-5,
            instruction_set=instruction_set,
        )  # fmt: skip


@pytest.mark.skipif(not NATIVE_SETS, reason="native kernel not built here")
def test_unknown_native_instruction_set_is_named(rng):
    from metaembed.index.kernels_native import score_tiers_native

    candidates = normalized(rng, 4, 2, 8)
    queries = torch.from_numpy(normalized(rng, 1, 1, 8))
    with pytest.raises(ValueError, match=r"instruction_set='neon' is not available here"):
        score_tiers_native(queries, [candidates], None, 2, "float32", instruction_set="neon")


@pytest.mark.skipif(not NATIVE_SETS, reason="native kernel not built here")
def test_native_build_opened_by_path_scores_like_the_installed_one(rng):
    """open_library on the installed build's file, passed as ``library``: the same scores
    (how bench/kernel_ab.py times another checkout's build beside the installed one)."""
    import importlib.util

    from metaembed.index.kernels_native import open_library, score_tiers_native

    library = open_library(importlib.util.find_spec("metaembed.index._native").origin)
    assert library is not None
    candidates = normalized(rng, 300, 4, 32)
    queries = torch.from_numpy(normalized(rng, 2, 2, 32))
    tiers = [candidates[:, :1], candidates[:, 1:4]]
    installed = score_tiers_native(queries, tiers, None, 4, "float32")
    opened = score_tiers_native(queries, tiers, None, 4, "float32", library=library)
    assert torch.equal(installed, opened)

    class RejectingLibrary:  # the call goes to the library given, not the installed one
        @staticmethod
        def metaembed_native_score(*arguments):
            return -3

    with pytest.raises(RuntimeError, match="rejected its arguments"):
        score_tiers_native(queries, tiers, None, 4, "float32", library=RejectingLibrary())


def test_opening_a_file_that_is_no_library_names_it(tmp_path):
    from metaembed.index.kernels_native import open_library

    path = tmp_path / "_native.so"
    path.write_bytes(b"not a shared library")
    with pytest.raises(OSError, match="_native.so"):
        open_library(path)
