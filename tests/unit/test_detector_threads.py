"""Thread limits shared by folds that train side by side (`pipeline.detector.threads`)."""

from __future__ import annotations

import doctest
import threading

from pipeline.detector import threads
from pipeline.detector.threads import limited


def test_doctests() -> None:
    outcome = doctest.testmod(threads)
    assert outcome.attempted > 0 and outcome.failed == 0


def test_a_thread_leaving_does_not_lift_the_limit_under_another() -> None:
    """Fold A enters, fold B enters, A leaves while B still works: B keeps one thread,
    and the count before A is back once B leaves too."""
    setting = [4]
    seen: dict[str, int] = {}
    a_inside, a_left = threading.Event(), threading.Event()

    def get() -> int:
        return setting[0]

    def put(value: int) -> None:
        setting[0] = value

    def fold_a() -> None:
        with limited("test", get, put):
            a_inside.set()
            seen["a"] = setting[0]
            b_inside.wait(5)
        a_left.set()

    def fold_b() -> None:
        a_inside.wait(5)
        with limited("test", get, put):
            b_inside.set()
            a_left.wait(5)
            seen["b after a left"] = setting[0]

    b_inside = threading.Event()
    workers = [threading.Thread(target=fold_a), threading.Thread(target=fold_b)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)
    assert seen == {"a": 1, "b after a left": 1}
    assert setting == [4]


def test_separate_settings_do_not_share_a_limit() -> None:
    blas, torch = [2], [3]
    with limited("blas-like", lambda: blas[0], lambda v: blas.__setitem__(0, v)), \
            limited("torch-like", lambda: torch[0], lambda v: torch.__setitem__(0, v), 2):
        assert (blas, torch) == ([1], [2])
    assert (blas, torch) == ([2], [3])


def test_a_setter_that_fails_leaves_no_limit_held() -> None:
    """Else every later limit of the same setting would think another thread held it, and
    neither set nor restore anything."""
    setting = [2]

    def refuse(value: int) -> None:
        raise OSError("no such symbol")

    try:
        with limited("failing", lambda: setting[0], refuse):
            pass
    except OSError:
        pass
    with limited("failing", lambda: setting[0], lambda v: setting.__setitem__(0, v)):
        assert setting == [1]
    assert setting == [2]
