"""The version of lesionq, in a leaf module every layer may import.

``lesionq.__version__`` re-exports it; modules inside the package import it from
here, so that none of them imports the package ``__init__`` (whose lazy public
API sits above every layer).
"""

__version__ = "0.1.0"
