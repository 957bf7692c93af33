"""In-process progress listeners (the CLI's progress bar listens while a batch runs)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["ProgressListener", "listening", "report"]

ProgressListener = Callable[[int, int], None]  # (domains done, domains to do)
_listeners: list[ProgressListener] = []


@contextmanager
def listening(listener: ProgressListener) -> Iterator[None]:
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def report(done: int, total: int) -> None:
    for listener in list(_listeners):
        listener(done, total)
