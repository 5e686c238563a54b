"""lesionq: MS lesion quantification for clinical trials.

Importing the package has no side effects: no logging set-up, no environment
changes, no network. The public API is loaded lazily on first use.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__

__all__ = [
    "__version__",
    "segment_t2",
    "compare_visits",
    "run",
    "check",
    "load_protocol",
    "T2Result",
]

_API = {"segment_t2", "compare_visits", "run", "check", "T2Result"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from . import api  # lazy: PEP 562, import lesionq loads no nipype, dask or SimpleITK

        return getattr(api, name)
    if name == "load_protocol":
        from .steps.registry import load_protocol  # lazy: PEP 562, as lesionq.api

        return load_protocol
    raise AttributeError(f"module 'lesionq' has no attribute {name!r}")
