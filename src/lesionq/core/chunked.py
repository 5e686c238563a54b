"""Chunked (dask.array) twins of the heavy volume operations.

Every function here returns exactly what its numpy twin returns, for any
chunking; tests compare them over several chunk shapes (single slices, odd
sizes, chunks smaller than the filter radius).

Parallelism: the graph runs on dask's local **threaded** scheduler,
``dask.compute(..., scheduler="threads", num_workers=num_workers)``; no
distributed ``Client`` is ever created here (a node hands down its thread
count). Results come back as numpy arrays.

Twins
-----
=====================================  =============================================
chunked                                numpy twin
=====================================  =============================================
:func:`label_components_chunked`       :func:`lesionq.core.components.label_components`
:func:`label_lesions_chunked`          :func:`lesionq.core.components.label_lesions`
:func:`gaussian_filter_chunked`        ``scipy.ndimage.gaussian_filter``
:func:`gaussian_filter_slabs`          ``scipy.ndimage.gaussian_filter`` (separable, no halo)
:func:`median_filter_chunked`          ``scipy.ndimage.median_filter``
:func:`uniform_filter_chunked`         ``scipy.ndimage.uniform_filter``
=====================================  =============================================

Labelling across chunks
-----------------------
1. Each chunk is labelled on its own (scipy.ndimage.label, one threaded task
   per chunk) and its labels are made globally unique by adding
   ``chunk_number * chunk_capacity``; each task also returns the chunk's faces,
   label sizes and first-voxel indices.
2. For every chunk border, the two whole-volume voxel planes on either side
   (assembled from the chunks' faces) are compared with every in-plane offset
   the connectivity allows; each pair of touching provisional labels is an
   equivalence. (Because the planes span the whole volume, components that
   meet only at a chunk edge or corner are joined too.)
3. The equivalences are merged with a union-find (connected components of the
   equivalence graph, scipy.sparse.csgraph).
4. Merged components are renumbered in the canonical order of
   :mod:`lesionq.core.components` (descending size, then first voxel in C
   order) from per-chunk sizes and first-voxel indices, and the final labels
   are written chunk by chunk.

Filters
-------
``map_overlap`` with a halo (depth) of at least the kernel radius on every
axis and ``boundary="none"``: chunk borders inside the volume see the true
neighbours, and the volume's outer faces get scipy's own ``mode`` handling,
exactly as in the numpy call. dask rechunks on its own when a chunk is
thinner than the halo.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..errors import ConfigError, InputError
from .components import (
    canonical_order,
    check_connectivity,
    check_mask,
    structure_for,
)
from .units import min_voxels_for_mm3

__all__ = [
    "label_components_chunked",
    "label_lesions_chunked",
    "gaussian_filter_chunked",
    "gaussian_filter_slabs",
    "median_filter_chunked",
    "uniform_filter_chunked",
]

log = logging.getLogger(__name__)


def _check_workers(num_workers: int) -> int:
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 1:
        raise ConfigError(f"num_workers must be an integer >= 1, got {num_workers!r}")
    return num_workers


def _as_dask(array: Any, chunks: Any, *, name: str) -> da.Array:
    """Wrap a numpy array (or rechunk a dask array) with ``chunks``."""
    if isinstance(array, da.Array):
        arr = array if chunks is None else array.rechunk(chunks)
    else:
        a = np.asarray(array)
        if chunks is None:
            raise ConfigError(f"{name}: chunks must be given for a numpy input")
        arr = da.from_array(a, chunks=chunks)
    if arr.ndim != 3:
        raise InputError(f"{name}: expected a 3-D array, got shape {arr.shape}")
    return arr


def _compute(*objs: Any, num_workers: int) -> tuple[Any, ...]:
    return dask.compute(*objs, scheduler="threads", num_workers=num_workers)


# --------------------------------------------------------------------------- labelling


def _label_block(
    block: np.ndarray,
    bid: int,
    capacity: int,
    structure: np.ndarray,
    origin: tuple[int, int, int],
    shape: tuple[int, int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Label one chunk and summarise it.

    Returns the chunk's labels (offset by ``bid * capacity`` so they are unique
    over the volume; 0 stays 0), its provisional label ids, their voxel counts,
    the global C-order flat index of each one's first voxel, and the chunk's
    low and high faces on each axis (2-D label planes).
    """
    m = check_mask(block, name="mask chunk")
    lab, _ = ndi.label(m, structure=structure)
    lab = lab.astype(np.int64)
    flat = lab.ravel()
    nz = np.flatnonzero(flat)
    if nz.size:
        flat[nz] += bid * capacity
        uniq, first_pos, counts = np.unique(flat[nz], return_index=True, return_counts=True)
        local = np.unravel_index(nz[first_pos], lab.shape)
        glob = tuple(np.asarray(c, dtype=np.int64) + o for c, o in zip(local, origin, strict=True))
        first = np.ravel_multi_index(glob, shape).astype(np.int64)
    else:
        uniq = counts = first = np.zeros(0, dtype=np.int64)
    lo = [lab[0, :, :], lab[:, 0, :], lab[:, :, 0]]
    hi = [lab[-1, :, :], lab[:, -1, :], lab[:, :, -1]]
    return lab, uniq.astype(np.int64), counts.astype(np.int64), first, lo, hi


def _plane_pairs(a: np.ndarray, b: np.ndarray, connectivity: int) -> np.ndarray:
    """Pairs (label in a, label in b) of touching voxels across two adjacent planes.

    ``a`` and ``b`` are 2-D label planes at positions p-1 and p along one axis.
    The step between the planes is one axis unit; the in-plane offsets allowed
    are those whose total (step + offset) stays within the connectivity.
    """
    offsets = [(0, 0)]
    if connectivity >= 18:
        offsets += [(1, 0), (-1, 0), (0, 1), (0, -1)]
    if connectivity == 26:
        offsets += [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    out = []
    n0, n1 = a.shape
    for d0, d1 in offsets:
        # a[i, j] with b[i + d0, j + d1]
        sa = (slice(max(0, -d0), n0 - max(0, d0)), slice(max(0, -d1), n1 - max(0, d1)))
        sb = (slice(max(0, d0), n0 - max(0, -d0)), slice(max(0, d1), n1 - max(0, -d1)))
        la, lb = a[sa], b[sb]
        both = (la > 0) & (lb > 0)
        if both.any():
            out.append(np.stack([la[both], lb[both]], axis=1))
    if not out:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(out).astype(np.int64), axis=0)


def _border_pairs(
    faces_lo: dict, faces_hi: dict, nblocks: tuple[int, int, int], connectivity: int
) -> np.ndarray:
    """Equivalences across every internal chunk border, from the chunks' faces.

    For a border along axis ``a`` between chunk rows ``b`` and ``b + 1``, the
    whole-volume planes on either side are assembled from the chunks' high and
    low faces, so contacts at chunk edges and corners are seen too.
    """
    pairs = []
    for axis in range(3):
        others = [ax for ax in range(3) if ax != axis]
        for b in range(nblocks[axis] - 1):

            def plane(faces: dict, row: int, axis: int = axis, others: list = others) -> np.ndarray:
                grid = []
                for u in range(nblocks[others[0]]):
                    line = []
                    for v in range(nblocks[others[1]]):
                        key = [0, 0, 0]
                        key[axis], key[others[0]], key[others[1]] = row, u, v
                        line.append(faces[tuple(key)][axis])
                    grid.append(line)
                return np.block(grid)

            pairs.append(_plane_pairs(plane(faces_hi, b), plane(faces_lo, b + 1), connectivity))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    return np.concatenate(pairs)


def _chunked_canonical(
    mask: Any, *, chunks: Any, connectivity: int, num_workers: int, min_voxels: int
) -> tuple[np.ndarray, int]:
    conn = check_connectivity(connectivity)
    nw = _check_workers(num_workers)
    darr = _as_dask(mask, chunks, name="mask")
    shape = (int(darr.shape[0]), int(darr.shape[1]), int(darr.shape[2]))
    nblocks = (len(darr.chunks[0]), len(darr.chunks[1]), len(darr.chunks[2]))
    capacity = int(max(math.prod(c) for c in _chunk_shapes(darr.chunks))) + 1
    if math.prod(nblocks) * capacity >= np.iinfo(np.int64).max:  # pragma: no cover
        raise InputError(f"mask: {nblocks} chunks of {capacity} voxels overflow int64 labels")
    structure = structure_for(conn)

    # 1. label every chunk (threads), with its statistics and faces
    keys = [
        (a, b, c) for a in range(nblocks[0]) for b in range(nblocks[1]) for c in range(nblocks[2])
    ]
    origins = _chunk_origins(darr.chunks)
    blocks = darr.to_delayed().ravel()
    tasks = [
        dask.delayed(_label_block, pure=True)(blk, bid, capacity, structure, org, shape)
        for bid, (blk, org) in enumerate(zip(blocks, origins, strict=True))
    ]
    (results,) = _compute(tasks, num_workers=nw)

    ids = np.concatenate([r[1] for r in results])
    if ids.size == 0:
        return np.zeros(shape, dtype=np.int32), 0
    sizes = np.concatenate([r[2] for r in results])
    firsts = np.concatenate([r[3] for r in results])
    order = np.argsort(ids, kind="stable")
    ids, sizes, firsts = ids[order], sizes[order], firsts[order]

    # 2. equivalences across chunk borders
    faces_lo = {k: r[4] for k, r in zip(keys, results, strict=True)}
    faces_hi = {k: r[5] for k, r in zip(keys, results, strict=True)}
    pairs = _border_pairs(faces_lo, faces_hi, nblocks, conn)

    # 3. union-find: connected components of the equivalence graph
    k = ids.size
    if pairs.size:
        ia = np.searchsorted(ids, pairs[:, 0])
        ib = np.searchsorted(ids, pairs[:, 1])
        graph = coo_matrix((np.ones(ia.size, dtype=np.int8), (ia, ib)), shape=(k, k))
        _, root = connected_components(graph, directed=False)
    else:
        root = np.arange(k)
    nroot = int(root.max()) + 1
    rsize = np.bincount(root, weights=sizes, minlength=nroot).astype(np.int64)
    rfirst = np.full(nroot, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(rfirst, root, firsts)

    # 4. canonical renumbering (size desc, first voxel asc) and the size rule
    keep = np.flatnonzero(rsize >= min_voxels)
    ordered = keep[canonical_order(rsize[keep], rfirst[keep])]
    final_of_root = np.zeros(nroot, dtype=np.int32)
    final_of_root[ordered] = np.arange(1, ordered.size + 1, dtype=np.int32)
    final_of_id = final_of_root[root]
    n = int(ordered.size)
    log.debug(
        "chunked labelling: %d chunks, %d provisional labels, %d equivalences, %d kept",
        len(keys),
        k,
        int(pairs.shape[0]),
        n,
    )

    out = np.zeros(shape, dtype=np.int32)
    relabel = [dask.delayed(_apply_lut, pure=True)(r[0], ids, final_of_id) for r in results]
    (done,) = _compute(relabel, num_workers=nw)
    for org, res in zip(origins, done, strict=True):
        out[tuple(slice(o, o + s) for o, s in zip(org, res.shape, strict=True))] = res
    return out, n


def _apply_lut(block: np.ndarray, ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.zeros(block.shape, dtype=np.int32)
    nz = block > 0
    if nz.any():
        out[nz] = values[np.searchsorted(ids, block[nz])]
    return out


def _chunk_shapes(chunks: tuple[tuple[int, ...], ...]) -> list[tuple[int, ...]]:
    return [(a, b, c) for a in chunks[0] for b in chunks[1] for c in chunks[2]]


def _chunk_origins(chunks: tuple[tuple[int, ...], ...]) -> list[tuple[int, int, int]]:
    starts = [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(int).tolist() for c in chunks]
    return [(a, b, c) for a in starts[0] for b in starts[1] for c in starts[2]]


def label_components_chunked(
    mask: Any,
    *,
    chunks: Any,
    connectivity: int = 26,
    num_workers: int = 1,
) -> tuple[np.ndarray, int]:
    """Chunked twin of :func:`lesionq.core.components.label_components`.

    Parameters
    ----------
    mask : array_like or dask.array.Array, shape (X, Y, Z)
        Binary mask (bool, or 0/1 values).
    chunks : dask chunks specification
        e.g. ``(64, 64, 16)``, ``(1, -1, -1)`` or ``"auto"``; a dask input is
        rechunked to it (``None`` keeps a dask input's own chunks).
    connectivity : {6, 18, 26}
    num_workers : int
        Threads of the local threaded scheduler.

    Returns
    -------
    labels : ndarray of int32, shape (X, Y, Z)
        Identical to the numpy twin: canonical numbering (largest first, ties
        by first voxel in C order).
    n : int

    Examples
    --------
    >>> m = np.zeros((4, 1, 1), dtype=bool)
    >>> m[[0, 1, 3], 0, 0] = True
    >>> lab, n = label_components_chunked(m, chunks=(1, 1, 1))
    >>> lab[:, 0, 0].tolist(), n
    ([1, 1, 0, 2], 2)
    """
    return _chunked_canonical(
        mask, chunks=chunks, connectivity=connectivity, num_workers=num_workers, min_voxels=1
    )


def label_lesions_chunked(
    mask: Any,
    voxel_size_mm: Sequence[float],
    *,
    min_volume_mm3: float,
    chunks: Any,
    connectivity: int = 26,
    num_workers: int = 1,
) -> tuple[np.ndarray, int]:
    """Chunked twin of :func:`lesionq.core.components.label_lesions`.

    Same parameters and result as the numpy twin (components with volume
    >= ``min_volume_mm3`` kept, inclusive), plus ``chunks`` and
    ``num_workers`` as in :func:`label_components_chunked`.
    """
    try:
        min_vox = min_voxels_for_mm3(float(min_volume_mm3), voxel_size_mm)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"label_lesions_chunked: min_volume_mm3={min_volume_mm3!r} / "
            f"voxel_size_mm={voxel_size_mm!r}: {exc}"
        ) from exc
    return _chunked_canonical(
        mask,
        chunks=chunks,
        connectivity=connectivity,
        num_workers=num_workers,
        min_voxels=min_vox,
    )


# --------------------------------------------------------------------------- filters


def _per_axis(value: float | Sequence[float], name: str) -> tuple[float, float, float]:
    vals = np.broadcast_to(np.asarray(value, dtype=float), (3,))
    if not np.all(np.isfinite(vals)) or np.any(vals < 0):
        raise ConfigError(
            f"{name} must be finite and >= 0 (one value or one per axis), got {value!r}"
        )
    return (float(vals[0]), float(vals[1]), float(vals[2]))


def _sizes(size: int | Sequence[int], name: str) -> tuple[int, int, int]:
    vals = np.broadcast_to(np.asarray(size), (3,))
    if not np.issubdtype(vals.dtype, np.integer) or np.any(vals < 1):
        raise ConfigError(f"{name} must be integers >= 1 (one value or one per axis), got {size!r}")
    return (int(vals[0]), int(vals[1]), int(vals[2]))


def _overlap(
    image: Any,
    func: Any,
    depth: Sequence[int],
    *,
    chunks: Any,
    num_workers: int,
    **kwargs: Any,
) -> np.ndarray:
    nw = _check_workers(num_workers)
    arr = _as_dask(image, chunks, name="image")
    # an axis shorter than its halo is kept whole (one chunk, no halo): exact as well
    whole = {a: -1 for a in range(3) if depth[a] >= arr.shape[a] and len(arr.chunks[a]) > 1}
    halo = tuple(0 if depth[a] >= arr.shape[a] else int(depth[a]) for a in range(3))
    if whole:
        arr = arr.rechunk(whole)
    out = arr.map_overlap(func, depth=halo, boundary="none", dtype=arr.dtype, **kwargs)
    (res,) = _compute(out, num_workers=nw)
    return np.asarray(res)


def gaussian_filter_chunked(
    image: Any,
    sigma_vox: float | Sequence[float],
    *,
    chunks: Any,
    num_workers: int = 1,
    truncate: float = 4.0,
    mode: str = "reflect",
) -> np.ndarray:
    """Chunked twin of ``scipy.ndimage.gaussian_filter(image, sigma_vox, mode=mode, truncate=truncate)``.

    Parameters
    ----------
    image : array_like or dask.array.Array, shape (X, Y, Z)
        Float image (the output has the input's dtype, as in scipy).
    sigma_vox : float or sequence of 3 float
        Standard deviation in **voxels** per axis (divide a sigma in mm by
        ``voxel_size_mm`` to get it).
    chunks : dask chunks specification
    num_workers : int
    truncate : float
        Kernel radius = ``int(truncate * sigma + 0.5)`` voxels, as in scipy;
        the halo equals that radius on each axis.
    mode : str
        scipy boundary mode, applied at the volume's outer faces.

    Returns
    -------
    ndarray, shape (X, Y, Z)
        Bit-identical to the scipy result.

    Examples
    --------
    >>> x = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    >>> y = gaussian_filter_chunked(x, 1.0, chunks=(1, 2, 5))
    >>> bool(np.array_equal(y, ndi.gaussian_filter(x, 1.0)))
    True
    """
    sig = _per_axis(sigma_vox, "sigma_vox")
    if not (math.isfinite(truncate) and truncate > 0):
        raise ConfigError(f"truncate must be > 0, got {truncate!r}")
    depth = tuple(int(truncate * s + 0.5) for s in sig)
    return _overlap(
        image,
        ndi.gaussian_filter,
        depth,
        chunks=chunks,
        num_workers=num_workers,
        sigma=sig,
        mode=mode,
        truncate=truncate,
    )


def gaussian_filter_slabs(
    image: Any,
    sigma_vox: float | Sequence[float],
    *,
    num_workers: int = 1,
    n_slabs: int | None = None,
    truncate: float = 4.0,
    mode: str = "reflect",
) -> np.ndarray:
    """Twin of ``scipy.ndimage.gaussian_filter`` for wide kernels: one 1-D pass per axis, in slabs.

    The Gaussian is separable, and scipy applies it as one 1-D filter per axis
    in turn (axis 0, 1, 2), each written into an array of the input's dtype.
    This function makes the same three passes; each pass runs as dask.array
    blocks cut along an axis *other* than the filtered one, so no block needs a
    halo however wide the kernel (a 10 mm sigma has a 40-voxel radius, where
    :func:`gaussian_filter_chunked` would filter most of the volume twice).

    Parameters
    ----------
    image : array_like, shape (X, Y, Z)
        Float image (the output has its dtype, as in scipy).
    sigma_vox : float or sequence of 3 float
        Standard deviation in voxels per axis.
    num_workers : int
        Threads of dask's local threaded scheduler.
    n_slabs : int, optional
        Blocks per pass; default ``2 * num_workers``.
    truncate : float
        Kernel radius = ``int(truncate * sigma + 0.5)`` voxels, as in scipy.
    mode : str
        scipy boundary mode.

    Returns
    -------
    ndarray, shape (X, Y, Z)
        Bit-identical to the scipy result.

    Examples
    --------
    >>> x = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    >>> y = gaussian_filter_slabs(x, 1.0, num_workers=2)
    >>> bool(np.array_equal(y, ndi.gaussian_filter(x, 1.0)))
    True
    """
    sig = _per_axis(sigma_vox, "sigma_vox")
    nw = _check_workers(num_workers)
    if not (math.isfinite(truncate) and truncate > 0):
        raise ConfigError(f"truncate must be > 0, got {truncate!r}")
    n = 2 * nw if n_slabs is None else int(n_slabs)
    if n < 1:
        raise ConfigError(f"n_slabs must be >= 1, got {n_slabs!r}")
    out = np.asarray(image)
    if out.ndim != 3:
        raise InputError(f"image must be 3-D, got shape {out.shape}")
    for axis in range(3):
        # cut along the longest of the two other axes: blocks are whole lines of `axis`
        other = max((a for a in range(3) if a != axis), key=lambda a: out.shape[a])
        chunks = [-1, -1, -1]
        chunks[other] = max(1, math.ceil(out.shape[other] / n))
        arr = da.from_array(out, chunks=tuple(chunks))
        step = arr.map_blocks(
            ndi.gaussian_filter1d,
            sigma=sig[axis],
            axis=axis,
            mode=mode,
            truncate=truncate,
            dtype=out.dtype,
        )
        (res,) = _compute(step, num_workers=nw)
        out = np.asarray(res)
    return out


def median_filter_chunked(
    image: Any,
    size: int | Sequence[int],
    *,
    chunks: Any,
    num_workers: int = 1,
    mode: str = "reflect",
) -> np.ndarray:
    """Chunked twin of ``scipy.ndimage.median_filter(image, size=size, mode=mode)``.

    ``size`` is the box edge in voxels (one value or one per axis); the halo is
    ``size // 2`` voxels per axis.
    """
    sz = _sizes(size, "size")
    depth = tuple(s // 2 for s in sz)
    return _overlap(
        image, ndi.median_filter, depth, chunks=chunks, num_workers=num_workers, size=sz, mode=mode
    )


def uniform_filter_chunked(
    image: Any,
    size: int | Sequence[int],
    *,
    chunks: Any,
    num_workers: int = 1,
    mode: str = "reflect",
) -> np.ndarray:
    """Chunked twin of ``scipy.ndimage.uniform_filter(image, size=size, mode=mode)``.

    ``size`` is the box edge in voxels; the halo is ``size // 2`` voxels per
    axis (covers even sizes, whose box is one voxel longer on the low side).
    """
    sz = _sizes(size, "size")
    depth = tuple(s // 2 for s in sz)
    return _overlap(
        image, ndi.uniform_filter, depth, chunks=chunks, num_workers=num_workers, size=sz, mode=mode
    )
