"""Terminal progress for ``lesionq run``: a rich bar with an ETA, one line per visit.

Fed by the structured events of :func:`lesionq.batch.runner.run_dataset`
(``run_started``, ``visit_started``, ``visit_done``, ``longitudinal_done``).
Used only when standard output is a terminal; otherwise the CLI prints plain
lines (logs of batch systems stay readable).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["RichProgress"]


class RichProgress:
    """A rich progress bar over the run's visits, with per-visit lines above it.

    Use as a context manager; pass :meth:`event` as ``on_event`` and
    :meth:`line` as ``progress`` to :func:`lesionq.batch.runner.run_dataset`.
    """

    def __init__(self, console: Any = None) -> None:
        self.console = console if console is not None else Console()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("visits"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._task: Any = None
        self._running: set[str] = set()

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def line(self, text: str) -> None:
        """Print one line above the bar."""
        self._progress.console.print(text, markup=False, highlight=False)

    def event(self, event: dict[str, Any]) -> None:
        """Update the bar from one progress event."""
        kind = event.get("event")
        if kind == "run_started":
            self._task = self._progress.add_task(f"run {event['run_id']}", total=event["total"])
            return
        if self._task is None:
            return
        label = " ".join(x for x in (event.get("participant_id"), event.get("session_id")) if x)
        if kind == "visit_started":
            self._running.add(label)
        elif kind == "visit_done":
            self._running.discard(label)
            self._progress.advance(self._task)
        running = ", ".join(sorted(self._running)) or "-"
        self._progress.update(self._task, description=f"running: {running}")
