"""Limiting numpy's BLAS (OpenBLAS) to one thread while timing or serving single images.

Scoring one image at a time gains nothing from BLAS threads and, on a small machine that
is busy with other work, loses a lot to them. numpy has no API for this, so this calls
OpenBLAS's own setter through ctypes; when that is not possible it does nothing.
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

log = logging.getLogger(__name__)


@cache
def _openblas() -> tuple[Any, Any] | None:
    """(setter, getter) of the OpenBLAS bundled with numpy, or None."""
    import numpy

    libs = os.path.join(os.path.dirname(os.path.dirname(numpy.__file__)), "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libs, "*openblas*.so*"))):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                setter = getattr(library, f"{prefix}set_num_threads{suffix}", None)
                getter = getattr(library, f"{prefix}get_num_threads{suffix}", None)
                if setter is not None and getter is not None:
                    return setter, getter
    return None


@contextmanager
def blas_threads(count: int = 1) -> Iterator[bool]:
    """Run the block with `count` BLAS threads; yields whether the limit could be set."""
    functions = _openblas()
    if functions is None:
        yield False
        return
    setter, getter = functions
    previous = int(getter())
    setter(count)
    try:
        yield True
    finally:
        setter(previous)
