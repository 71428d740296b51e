"""One executor for many studies: the batches of a campaign share its workers (or pilots).

Each study gets a view with a key space of its own: its instance ids travel as
``namespace << 32 | id`` (the conductor adds the view's ``base`` to the keys it submits and
takes it off the events' keys: no copy of a task or an event per instance), so an event is
routed back to the conductor of the study it belongs to, and a conductor never sees another
batch's instances. The throttle (``-t``) holds for
the whole campaign, not per batch. A view's ``slots`` is the executor's whole capacity, taken
when the executor was made: a batch opened while others fill every slot must still size its
multi-core instances to the machine, not to what happens to be free at that moment.
"""
from __future__ import annotations

from typing import Iterable, Protocol

from legato.execute import Queued
from legato.execute.local import Finished, Started, Task

SHIFT = 32
MASK = (1 << SHIFT) - 1


class Executor(Protocol):
    @property
    def free_slots(self) -> int: ...

    def submit(self, task: Task) -> None: ...

    def poll(self, timeout: float | None) -> list: ...

    def cancel(self, keys: Iterable[int] | None = None) -> None: ...


class SharedExecutor:
    """An executor's capacity shared by several studies, each through ``view(namespace)``."""

    def __init__(self, executor: Executor, throttle: int = 0) -> None:
        self.executor = executor
        self.throttle = throttle
        self.slots = executor.free_slots
        self.in_flight = 0

    @property
    def free_slots(self) -> int:
        free = self.executor.free_slots
        return min(free, self.throttle - self.in_flight) if self.throttle else free

    def view(self, namespace: int) -> StudyView:
        return StudyView(self, namespace << SHIFT)

    def submit(self, task: Task) -> None:
        self.executor.submit(task)
        self.in_flight += 1

    def poll(self, timeout: float | None) -> list[tuple[int, Started | Finished | Queued]]:
        """Events as (namespace, event)."""
        routed = []
        for event in self.executor.poll(timeout):
            if isinstance(event, Finished):
                self.in_flight -= 1
            routed.append((event.key >> SHIFT, event))
        return routed

    def cancel(self, keys: Iterable[int] | None = None) -> None:
        self.executor.cancel(keys)


class StudyView:
    """What a conductor needs of an executor, for the instances of one namespace."""

    def __init__(self, shared: SharedExecutor, base: int) -> None:
        self.shared = shared
        self.base = base
        self.slots = shared.slots

    @property
    def free_slots(self) -> int:
        return self.shared.free_slots

    def submit(self, task: Task) -> None:
        """``task.key`` holds ``base`` already."""
        self.shared.submit(task)

    def cancel(self, keys: Iterable[int] | None = None) -> None:
        if keys is None:
            raise ValueError("a study's view cancels the keys it names; the shared executor cancels all")
        self.shared.cancel(keys)
