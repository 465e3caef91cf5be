"""Clean stops: SIGTERM (a farm's pre-emption) or Ctrl-C end the current step instead of killing it."""
from __future__ import annotations

import signal
import threading


class StopRequests:
    """While active, SIGTERM and SIGINT ask for a clean stop (``signal`` holds the first one's number);
    a second signal raises KeyboardInterrupt at once. The previous handlers are put back on exit. Off the
    main thread, where Python cannot install handlers, it does nothing."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __enter__(self) -> "StopRequests":
        self.signal, self._previous = None, {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal else ""
