"""Build hook for the optional compiled scoring kernel (metadata lives in pyproject.toml).

``optional=True``: when no C compiler is present the install still succeeds and
``metaembed.index.kernels`` falls back to the numba or pure-torch backend.
"""

import sys

from setuptools import Extension, setup

native = Extension(
    "metaembed.index._native",
    sources=[
        f"src/metaembed/index/_native{part}.c"
        for part in ("", "_avx2", "_avx512", "_amx", "_vnni", "_topk")
    ],
    depends=["src/metaembed/index/_native_common.h", "src/metaembed/index/_native_lanes.h"],
    extra_compile_args=[] if sys.platform == "win32" else ["-O3", "-std=c11", "-pthread"],
    extra_link_args=[] if sys.platform == "win32" else ["-pthread"],
    optional=True,
)

setup(ext_modules=[native])
