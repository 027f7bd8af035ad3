"""Counting the scheduler's steps of a task: each one follows a task switch."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio


class TaskSteps(trio.abc.Instrument):
    """How many times the scheduler has run one task (since this was added)."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.count = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.count += 1


@contextmanager
def steps_of_this_task() -> Iterator[TaskSteps]:
    """Count the steps of the calling task inside the block: 0 means it never yielded."""
    steps = TaskSteps(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(steps)
    try:
        yield steps
    finally:
        trio.lowlevel.remove_instrument(steps)
