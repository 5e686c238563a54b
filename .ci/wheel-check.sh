#!/usr/bin/env bash
# Wheel check (`make wheel-check`, run by .ci/run): build the wheel, install it into a fresh
# virtual environment outside the checkout, and run the installed `lesionq` from a folder
# outside the checkout with no LESIONQ_* variable set, so that it can only find its
# protocols and atlas as package data:
#   lesionq check REPO/sample_data/bids
#   lesionq run   REPO/sample_data/bids OUT participant --pipeline mesems_testing
# Fails when either fails. Everything goes to a temporary folder, removed afterwards
# (KEEP_WHEEL_CHECK=1 keeps it). pip's cache is used as usual (a rerun downloads nothing).
#
# Environment: PYTHON (the interpreter of the new environment, default python3), TORCH
# (the torch requirement installed first, as the Makefile does; default torch==2.13.0).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
torch="${TORCH:-torch==2.13.0}"
# shellcheck disable=SC2046
unset $(compgen -e | grep '^LESIONQ_' || true)
export NIPYPE_NO_ET=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

tmp="$(mktemp -d "${TMPDIR:-/tmp}/lesionq-wheel-check.XXXXXX")"
if [[ "${KEEP_WHEEL_CHECK:-0}" != 1 ]]; then
    trap 'rm -rf "$tmp"' EXIT
fi
start=$SECONDS
step() { echo "wheel-check [$((SECONDS - start)) s]: $*"; }

# 1. the wheel, built from a copy of the sources (the checkout gets no build/ folder;
#    the links of src/lesionq/data are kept: they point into pipelines/ and atlases/)
step "building the wheel in $tmp"
mkdir -p "$tmp/src"
tar -C "$repo" --exclude=__pycache__ --exclude='*.egg-info' --exclude='*.pyc' \
    -cf - pyproject.toml README.md src pipelines atlases | tar -C "$tmp/src" -xf -
"$python" -m venv "$tmp/venv"
pip=("$tmp/venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" wheel -q --no-deps -w "$tmp/dist" "$tmp/src"
wheel=("$tmp"/dist/lesionq-*.whl)

# 2. a fresh environment: torch first (the CPU build, as the Makefile installs it), then
#    the wheel with its dependencies
step "installing $torch and $(basename "${wheel[0]}")"
"${pip[@]}" install -q "$torch"
"${pip[@]}" install -q "${wheel[0]}"

# 3. run it from outside the checkout
mkdir -p "$tmp/cwd"
cd "$tmp/cwd"
where="$("$tmp/venv/bin/python" -c 'import lesionq, lesionq.config as c; print(lesionq.__file__, c.pipelines_dir(), c.atlases_dir())')"
step "installed: $where"
if grep -qF "$repo/" <<<"$where"; then
    echo "wheel-check: lesionq or its data came from the checkout, not the wheel" >&2
    exit 1
fi
step "lesionq check $repo/sample_data/bids"
"$tmp/venv/bin/lesionq" check "$repo/sample_data/bids" > "$tmp/check.txt" \
    || { cat "$tmp/check.txt"; echo "wheel-check: lesionq check failed" >&2; exit 1; }
tail -n 1 "$tmp/check.txt"
step "lesionq run $repo/sample_data/bids OUT participant --pipeline mesems_testing"
"$tmp/venv/bin/lesionq" run "$repo/sample_data/bids" "$tmp/out" participant \
    --pipeline mesems_testing
step "passed"
