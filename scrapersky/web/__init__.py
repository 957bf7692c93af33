"""Fetching homepages: the network edge, guarded (addresses, deadlines, sizes)."""

from .fetch import Fetcher, Page
from .guard import Reach

__all__ = ["Fetcher", "Page", "Reach"]
