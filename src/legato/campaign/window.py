"""How many batch workspaces may be on disk at once, shared by the threads of a campaign.

A batch takes a place in the window before its workspace is made and gives it back once
the workspace is gone (or archived, when the user keeps workspaces), so the file-count
budget of ``--window`` batches holds while batches overlap.
"""
from __future__ import annotations

import threading


class Window:
    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.used = 0
        self.closed = False
        self._changed = threading.Condition()

    def take(self) -> bool:
        """Wait for a free place and take it; False once the window was closed (the campaign is stopping)."""
        with self._changed:
            self._changed.wait_for(lambda: self.closed or self.used < self.size)
            if self.closed:
                return False
            self.used += 1
            return True

    def hold(self) -> None:
        """A place for a workspace already on disk (a resumed batch), full window or not."""
        with self._changed:
            self.used += 1

    def give(self) -> None:
        with self._changed:
            self.used -= 1
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self.closed = True
            self._changed.notify_all()
