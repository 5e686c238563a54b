"""Packaging: the wheel holds the run-time data, builds without deprecation warnings,
and declares only dependencies that lesionq uses.

The wheel is built from a copy of the source tree (``pip wheel --no-build-isolation``:
offline, with the setuptools of this environment); ``make wheel-check`` (CI) goes on to
install it in a fresh environment and run it.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[Path, str]:
    """(wheel path, build log) of the package built from a copy of this checkout."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed in this environment (needed to build)")
    version = importlib.metadata.version("setuptools")
    if int(version.split(".")[0]) < 77:
        pytest.skip(f"setuptools {version} here; the build needs >= 77 (SPDX licence)")
    root = tmp_path_factory.mktemp("wheel")
    tree = root / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, tree / name)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in ("src", "pipelines", "atlases"):
        # symlinks=True: the package data are links to pipelines/ and atlases/<name>/
        shutil.copytree(REPO / name, tree / name, symlinks=True, ignore=skip)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation"]
        + ["--no-index", "-w", str(root / "dist"), "."],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    (path,) = (root / "dist").glob("lesionq-*.whl")
    return path, log


def test_the_wheel_holds_the_protocols_and_atlas_byte_for_byte(wheel):
    path, _ = wheel
    with zipfile.ZipFile(path) as zf:
        packaged = {
            n.removeprefix("lesionq/data/"): zf.read(n)
            for n in zf.namelist()
            if n.startswith("lesionq/data/") and not n.endswith("/")
        }
    top = {f"pipelines/{p.name}": p.read_bytes() for p in (REPO / "pipelines").glob("*.toml")}
    for manifest in (REPO / "atlases").glob("*/manifest.json"):
        for f in manifest.parent.iterdir():
            top[f"atlases/{manifest.parent.name}/{f.name}"] = f.read_bytes()
    assert "atlases/mni152_2009a/manifest.json" in top
    assert sorted(packaged) == sorted(top)
    for name, blob in top.items():
        assert packaged[name] == blob, name


def test_the_wheel_holds_the_review_app_static_files(wheel):
    """The vendored NiiVue build (checksummed by its MANIFEST.json) and the viewer script."""
    import hashlib
    import json

    path, _ = wheel
    static = "lesionq/review/static/"
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read(static + "niivue/MANIFEST.json"))
        for name, sha in manifest["files"].items():
            assert hashlib.sha256(zf.read(static + "niivue/" + name)).hexdigest() == sha, name
    assert static + "review.js" in names
    assert "lesionq/review/templates/_niivue.html" in names


def test_the_build_prints_no_deprecation_warning(wheel):
    _, log = wheel
    deprecations = [ln for ln in log.splitlines() if re.search(r"deprecat", ln, re.IGNORECASE)]
    assert deprecations == [], "\n".join(deprecations)


def test_the_wheel_metadata_has_an_spdx_licence_and_the_declared_dependencies(wheel):
    path, _ = wheel
    with zipfile.ZipFile(path) as zf:
        (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        text = zf.read(meta).decode()
    assert "License-Expression: Apache-2.0" in text.splitlines()
    required = {
        _norm(re.match(r"[A-Za-z0-9._-]+", ln.removeprefix("Requires-Dist: ")).group())
        for ln in text.splitlines()
        if ln.startswith("Requires-Dist: ") and "extra ==" not in ln
    }
    assert required == {
        _norm(re.match(r"[A-Za-z0-9._-]+", d).group()) for d in PYPROJECT["project"]["dependencies"]
    }


#: Dependencies used without an import of theirs in lesionq, and the text in src/ that
#: shows the use.
INDIRECT = {
    "psycopg": "postgresql+psycopg",  # SQLAlchemy's PostgreSQL driver
    "pyarrow": 'engine="pyarrow"',  # pandas' parquet engine (export)
    "dcm2niix": 'shutil.which("dcm2niix"',  # the converter binary of DICOM ingest
    "python-multipart": "await request.form()",  # starlette's form parsing (review app)
}


def test_every_declared_dependency_is_used():
    sources = sorted((REPO / "src" / "lesionq").rglob("*.py"))
    imported: set[str] = set()
    text = ""
    for path in sources:
        code = path.read_text(encoding="utf-8")
        text += code
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.Import):
                imported.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    modules_of: dict[str, set[str]] = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            modules_of.setdefault(_norm(dist), set()).add(module)
    unused = []
    for requirement in PYPROJECT["project"]["dependencies"]:
        dist = _norm(re.match(r"[A-Za-z0-9._-]+", requirement).group())
        if dist in INDIRECT:
            assert INDIRECT[dist] in text, f"{dist}: its use {INDIRECT[dist]!r} is gone"
        elif not modules_of.get(dist, {dist.replace("-", "_")}) & imported:
            unused.append(requirement)
    assert unused == [], f"declared in pyproject.toml but never imported by lesionq: {unused}"
