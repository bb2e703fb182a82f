"""The service's background threads: one loop each, started once, stopped by a flag its condition guards.

The batcher's network thread and the recorder's writer thread have the same life: ``start`` runs
their loop in a daemon thread unless one runs already; ``stop`` sets the stop flag under the loop's
condition (the loop waits on it, so it wakes at once), then joins. The loop finishes what is
queued when it sees the flag, so a stop never drops work; it reads :attr:`LoopThread.stopping`
while holding ``cond``.
"""

from __future__ import annotations

import threading
from typing import Callable


class LoopThread:
    """One daemon thread running ``loop()`` until :meth:`stop`.

    Parameters
    ----------
    loop : callable
        The thread's body; it returns once it sees :attr:`stopping` (read under ``cond``) and is done.
    cond : threading.Condition
        The condition the loop waits on; :meth:`stop` notifies it.
    name : str
        The thread's name (shown by debuggers and ``py-spy``).
    """

    def __init__(self, loop: Callable[[], None], cond: threading.Condition, name: str):
        self.loop = loop
        self.cond = cond
        self.name = name
        self.stopping = False
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> bool:
        """Start the thread unless it runs already; whether it was started now."""
        if self._thread is not None:
            return False
        self.stopping = False
        self._thread = threading.Thread(target=self.loop, name=self.name, daemon=True)
        self._thread.start()
        return True

    def stop(self, timeout: float | None) -> None:
        """Tell the loop to finish (under ``cond``, waking it), then wait up to ``timeout`` seconds for it."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
