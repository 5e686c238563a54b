"""PNG/SVG pictures of lesionq.qc.render."""

from __future__ import annotations

import io
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from lesionq.qc.render import (
    render_comparison,
    render_edges,
    render_lesion_mosaic,
    render_plain_mosaic,
    render_slice_png,
)

SVG = "{http://www.w3.org/2000/svg}"
AFFINE = np.array([[-2.0, 0, 0, 40.0], [0, 2.0, 0, -48.0], [0, 0, 3.0, -30.0], [0, 0, 0, 1.0]])
SHAPE = (40, 48, 20)


@pytest.fixture(scope="module")
def volumes() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    i, j, k = np.indices(SHAPE, dtype=float)
    inside = ((i - 19.5) / 17) ** 2 + ((j - 23.5) / 21) ** 2 + ((k - 9.5) / 9) ** 2 <= 1
    img = (np.where(inside, 100.0, 0.0) + rng.normal(0, 3, SHAPE) * inside).astype(np.float32)
    lab = np.zeros(SHAPE, np.int32)
    lab[10:13, 20:23, 5:7] = 3
    lab[28:31, 30:33, 5:7] = 7
    lab[20:23, 14:17, 13:15] = 11
    img[lab > 0] = 180
    return img, lab


def _texts_by_gid(svg: bytes) -> dict[str, str]:
    root = ET.fromstring(svg)
    out = {}
    for g in root.iter(f"{SVG}g"):
        gid = g.get("id", "")
        texts = ["".join(t.itertext()).strip() for t in g.iter(f"{SVG}text")]
        if texts:
            out[gid] = " ".join(texts)
    return out


def test_mosaic_png_decodes_with_expected_size(volumes) -> None:
    img, lab = volumes
    r = render_lesion_mosaic(img, AFFINE, lab, title="sub-x ses-1", fmt="png")
    with Image.open(io.BytesIO(r.data)) as im:
        assert im.format == "PNG"
        assert im.size == (r.width_px, r.height_px)
    assert r.lesion_ids == (3, 7, 11)
    assert len(r.slices) == 2  # lesions 3 and 7 share slices 5-6, lesion 11 is alone
    assert r.uncovered == ()
    # 2 panels of 240 px plus 3 gaps of 4 px
    assert r.width_px == 2 * 240 + 3 * 4


def test_mosaic_svg_has_lesion_ids_and_side_letters_on_every_panel(volumes) -> None:
    img, lab = volumes
    r = render_lesion_mosaic(img, AFFINE, lab, title="sub-x ses-1", fmt="svg")
    texts = _texts_by_gid(r.data)
    n = len(r.slices)
    for p in range(n):
        assert texts[f"p{p}-marker-l"] == "R"
        assert texts[f"p{p}-marker-r"] == "L"
    lesion_texts = {v for k, v in texts.items() if "-lesion-" in k}
    assert lesion_texts == {"3", "7", "11"}
    assert "radiological convention" in texts["footer"]
    neuro = render_lesion_mosaic(img, AFFINE, lab, convention="neurological", fmt="svg")
    nt = _texts_by_gid(neuro.data)
    assert nt["p0-marker-l"] == "L" and nt["p0-marker-r"] == "R"
    assert "neurological convention" in nt["footer"]


def test_empty_labels_give_even_slices_marked_no_lesions(volumes) -> None:
    img, _ = volumes
    r = render_lesion_mosaic(img, AFFINE, np.zeros(SHAPE, np.int32), fmt="svg", n_empty=4)
    assert len(r.slices) == 4 and r.lesion_ids == ()
    assert b"no lesions" in r.data


def test_render_slice_png(volumes) -> None:
    img, lab = volumes
    data = render_slice_png(img, AFFINE, "axial", 5, labels=lab, highlight=7)
    with Image.open(io.BytesIO(data)) as im:
        assert im.size[0] == 480 + 2 * 4
        px = np.asarray(im.convert("RGB"))
    # the highlight colour (#39ff14) is drawn for lesion 7
    assert np.any(np.all(px == (0x39, 0xFF, 0x14), axis=-1))
    for axis in ("coronal", "sagittal"):
        Image.open(io.BytesIO(render_slice_png(img, AFFINE, axis, 10, labels=lab))).verify()
    with pytest.raises(ValueError, match="same voxel grid"):
        render_slice_png(img, AFFINE, "axial", 5, labels=lab[:-1])


def test_comparison_edges_and_flicker_frames(volumes) -> None:
    img, lab = volumes
    change = np.where(lab == 11, 1, 0).astype(np.int32)
    r = render_comparison(img, img, AFFINE, change, label_text={1: "11"}, fmt="svg")
    texts = _texts_by_gid(r.data)
    assert {v for k, v in texts.items() if "-lesion-" in k} == {"11"}
    assert texts["p0-marker-l"] == "R" and texts["p1-marker-r"] == "L"
    e = render_edges(img, img, AFFINE, n_slices=4)
    assert len(e.slices) == 4
    Image.open(io.BytesIO(e.data)).verify()
    a = render_plain_mosaic(img, AFFINE, e.slices, crop=img)
    b = render_plain_mosaic(img * 0.5, AFFINE, e.slices, crop=img)
    assert (a.width_px, a.height_px) == (b.width_px, b.height_px)


def test_no_pyplot_and_no_backend_change() -> None:
    code = (
        "import sys, numpy as np, matplotlib\n"
        "before = matplotlib.rcParams._get_backend_or_none()\n"
        "from lesionq.qc import render_slice_png\n"
        "render_slice_png(np.ones((4, 4, 4)), np.eye(4), 'axial', 1)\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "assert matplotlib.rcParams._get_backend_or_none() == before\n"
        "assert matplotlib.rcParams['svg.fonttype'] == 'path'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
