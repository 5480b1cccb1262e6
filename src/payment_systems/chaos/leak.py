"""An injectable memory leak, for the "memory leak during peak traffic" chaos scenario.

Set ``CHAOS_LEAK_FILE`` to a path when starting the API. While that file
exists, every payment request keeps a buffer of the size written in it (in
KiB, default 256) for the life of the worker, the shape of a real leak (a
cache with no bound, a list of every request). Deleting the file stops the
leak but frees nothing: only recycling the worker does, which is the point
(`payment_systems.api.watchdog`). Nothing happens when the variable is unset.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_KIB = 256


class Leak:
    """Holds what it leaked; `maybe_leak` is called once per payment request."""

    def __init__(self, switch: str | Path) -> None:
        self.switch = Path(switch)
        self.kept: list[bytearray] = []

    def maybe_leak(self) -> None:
        try:
            text = self.switch.read_text().strip()
        except OSError:
            return  # no file: no leak
        kib = int(text) if text.isdigit() else DEFAULT_KIB
        # filled, not zeroed: zero pages from calloc are not resident until touched
        self.kept.append(bytearray(b"\x01") * (kib * 1024))

    @property
    def leaked_bytes(self) -> int:
        return sum(len(b) for b in self.kept)
