"""Admission for the photo pipeline: a first-come-first-served semaphore with two queues.

Every photo is decoded and pushed through detection and the descriptor inside one slot of
``server.max_concurrent_photos``; requests with several photos take a slot per photo and queue
again between photos. A request's first photo queues ahead of other requests' later photos, so an
ordinary one-photo request (identify, unlock) waits for the photos being processed, not behind the
rest of five-photo enrollments; within each queue, first come first served. ``threading.Semaphore``
is not enough: a thread that releases a slot and asks again at once (its request's next photo) would
usually win it over threads already waiting. Here a released slot is handed to the longest waiter
of the first non-empty queue.
"""
from __future__ import annotations

import threading
from collections import deque
from contextlib import contextmanager
from typing import Iterator


class Busy(Exception):
    """No slot became free within the timeout."""


class FairSemaphore:
    def __init__(self, slots: int):
        if slots < 1:
            raise ValueError(f"a semaphore needs at least one slot, got {slots}")
        self.slots = slots
        self._lock = threading.Lock()
        self._free = slots
        self._queues: tuple[deque[threading.Event], ...] = (deque(), deque())   # first photos, later photos

    def acquire(self, timeout: float | None = None, later: bool = False) -> bool:
        """Wait for a slot; ``later``: a request's second or later photo (queues behind first photos)."""
        with self._lock:
            if self._free > 0 and not any(self._queues):
                self._free -= 1
                return True
            ticket = threading.Event()
            queue = self._queues[1 if later else 0]
            queue.append(ticket)
        if ticket.wait(timeout):
            return True
        with self._lock:
            if ticket.is_set():          # handed over just as the wait ran out
                return True
            queue.remove(ticket)
            return False

    def release(self) -> None:
        with self._lock:
            for queue in self._queues:
                if queue:
                    queue.popleft().set()   # the slot passes straight to the longest waiter
                    return
            self._free += 1

    @property
    def waiting(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._queues)

    @property
    def in_use(self) -> int:
        with self._lock:
            return self.slots - self._free

    @contextmanager
    def slot(self, timeout: float | None = None, later: bool = False) -> Iterator[None]:
        if not self.acquire(timeout, later):
            raise Busy(f"no photo slot became free within {timeout:g} s")
        try:
            yield
        finally:
            self.release()


M_MMAP_THRESHOLD = -3     # glibc's mallopt parameter


def return_large_blocks(threshold: int = 1 << 20) -> bool:
    """glibc only: allocations of ``threshold`` bytes and more are mmapped, so a decoded photo's buffers go
    back to the system when freed. glibc's default raises that threshold to the size of the largest
    block freed (up to 32 MB; Pillow allocates images in 16 MB blocks), after which those buffers stay in
    the heap of the worker thread that decoded the photo, a photo's worth in each of many threads. A
    fixed threshold also turns off that adjustment. Returns whether it was set."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):     # not glibc (e.g. musl has no mallopt)
        return False
