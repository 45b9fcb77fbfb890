"""Storage codecs: how float32 meta embeddings become stored values and back.

Four storage dtypes trade bytes for precision; scoring always runs in float32:

========== ============ ================= ===============================================
name       raw dtype    bytes per value   decoding
========== ============ ================= ===============================================
float32    float32      4                 none
float16    float16      2                 IEEE half -> float
bfloat16   uint16       2                 the top 16 bits of a float32 (round to nearest even)
int8       int8         1 (+4 per vector) ``value * scale``, one float32 scale per vector
========== ============ ================= ===============================================

Design choices:

* numpy has no bfloat16, so bfloat16 is stored as its raw ``uint16`` bit
  pattern; decoding shifts it into the upper half of a float32;
* int8 uses symmetric per-vector scales (``scale = max|x| / 127``): the dot
  product of a query with a stored vector is ``scale * <q, int8 values>``, so the
  scale costs one multiply per vector pair, not per element;
* encoders refuse NaN/inf (the index validates before encoding), so no codec
  needs special values.

>>> import numpy as np
>>> values = np.array([[[0.5, -1.0, 0.25]]], dtype=np.float32)   # (1 item, 1 vector, dim 3)
>>> raw, scales = encode(values, "bfloat16")
>>> raw.dtype, decode(raw, scales, "bfloat16").tolist()
(dtype('uint16'), [[[0.5, -1.0, 0.25]]])
>>> raw, scales = encode(values, "int8")
>>> raw.tolist(), scales.tolist()
([[[64, -127, 32]]], [[0.007874015718698502]])
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "STORAGE_DTYPES",
    "bytes_per_vector",
    "check_storage_dtype",
    "decode",
    "encode",
    "raw_dtype",
]

STORAGE_DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16", "int8")
"""Names accepted for ``MultiVectorIndex.create(dtype=...)``."""

_RAW_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(np.uint16),
    "int8": np.dtype(np.int8),
}


def check_storage_dtype(dtype: str) -> str:
    """Return ``dtype`` if it is a storage dtype, else raise a ``ValueError`` listing them.

    >>> check_storage_dtype("float16")
    'float16'
    """
    name = str(dtype).replace("torch.", "")
    if name not in _RAW_DTYPES:
        raise ValueError(
            f"unknown storage dtype {dtype!r}; choose one of {', '.join(STORAGE_DTYPES)}"
        )
    return name


def raw_dtype(dtype: str) -> np.dtype:
    """Numpy dtype of the stored values for a storage dtype name.

    >>> raw_dtype("bfloat16")
    dtype('uint16')
    """
    return _RAW_DTYPES[check_storage_dtype(dtype)]


def bytes_per_vector(dtype: str, dim: int) -> int:
    """Bytes one stored vector occupies, its int8 scale included.

    >>> bytes_per_vector("float16", 128), bytes_per_vector("int8", 128)
    (256, 132)
    """
    extra = 4 if check_storage_dtype(dtype) == "int8" else 0
    return raw_dtype(dtype).itemsize * dim + extra


def encode(values: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Encode float32 vectors of shape ``(..., dim)`` for storage.

    Returns
    -------
    raw : numpy.ndarray, shape (..., dim)
        Stored values in :func:`raw_dtype` of ``dtype``.
    scales : numpy.ndarray of float32, shape (...), or None
        Per-vector scales for int8; ``None`` for the float dtypes.
    """
    dtype = check_storage_dtype(dtype)
    values = np.ascontiguousarray(values, dtype=np.float32)
    if dtype == "float32":
        return values, None
    if dtype == "float16":
        return values.astype(np.float16), None
    if dtype == "bfloat16":
        bits = values.view(np.uint32)  # (..., dim)
        rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)  # round to nearest, ties to even
        return ((bits + rounding) >> 16).astype(np.uint16), None
    magnitude = np.abs(values).max(axis=-1)  # (...,)
    scales = (magnitude / 127.0).astype(np.float32)  # (...,)
    safe = np.where(scales > 0, scales, np.float32(1.0))  # (...,)
    quantized = np.clip(np.rint(values / safe[..., None]), -127, 127).astype(np.int8)  # (..., dim)
    return quantized, scales


def decode(raw: np.ndarray, scales: np.ndarray | None, dtype: str) -> np.ndarray:
    """Decode stored values back to float32 (the exact values the kernels score).

    Parameters
    ----------
    raw : numpy.ndarray, shape (..., dim)
        Stored values in :func:`raw_dtype` of ``dtype``.
    scales : numpy.ndarray of float32, shape (...), or None
        Per-vector scales (int8 only).
    dtype : str
        Storage dtype name.
    """
    dtype = check_storage_dtype(dtype)
    if dtype == "bfloat16":
        return (np.asarray(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    decoded = np.asarray(raw).astype(np.float32)  # (..., dim)
    if dtype == "int8":
        if scales is None:
            raise ValueError("int8 storage needs its per-vector scales to decode")
        decoded *= np.asarray(scales, dtype=np.float32)[..., None]
    return decoded
