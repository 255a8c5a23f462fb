"""Give the calling thread its Python name in the kernel too (``top -H``, ``ps -L``).

Python 3.11 leaves every thread named after the process, so a technician looking at
which thread uses the CPU sees ``python`` eight times. Linux only (``prctl``); elsewhere,
or when libc cannot be loaded, it does nothing. Names are cut to the kernel's 15 bytes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading

_PR_SET_NAME = 15


def name_native_thread(name: str | None = None) -> None:
    """Set the kernel name of the calling thread (default: its Python name)."""
    if not sys.platform.startswith("linux"):
        return
    text = (name or threading.current_thread().name).encode()[:15]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_NAME, ctypes.c_char_p(text), 0, 0, 0)
    except (OSError, AttributeError):  # no libc or no prctl: names are cosmetic
        return
