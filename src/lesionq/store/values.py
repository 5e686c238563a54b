"""Normalisation of values arriving from pandas tables before they reach the database.

``None``, ``pd.NA``, ``pd.NaT`` and NaN become ``None`` (SQL NULL); numpy
scalars become Python scalars; timestamps become timezone-aware UTC datetimes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError

__all__ = ["missing", "scalar", "coerce", "jsonable", "utc", "session_key", "visit_keys"]


def missing(v: Any) -> bool:
    """True for ``None``, ``pd.NA``, ``pd.NaT`` and NaN (Python or numpy float).

    Examples
    --------
    >>> [missing(v) for v in (None, pd.NA, float("nan"), np.float32("nan"), 0, "")]
    [True, True, True, True, False, False]
    """
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    if isinstance(v, float | np.floating):
        return math.isnan(v)
    return False


def scalar(v: Any) -> Any:
    """Python scalar for numpy / pandas scalars; ``None`` for every kind of missing value.

    Examples
    --------
    >>> scalar(np.int64(3)), scalar(pd.NA), scalar("ses-01")
    (3, None, 'ses-01')
    """
    if missing(v):
        return None
    if isinstance(v, np.generic):
        v = v.item()
        if missing(v):
            return None
    return v


def coerce(name: str, v: Any, kind: type[Any]) -> Any:
    """``v`` as ``kind`` (int, float, bool or str), or None when missing.

    Parameters
    ----------
    name : str
        Column name, for the error message.
    v : object
        The value (Python, numpy or pandas scalar).
    kind : {int, float, bool, str}

    Raises
    ------
    InputError
        ``v`` does not fit ``kind`` (e.g. 2.5 for an integer count).

    Examples
    --------
    >>> coerce("t2_count", np.float64(4.0), int), coerce("t2_volume_mm3", np.nan, float)
    (4, None)
    """
    v = scalar(v)
    if v is None:
        return None
    try:
        if kind is int:
            if isinstance(v, bool):
                return int(v)
            f = float(v)
            if not math.isfinite(f) or f != int(f):
                raise ValueError("not an integer")
            return int(f)
        if kind is float:
            f = float(v)
            return f if math.isfinite(f) else None
        if kind is bool:
            if isinstance(v, bool):
                return v
            if isinstance(v, str) and v.lower() in ("true", "false"):
                return v.lower() == "true"
            if isinstance(v, int | float) and v in (0, 1):
                return bool(v)
            raise ValueError("not a boolean")
        if kind is str:
            if isinstance(v, datetime | date):
                return v.isoformat()
            return str(v)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"results database: column {name!r} must be {kind.__name__}, got {v!r}"
        ) from exc
    raise TypeError(f"unsupported column type {kind!r}")  # pragma: no cover


def jsonable(v: Any) -> Any:
    """A JSON-serialisable copy: NaN/NA -> None, numpy -> Python, datetimes -> ISO text."""
    if isinstance(v, Mapping):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set | frozenset):
        return [jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return [jsonable(x) for x in v.tolist()]
    v = scalar(v)
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, PurePath):
        return str(v)
    raise InputError(f"results database: value {v!r} of type {type(v).__name__} is not storable")


def utc(name: str, v: Any) -> datetime | None:
    """An aware UTC datetime from an aware datetime, epoch seconds or ISO text; None stays None."""
    v = scalar(v)
    if v is None:
        return None
    if isinstance(v, int | float) and not isinstance(v, bool):
        return datetime.fromtimestamp(float(v), tz=UTC)
    if isinstance(v, str):
        try:
            v = datetime.fromisoformat(v)
        except ValueError as exc:
            raise InputError(f"results database: {name} {v!r} is not ISO 8601") from exc
    if isinstance(v, datetime):
        if v.tzinfo is None or v.utcoffset() is None:
            raise InputError(
                f"results database: {name} {v.isoformat()} has no time zone; pass an aware "
                "datetime (e.g. datetime.now(UTC)) or epoch seconds (time.time())"
            )
        return v.astimezone(UTC)
    raise InputError(f"results database: {name} must be a datetime or epoch seconds, got {v!r}")


def session_key(session_id: str | None) -> str:
    """The visit's uniqueness key: the session label, or ``""`` without sessions."""
    return "" if session_id is None else session_id


def visit_keys(participant_id: Any, session_id: Any) -> tuple[str, str | None]:
    """Checked ``(participant_id, session_id)``: non-empty labels, session may be None.

    Raises
    ------
    InputError
        An empty or non-text participant or session label.
    """
    pid = scalar(participant_id)
    if not isinstance(pid, str) or not pid:
        raise InputError(f"results database: participant_id must be a label, got {pid!r}")
    ses = scalar(session_id)
    if ses is not None and (not isinstance(ses, str) or not ses):
        raise InputError(f"results database: session_id must be a label or None, got {ses!r}")
    return pid, ses
