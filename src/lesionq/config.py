"""Frozen pipeline settings loaded from a protocol file in ``pipelines/``.

A protocol is a TOML file whose sections map onto keyword parameters of the
processing functions (``[segmentation]`` -> :func:`lesionq.core.segmentation.segment_lesions`,
and so on). Settings are immutable, passed down explicitly, and identified by a
hash of their canonical JSON form, which is written into every output sidecar.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.resources
import inspect
import json
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import ConfigError

__all__ = [
    "Settings",
    "load_protocol",
    "pipelines_dir",
    "atlases_dir",
    "atlas_manifest_info",
    "DEFAULT_PROTOCOL",
    "DEFAULT_ATLAS",
    "keyword_value",
]

#: Protocol used when none is named.
DEFAULT_PROTOCOL = "mesems_v1"

#: Folder name of the run-time atlas under :func:`atlases_dir`.
DEFAULT_ATLAS = "mni152_2009a"

_REQUIRED_SECTIONS = ("protocol",)


def _data_dir(name: str, env: str) -> Path:
    """Locate a run-time data folder (``pipelines`` or ``atlases``).

    Order: the environment variable ``env``; then the package data
    ``lesionq/data/<name>`` (read through :mod:`importlib.resources`), which a
    wheel holds as files and a source checkout as symbolic links to the
    top-level ``pipelines/`` and ``atlases/<atlas>/`` folders (the one copy of
    them; an editable install reads them there).
    """
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser().resolve()
    res = importlib.resources.files("lesionq") / "data" / name
    if isinstance(res, Path) and res.is_dir():
        return res
    raise ConfigError(
        f"cannot find the '{name}' folder: the package data {res} is missing (a broken "
        f"installation, or a checkout without its symbolic links); set {env} to its path"
    )


def pipelines_dir() -> Path:
    """Folder holding the protocol TOML files (``$LESIONQ_PIPELINES`` overrides)."""
    return _data_dir("pipelines", "LESIONQ_PIPELINES")


def atlases_dir() -> Path:
    """Folder holding the run-time atlases (``$LESIONQ_ATLASES`` overrides)."""
    return _data_dir("atlases", "LESIONQ_ATLASES")


def atlas_manifest_info() -> tuple[str, str] | None:
    """Path and sha256 of the run-time atlas's ``manifest.json``.

    The manifest lists the sha256 of every atlas file and
    :func:`lesionq.io.atlas.load_atlas` checks each file against it before use,
    so its own sha256 identifies the atlas a run uses. None when there is no
    manifest (the visits then fail with the reason when they load the atlas).

    Returns
    -------
    tuple of (str, str) or None
        ``(path, sha256 hex)`` of ``atlases_dir() / DEFAULT_ATLAS / "manifest.json"``.
    """
    try:
        path = atlases_dir() / DEFAULT_ATLAS / "manifest.json"
        blob = path.read_bytes()
    except (ConfigError, OSError):
        return None
    return str(path), hashlib.sha256(blob).hexdigest()


def _freeze(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in obj.items()})
    if isinstance(obj, list | tuple):
        return tuple(_freeze(v) for v in obj)
    return obj


def _thaw(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _thaw(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return [_thaw(v) for v in obj]
    return obj


def keyword_value(value: Any) -> Any:
    """A protocol value as a keyword argument: a plain, independent copy.

    Read-only mappings become dicts and tuples lists (deep-copied, so the callee
    may change them); a top-level list becomes a tuple.

    Parameters
    ----------
    value : Any
        A value of a loaded protocol section.

    Returns
    -------
    Any
    """
    plain = copy.deepcopy(_thaw(value))
    return tuple(plain) if isinstance(plain, list) else plain


@dataclass(frozen=True)
class Settings:
    """Immutable protocol settings.

    Attributes
    ----------
    name : str
        Protocol name (``[protocol] name``).
    source : str
        Path of the TOML file it came from (not part of the hash).
    sections : Mapping[str, Mapping[str, Any]]
        Read-only view of every TOML section.
    atlas_sha256 : str or None
        sha256 of the run-time atlas's ``manifest.json`` when the protocol was
        loaded (see :func:`atlas_manifest_info`); part of :meth:`hash`, so another
        atlas (``$LESIONQ_ATLASES``) makes finished visits out of date. None
        when there was no atlas.
    atlas_manifest : str or None
        Path of that manifest (not part of the hash).
    """

    name: str
    source: str
    sections: Mapping[str, Any] = field(repr=False)
    atlas_sha256: str | None = None
    atlas_manifest: str | None = field(default=None, compare=False)

    def section(self, name: str) -> Mapping[str, Any]:
        """Return one section (an empty mapping when the protocol has none)."""
        return self.sections.get(name, MappingProxyType({}))

    def dump(self) -> dict[str, Any]:
        """Plain-dict copy of the settings, JSON-serialisable."""
        return _thaw(self.sections)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as plain data (read-only mappings do not pickle): dask ships settings to workers."""
        return (
            _settings_from_plain,
            (self.name, self.source, self.dump(), self.atlas_sha256, self.atlas_manifest),
        )

    def hash(self) -> str:
        """sha256 (hex) of the canonical JSON of :meth:`dump` and :attr:`atlas_sha256`.

        Identifies a settings set: the protocol values and the atlas they run with.
        """
        body = {"atlas_manifest_sha256": self.atlas_sha256, "settings": self.dump()}
        blob = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def with_overrides(self, overrides: Mapping[str, Any]) -> Settings:
        """Return new settings with dotted-key overrides applied.

        Parameters
        ----------
        overrides : mapping
            ``{"segmentation.threshold": 0.4}``: section and key joined by a dot.
            The key must already exist in the section (typos are errors).
        """
        data = self.dump()
        for dotted, value in overrides.items():
            if "." not in dotted:
                raise ConfigError(f"override {dotted!r} must be 'section.key'")
            sec, key = dotted.split(".", 1)
            if sec not in data or key not in data[sec]:
                raise ConfigError(
                    f"override {dotted!r}: protocol {self.name!r} ({self.source}) has no such setting"
                )
            old = data[sec][key]
            if isinstance(old, bool) != isinstance(value, bool) or (
                isinstance(old, int | float) and not isinstance(value, int | float)
            ):
                raise ConfigError(
                    f"override {dotted!r}: expected a value like {old!r}, got {value!r}"
                )
            data[sec][key] = value
        return Settings(
            self.name, self.source, _freeze(data), self.atlas_sha256, self.atlas_manifest
        )

    def kwargs_for(
        self, section: str, func: Callable[..., Any], *, exclude: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """Keyword arguments for ``func`` taken from ``section``.

        Every key of the section must be a keyword parameter of ``func`` (minus
        ``exclude``, keys handled by the caller); an unknown key raises
        :class:`~lesionq.errors.ConfigError` naming the protocol file, section
        and key. Lists become tuples.
        """
        params = inspect.signature(func).parameters
        out: dict[str, Any] = {}
        for key, value in self.section(section).items():
            if key in exclude:
                continue
            if key not in params:
                raise ConfigError(
                    f"protocol {self.source}: [{section}] {key} is not a parameter of "
                    f"{func.__module__}.{func.__qualname__} (known: {sorted(params)})"
                )
            out[key] = keyword_value(value)
        return out


def _settings_from_plain(
    name: str,
    source: str,
    sections: Mapping[str, Any],
    atlas_sha256: str | None = None,
    atlas_manifest: str | None = None,
) -> Settings:
    """Rebuild :class:`Settings` from :meth:`Settings.dump` output (used by pickle)."""
    return Settings(name, source, _freeze(sections), atlas_sha256, atlas_manifest)


def load_protocol(name_or_path: str | os.PathLike[str] | None = None) -> Settings:
    """Load a pipeline protocol.

    Parameters
    ----------
    name_or_path : str or path, optional
        A protocol name (``"mesems_v1"``, looked up in :func:`pipelines_dir`) or a
        path to a TOML file. Defaults to :data:`DEFAULT_PROTOCOL`.

    Returns
    -------
    Settings
        With the sha256 of the run-time atlas's manifest (:func:`atlas_manifest_info`,
        read now: ``$LESIONQ_ATLASES`` or the bundled atlas).

    Raises
    ------
    ConfigError
        The file is missing, not valid TOML, or lacks a required section.
    """
    target = DEFAULT_PROTOCOL if name_or_path is None else os.fspath(name_or_path)
    path = Path(target)
    if path.suffix != ".toml" and not path.exists():
        path = pipelines_dir() / f"{target}.toml"
    if not path.is_file():
        available = sorted(p.stem for p in pipelines_dir().glob("*.toml"))
        raise ConfigError(
            f"protocol {target!r} not found (looked for {path}); available: {available}"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"protocol {path}: invalid TOML: {exc}") from exc
    for sec in _REQUIRED_SECTIONS:
        if sec not in data:
            raise ConfigError(f"protocol {path}: missing required section [{sec}]")
    name = data["protocol"].get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"protocol {path}: [protocol] name must be a non-empty string")
    atlas_path, atlas_sha256 = atlas_manifest_info() or (None, None)
    return Settings(name, str(path.resolve()), _freeze(data), atlas_sha256, atlas_path)
