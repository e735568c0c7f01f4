"""Limiting numpy's BLAS (OpenBLAS) to one thread while timing or serving single images,
or while training folds side by side.

Scoring one image at a time gains nothing from BLAS threads and, on a small machine that
is busy with other work, loses a lot to them. numpy has no API for this, so this calls
OpenBLAS's own setter through ctypes; when that is not possible it does nothing.

OpenBLAS's thread count belongs to the whole process. Training limits it once around its
folds, which run side by side in threads; blocks that limit it at the same time (two
trainings or evaluations in one process) share the limit: the first to enter sets it and
the last to leave puts the previous count back (`limited`), so that one leaving never
lifts it under another. (torch's count, which `cnn` limits, is not shared this way: each
thread also keeps one of its own, OpenMP's, that only it can set.)
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os
import threading
from collections.abc import Callable, Iterator
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
    with limited("blas", getter, setter, count):
        yield True


_lock = threading.Lock()
_held: dict[str, list[int]] = {}  # what -> [threads inside, count before the first]


@contextmanager
def limited(what: str, getter: Callable[[], Any], setter: Callable[[int], Any],
            count: int = 1) -> Iterator[None]:
    """Run the block with the process-wide thread count of `what` (which `setter` sets) at
    `count`, shared by threads that run such blocks at once (the first one's count holds).

    >>> setting = [4]
    >>> get, put = (lambda: setting[0]), (lambda value: setting.__setitem__(0, value))
    >>> with limited("example", get, put):
    ...     with limited("example", get, put):  # another fold's thread, say
    ...         pass
    ...     still = setting[0]  # the other leaving did not lift the limit
    >>> still, setting[0]
    (1, 4)
    """
    with _lock:
        entry = _held.get(what)
        if entry is None:
            previous = int(getter())
            setter(count)  # first, so that a setter that fails leaves nothing held
            _held[what] = [1, previous]
        else:
            entry[0] += 1
    try:
        yield
    finally:
        with _lock:
            entry = _held[what]
            entry[0] -= 1
            if entry[0] == 0:
                del _held[what]
                setter(entry[1])
