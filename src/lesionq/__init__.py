"""lesionq: MS lesion quantification for clinical trials.

Importing the package has no side effects: no logging set-up, no environment
changes, no network.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
