"""Spreading subjects over workers: in this process, or on a dask.distributed cluster.

* ``workers == 1`` and no scheduler address: every subject runs in this process,
  one after the other (no cluster is started; what tests and small batches use).
* ``workers > 1``: a :class:`distributed.LocalCluster` of ``workers`` processes
  with one thread each, on the loopback interface.
* ``scheduler_address``: an existing cluster (``tcp://host:8786``), e.g. one
  started by dask-jobqueue on SLURM/PBS (README, "Running on a cluster").

One task per subject (:func:`lesionq.batch.subject.process_subject`); inside a
task the nipype workflows run with the Linear plugin and the heavy steps get
the job's thread budget, so nothing is nested by accident (MultiProc inside a
dask worker would fail: daemonic processes cannot have children). Workers get
``OMP_NUM_THREADS=1`` and friends from distributed's ``pre-spawn-environ``.

Progress events travel from the workers through a :class:`distributed.Queue`
named after the run.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from distributed import Client, LocalCluster, Queue, get_client, wait

from .subject import EventFn, SubjectJob, SubjectOutcome, VisitOutcome, process_subject

__all__ = ["default_workers", "run_jobs", "OutcomeFn"]

LOGGER = logging.getLogger(__name__)

#: Receives each subject's outcome as soon as it is known.
OutcomeFn = Callable[[SubjectOutcome], None]

#: Memory one worker needs for a raw 1 mm visit (measured peak ~1.4 GB, with headroom).
WORKER_MEMORY_GB = 3.0


def default_workers(
    n_subjects: int, *, cores: int | None = None, memory_gb: float | None = None
) -> int:
    """Number of local workers sized to the machine.

    ``min(cores, memory / WORKER_MEMORY_GB, n_subjects)``, at least 1.

    Parameters
    ----------
    n_subjects : int
        Subjects to process (more workers than subjects would idle).
    cores : int, optional
        CPU cores available (default: the cores this process may use).
    memory_gb : float, optional
        Physical memory (default: read from the system).

    Examples
    --------
    >>> default_workers(10, cores=2, memory_gb=24)
    2
    >>> default_workers(1, cores=16, memory_gb=64)
    1
    >>> default_workers(10, cores=16, memory_gb=8)
    2
    """
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        cores = cores or 1
    if memory_gb is None:
        try:
            memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
        except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
            memory_gb = WORKER_MEMORY_GB * cores
    by_memory = int(memory_gb // WORKER_MEMORY_GB)
    return max(1, min(cores, by_memory, n_subjects))


#: Start of the ``reason`` of every visit of a subject whose task raised (:func:`_crashed`).
TASK_FAILED = "task failed: "


def _crashed(job: SubjectJob, exc: BaseException) -> SubjectOutcome:
    """Outcome of a subject whose task raised (worker lost, database down...)."""
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
    visits = tuple(
        VisitOutcome(
            f"sub-{v.subject}",
            f"ses-{v.session}" if v.session is not None else None,
            "failed",
            {
                "status": "failed",
                "reason": f"{TASK_FAILED}{reason}",
                "error_class": type(exc).__name__,
            },
        )
        for v in job.visits
    )
    return SubjectOutcome(job.subject, visits, f"failed: {reason}", None, 0.0, 0.0)


def run_jobs(
    jobs: Sequence[SubjectJob],
    *,
    workers: int = 1,
    scheduler_address: str | None = None,
    on_event: EventFn | None = None,
    on_outcome: OutcomeFn | None = None,
) -> list[SubjectOutcome]:
    """Run every subject job; return the outcomes in job order.

    Parameters
    ----------
    jobs : sequence of SubjectJob
    workers : int
        Local worker processes (1: run here, no cluster).
    scheduler_address : str, optional
        Address of an existing dask scheduler (``workers`` is then ignored).
    on_event : callable, optional
        Receives the progress events of every job.
    on_outcome : callable, optional
        Receives each subject's outcome as it completes.

    Returns
    -------
    list of SubjectOutcome
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if not jobs:
        return []
    if scheduler_address is None and workers == 1:
        outcomes = []
        for job in jobs:
            try:
                outcome = process_subject(job, on_event)
            except Exception as exc:  # the batch goes on
                LOGGER.error("sub-%s: %s", job.subject, traceback.format_exc())
                outcome = _crashed(job, exc)
            if on_outcome:
                on_outcome(outcome)
            outcomes.append(outcome)
        return outcomes
    return _run_dask(jobs, workers, scheduler_address, on_event, on_outcome)


def _dask_task(job: SubjectJob, queue_name: str) -> SubjectOutcome:
    """Worker side: run one subject, forwarding its events to the driver's queue."""
    queue = Queue(queue_name, client=get_client())

    def emit(event: dict[str, Any]) -> None:
        try:
            queue.put(event)
        except Exception:  # pragma: no cover - progress must never fail a subject
            LOGGER.debug("progress event dropped", exc_info=True)

    return process_subject(job, emit)


def _run_dask(
    jobs: Sequence[SubjectJob],
    workers: int,
    scheduler_address: str | None,
    on_event: EventFn | None,
    on_outcome: OutcomeFn | None,
) -> list[SubjectOutcome]:
    cluster = None
    if scheduler_address is None:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            # the workers' own log handlers at WARNING (no INFO chatter from the worker
            # processes; the command line sets the levels of this process's loggers)
            silence_logs=logging.WARNING,
        )
        client = Client(cluster)
    else:
        client = Client(scheduler_address)
    queue_name = f"lesionq-progress-{jobs[0].run_id}-{os.getpid()}"
    try:
        queue = Queue(queue_name, client=client)

        def drain() -> None:
            while queue.qsize():
                event = queue.get()
                if on_event:
                    on_event(event)

        futures = {
            client.submit(
                _dask_task, job, queue_name, key=f"lesionq-sub-{job.subject}-{i}", pure=False
            ): i
            for i, job in enumerate(jobs)
        }
        outcomes: list[SubjectOutcome | None] = [None] * len(jobs)
        pending = set(futures)
        while pending:
            try:
                done, pending = wait(pending, timeout=0.5, return_when="FIRST_COMPLETED")
            except TimeoutError:  # nothing finished in this interval: forward progress events
                done = set()
            drain()
            for fut in done:
                i = futures[fut]
                try:
                    outcome = fut.result()
                except Exception as exc:  # worker lost, task raised: the batch goes on
                    LOGGER.error("sub-%s: task failed: %s", jobs[i].subject, exc)
                    outcome = _crashed(jobs[i], exc)
                outcomes[i] = outcome
                if on_outcome:
                    on_outcome(outcome)
        drain()
        return [o for o in outcomes if o is not None]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
