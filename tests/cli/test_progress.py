"""The terminal progress bar follows the run's events (visits done, what is running)."""

from __future__ import annotations

import io

from rich.console import Console

from lesionq.cli.progress import RichProgress


def _ev(kind, ses=None, outcome=None):
    return {
        "event": kind,
        "participant_id": "sub-01",
        "session_id": ses,
        "outcome": outcome,
        "reason": None,
        "duration_s": 1.0,
    }


def test_bar_counts_finished_visits_and_names_the_running_ones():
    bar = RichProgress(Console(file=io.StringIO(), width=120))
    with bar:
        bar.event(_ev("visit_started", "ses-01"))  # before run_started: ignored
        bar.event({"event": "run_started", "run_id": 7, "total": 3, "jobs": 1})
        bar.event(_ev("visit_started", "ses-01"))
        task = bar._progress.tasks[0]  # noqa: SLF001
        assert task.description == "running: sub-01 ses-01"
        bar.event(_ev("visit_done", "ses-01", "ok"))
        bar.event(_ev("visit_done", "ses-02", "skipped_up_to_date"))
        bar.line("sub-01: longitudinal step ok")
        assert task.completed == 2 and task.total == 3
        assert task.description == "running: -"
    assert "sub-01: longitudinal step ok" in bar.console.file.getvalue()
