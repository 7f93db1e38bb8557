"""Process-level tuning for the engine's hot path."""

from __future__ import annotations

import ctypes


def tune_malloc() -> bool:
    """Keep freed numpy buffers in the heap instead of unmapping them (glibc mallopt).

    The engine allocates and frees the same few-hundred-KB temporaries every batch; glibc's
    default unmaps blocks above 128 KB, so each batch paid for fresh pages (11 ms instead of
    under 5 ms per 100k-point batch in bench/engine.py). Returns False off glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(
        libc.mallopt(m_trim_threshold, 1 << 30))
