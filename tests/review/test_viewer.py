"""The NiiVue viewer's routes, decisions saved in place (JSON), and adding a lesion.

Vendored NiiVue: pinned and checksummed (``static/niivue/MANIFEST.json``), served
only to a session. Volumes by whitelisted name only. Added lesions: grown on the
FLAIR, stored, audited, counted, blinded, and adjudicated (``lesionq.review.added``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from review_helpers import MISSED, add_missed_lesion, login, result_id

from lesionq.io.derivatives import output_path
from lesionq.review import auth
from lesionq.review import state as rs
from lesionq.review.added import AddedLesion, encode_mask, resolve_added
from lesionq.review.decisions import Decision, LesionKey
from lesionq.review.viewer import NIIVUE_DIR, STATIC_DIR, static_files

NIIVUE_VERSION = "0.69.0"


def test_vendored_niivue_matches_its_manifest() -> None:
    manifest = json.loads((NIIVUE_DIR / "MANIFEST.json").read_text(encoding="utf-8"))
    assert manifest["name"] == "@niivue/niivue" and manifest["version"] == NIIVUE_VERSION
    assert manifest["license"] == "BSD-2-Clause"
    assert set(manifest["files"]) == {"niivue.umd.js", "LICENSE"}
    for name, sha in manifest["files"].items():
        assert hashlib.sha256((NIIVUE_DIR / name).read_bytes()).hexdigest() == sha, name
    assert "BSD 2-Clause" in (NIIVUE_DIR / "LICENSE").read_text(encoding="utf-8")
    js = (NIIVUE_DIR / "niivue.umd.js").read_text(encoding="utf-8")
    # no loader of remote code: no dynamic import, no eval, no worker from a URL
    for bad in ("import(", "eval(", "new Function", "new Worker"):
        assert bad not in js, bad
    assert set(static_files()) == {"niivue/niivue.umd.js", "niivue/LICENSE", "review.js"}
    assert (STATIC_DIR / "review.js").is_file()


def test_static_files_need_a_session_and_a_known_name(clients) -> None:  # noqa: ANN001
    c = clients()
    r = c.get("/static/niivue/niivue.umd.js", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    login(c, "reader1")
    r = c.get("/static/niivue/niivue.umd.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert hashlib.sha256(r.content).hexdigest() == static_files()["niivue/niivue.umd.js"][1]
    assert "max-age" in r.headers["cache-control"]
    assert c.get("/static/review.js").status_code == 200
    for bad in ("niivue/MANIFEST.json", "../app.py", "niivue/../../app.py", "%2e%2e/app.py", "x"):
        assert c.get(f"/static/{bad}").status_code == 404, bad


def test_visit_page_loads_the_viewer_under_the_csp(clients, env_sqlite) -> None:  # noqa: ANN001
    c = clients()
    login(c, "reader1")
    vid = env_sqlite.visit_ids["sub-01"]
    r = c.get(f"/visits/{vid}")
    csp = r.headers["content-security-policy"]
    assert "connect-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-eval" not in csp and "http" not in csp
    assert r.headers["cache-control"] == "no-store"
    page = r.text
    assert 'src="/static/niivue/niivue.umd.js" defer' in page and 'id="nv-canvas"' in page
    assert 'id="nv-previous"' in page  # sub-01 has the previous visit's FLAIR
    cfg = json.loads(page.split('id="nv-config">', 1)[1].split("</script>", 1)[0])
    assert cfg["volumes"]["flair"] == f"/visits/{vid}/volume/flair.nii.gz"
    assert cfg["canDecide"] and cfg["decideUrl"] == f"/api/visits/{vid}/decision"
    assert cfg["nextVisit"] == f"/visits/{env_sqlite.visit_ids['sub-02']}"
    assert [les["key"] for les in cfg["lesions"]] == ["Gd:1", "T2:1", "T2:2", "T2:3"]
    assert all(len(les["mm"]) == 3 for les in cfg["lesions"])
    assert "/out/" not in page and str(env_sqlite.out) not in page  # ids, never paths


def test_volumes_by_name_only(clients, env_sqlite) -> None:  # noqa: ANN001
    c = clients()
    login(c, "reader1")
    vid = env_sqlite.visit_ids["sub-01"]
    expect = output_path(env_sqlite.out, "01", "01", "flair_preproc").read_bytes()
    r = c.get(f"/visits/{vid}/volume/flair.nii.gz")  # timings: benchmarks/bench_review.py
    assert r.status_code == 200 and r.content == expect
    for name in ("t2_labels", "gd_labels", "t1gd", "previous_flair", "newenlarging_labels"):
        assert c.get(f"/visits/{vid}/volume/{name}.nii.gz").status_code == 200, name
    for bad in ("t1", "brain_mask", "flair", "flair.nii", "..%2Fflair.nii.gz", "../x.nii.gz"):
        assert c.get(f"/visits/{vid}/volume/{bad}").status_code == 404, bad
    vid2 = env_sqlite.visit_ids["sub-02"]
    assert c.get(f"/visits/{vid2}/volume/gd_labels.nii.gz").status_code == 404
    assert c.get("/visits/999/volume/flair.nii.gz").status_code == 404


def test_json_decisions_save_in_place(clients, env_sqlite) -> None:  # noqa: ANN001
    c = clients()
    csrf = login(c, "reader1")
    vid = env_sqlite.visit_ids["sub-01"]
    rid = result_id(env_sqlite, "sub-01")
    url = f"/api/visits/{vid}/decision"
    body = {"result_id": rid, "lesion": "T2:3", "choice": "reject", "comment": None}
    r = c.post(url, json=body)
    assert r.status_code == 403 and "CSRF" in r.json()["error"]
    h = {"X-CSRF-Token": csrf}
    r = c.post(url, json=body, headers=h)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["saved"] and out["choice"] == "reject" and out["provisional"]["t2_count"] == 2
    assert c.post(url, json=body, headers=h).json()["saved"] is False
    bad = c.post(url, json={**body, "lesion": "T2:99"}, headers=h)
    assert bad.status_code == 404 and "error" in bad.json()
    assert c.post(url, json={**body, "choice": "maybe"}, headers=h).status_code == 400
    assert c.post(url, content=b"not json", headers=h).status_code == 400
    other = c.post(url, json={**body, "lesion": "T2:1"}, headers={**h, "Origin": "http://evil"})
    assert other.status_code == 403
    # reader2 cannot adjudicate through the JSON route
    c2 = clients()
    csrf2 = login(c2, "reader2")
    r = c2.post(f"/api/adjudicate/{vid}", json=body, headers={"X-CSRF-Token": csrf2})
    assert r.status_code == 403


def _grow(c, vid, xyz, **kw):  # noqa: ANN001, ANN202
    return c.get(f"/api/visits/{vid}/grow", params={"x": xyz[0], "y": xyz[1], "z": xyz[2], **kw})


def test_grow_preview_and_mask_volume(clients, env_sqlite) -> None:  # noqa: ANN001
    env = env_sqlite
    xyz = add_missed_lesion(env.out)
    c = clients()
    login(c, "reader1")
    vid = env.visit_ids["sub-01"]
    r = _grow(c, vid, xyz, threshold=3)
    assert r.status_code == 200, r.text
    g = r.json()
    assert g["n_voxels"] == 8 and g["volume_mm3"] == pytest.approx(16.0)
    assert g["bbox"] == [[12, 14], [3, 5], [1, 3]] and not g["capped"]
    m = c.get(f"/visits/{vid}/grow.nii.gz", params={"x": xyz[0], "y": xyz[1], "z": xyz[2]})
    img = nib.Nifti1Image.from_bytes(gzip.decompress(m.content))
    assert int(np.asarray(img.dataobj)[MISSED].sum()) == 8 and int(img.dataobj[...].sum()) == 8
    assert _grow(c, vid, (500, 0, 0)).status_code == 400
    assert _grow(c, vid, xyz, mode="otsu").status_code == 400
    assert _grow(c, vid, xyz, connectivity=18).status_code == 400
    assert c.get(f"/api/visits/{vid}/grow", params={"x": "a"}).status_code == 400


def _add(c, csrf, vid, rid, xyz, **kw):  # noqa: ANN001, ANN202
    body = {"result_id": rid, "x": xyz[0], "y": xyz[1], "z": xyz[2], "threshold": 3, **kw}
    return c.post(f"/api/visits/{vid}/added", json=body, headers={"X-CSRF-Token": csrf})


def test_added_lesion_counts_blinded_and_adjudicated(clients, env_sqlite) -> None:  # noqa: ANN001
    """reader1 adds a lesion, reader2 does not: a disagreement; accepted, it counts."""
    from lesionq.batch.tables import visits_table

    env = env_sqlite
    xyz = add_missed_lesion(env.out)
    vid, rid = env.visit_ids["sub-01"], result_id(env, "sub-01")
    c1 = clients()
    csrf1 = login(c1, "reader1")
    r = _add(c1, csrf1, vid, rid, xyz, location="juxtacortical")
    assert r.status_code == 200, r.text
    added = r.json()
    assert added["key"] == "A:1" and added["added"]["name"] == "A1"
    assert added["added"]["volume_mm3"] == pytest.approx(16.0)
    assert added["provisional"]["t2_count"] == 4  # 3 automatic + 1 added
    page = c1.get(f"/visits/{vid}").text
    assert 'id="lesion-A-1"' in page and "juxtacortical" in page
    assert 'id="provisional-t2-count">4<' in page
    assert _add(c1, csrf1, vid, rid, xyz, location="nowhere").status_code == 400
    assert _add(c1, csrf1, vid, rid, xyz, label="T1hypo").status_code == 400
    # blinded: reader2 does not see reader1's added lesion, nor its count
    c2 = clients()
    csrf2 = login(c2, "reader2")
    page2 = c2.get(f"/visits/{vid}").text
    assert 'id="lesion-A-1"' not in page2 and 'id="provisional-t2-count">3<' in page2
    assert c2.get(f"/visits/{vid}/volume/added.nii.gz").status_code == 200  # own: empty
    for c, csrf in ((c1, csrf1), (c2, csrf2)):
        s = c.post(
            f"/visits/{vid}/submit",
            data={"csrf_token": csrf, "result_id": rid, "confirm": "1"},
        )
        assert s.status_code == 200
    # submitted: no more added lesions
    assert _add(c1, csrf1, vid, rid, xyz).status_code == 409
    with env.db.engine.connect() as conn:
        st = rs.load_state(conn, vid, 2)
    assert st.outcome.stage == "awaiting_adjudication"
    assert st.outcome.pending == (LesionKey("A", 1),)
    assert st.submissions[0].counts["t2_count"] == 4
    # the adjudicator sees it (the reader by submission order, not by name), accepts it
    ca = clients()
    csrfa = login(ca, "adj")
    page = ca.get(f"/adjudicate/{vid}").text
    assert 'id="lesion-A-1"' in page and "<td>Reader A</td>" in page
    assert "reader1" not in page.split('id="added-lesions"', 1)[1]
    r = ca.post(
        f"/api/adjudicate/{vid}",
        json={"result_id": rid, "lesion": "A:1", "choice": "accept"},
        headers={"X-CSRF-Token": csrfa},
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "final" and r.json()["reviewed"]["t2_count_reviewed"] == 4
    assert r.json()["reviewed"]["t2_volume_reviewed_mm3"] == pytest.approx(28.0 + 16.0)
    # final means final: the JSON route refuses a later change like the form does
    again = ca.post(
        f"/api/adjudicate/{vid}",
        json={"result_id": rid, "lesion": "A:1", "choice": "reject"},
        headers={"X-CSRF-Token": csrfa},
    )
    assert again.status_code == 409 and "error" in again.json()
    # final: no more added lesions for anyone; the export has the count
    c3 = clients()
    login(c3, "admin")
    # the amendment page offers the added lesion too (with its final decision)
    amend = c3.get(f"/visits/{vid}/amend").text
    assert 'id="lesion-A-1"' in amend and 'name="lesion" value="A:1"' in amend
    row = visits_table(env.db).set_index("participant_id").loc["sub-01"]
    assert int(row["t2_count_reviewed"]) == 4 and int(row["t2_count"]) == 3
    # OUT/added_lesions.tsv, rewritten with visits.tsv
    from lesionq.io.tables import read_tsv

    tsv = read_tsv(env.out / "added_lesions.tsv")
    assert list(tsv["lesion"]) == ["A1"] and list(tsv["status"]) == ["counted"]
    assert list(tsv["reader"]) == ["reader1"] and list(tsv["location"]) == ["juxtacortical"]
    log = env.db.audit_log()
    rec = log[log["action"] == "added_lesion.recorded"]
    assert len(rec) == 1 and rec.iloc[0]["after"]["name"] == "A1"
    assert rec.iloc[0]["actor"] == "reader1"


def _added(aid: int, reader: int, voxels: np.ndarray, label: str = "T2") -> AddedLesion:
    bbox, blob = encode_mask(voxels)
    return AddedLesion(
        id=aid,
        visit_result_id=1,
        reader_id=reader,
        username=f"r{reader}",
        label=label,
        seed=(0, 0, 0),
        threshold=3.0,
        mode="zscore",
        connectivity=6,
        n_voxels=int(voxels.sum()),
        volume_mm3=float(voxels.sum()),
        centroid_mm=(0.0, 0.0, 0.0),
        location=None,
        bbox=bbox,
        mask=blob,
        comment=None,
        created_at=None,  # type: ignore[arg-type]
    )


def test_added_lesion_rules() -> None:
    a = np.zeros((10, 10, 10), bool)
    a[1:3, 1:3, 1:3] = True
    b = np.zeros_like(a)
    b[2:4, 2:4, 2:4] = True  # overlaps a by one voxel
    c = np.zeros_like(a)
    c[7:9, 7:9, 7:9] = True
    lesions = [_added(1, 10, a), _added(2, 20, b), _added(3, 20, c), _added(4, 30, c)]
    # not all readers submitted: nothing yet
    assert resolve_added(lesions, [10], {}, readers_required=2).final == {}
    out = resolve_added(lesions, [10, 20], {}, readers_required=2)
    assert out.final == {LesionKey("A", 1): Decision("accept")}
    assert out.merged == {LesionKey("A", 2): LesionKey("A", 1)}
    assert out.disagreements == out.pending == (LesionKey("A", 3),)  # reader 30 does not count
    adj = {LesionKey("A", 3): Decision("reject")}
    out = resolve_added(lesions, [10, 20], adj, readers_required=2)
    assert out.pending == () and out.final[LesionKey("A", 3)] == Decision("reject")
    # a different label does not agree
    out = resolve_added(
        [_added(1, 10, a), _added(2, 20, b, "Gd")], [10, 20], {}, readers_required=2
    )
    assert len(out.pending) == 2
    # one reader required: every added lesion of that reader counts
    out = resolve_added(lesions, [20], {}, readers_required=1)
    assert set(out.final) == {LesionKey("A", 2), LesionKey("A", 3)} and not out.pending


def test_overlapping_added_lesions_agree_and_final_refuses_more(clients, env_sqlite) -> None:  # noqa: ANN001
    from lesionq.review.added import add_lesion, grow_on_visit
    from lesionq.review.images import VolumeCache

    env = env_sqlite
    xyz = add_missed_lesion(env.out)
    eng = env.db.engine
    vid, rid = env.visit_ids["sub-01"], result_id(env, "sub-01")
    r = {n: auth.get_reader(eng, n) for n in ("reader1", "reader2")}
    vol = VolumeCache().load(output_path(env.out, "01", "01", "flair_preproc"))
    g = grow_on_visit(vol.data, vol.affine, xyz, threshold=3.0, mode="zscore", connectivity=6)

    def check_for(reader):  # noqa: ANN001, ANN202
        return lambda conn: rs.reader_writable_state(conn, reader, vid, rid, 2)

    kw = {"label": "T2", "threshold": 3.0, "mode": "zscore", "connectivity": 6}
    for name in ("reader1", "reader2"):
        add_lesion(eng, r[name], check_for(r[name]), g, location=None, comment=None, **kw)
        rs.submit_visit(eng, r[name], vid, rid, readers_required=2)
    with eng.connect() as conn:
        st = rs.load_state(conn, vid, 2)
    assert st.outcome.status == "final" and st.added_merged == {
        LesionKey("A", 2): LesionKey("A", 1)
    }
    assert st.reviewed["t2_count_reviewed"] == 4  # counted once
    adj = clients()
    login(adj, "adj")
    amend = adj.get(f"/visits/{vid}/amend").text  # the duplicate is amended through A1
    assert 'value="A:1"' in amend and 'id="lesion-A-2"' not in amend
    admin_reader = auth.get_reader(eng, "reader1")
    with pytest.raises(rs.ReviewRefused) as exc:
        add_lesion(eng, admin_reader, check_for(admin_reader), g, location=None, comment=None, **kw)
    assert exc.value.status_code == 409


def test_static_niivue_is_package_data() -> None:
    """pyproject's package data takes the vendored files (the wheel test builds it)."""
    import tomllib

    repo = Path(__file__).resolve().parents[2]
    data = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8"))
    globs = data["tool"]["setuptools"]["package-data"]["lesionq"]
    assert "review/static/niivue/*" in globs and "review/static/*" in globs


def test_an_added_lesion_without_a_class_gets_the_pipelines_location(tmp_path) -> None:
    """A region grown in the atlas's cortex is juxtacortical, one in the cerebellum
    infratentorial (the packaged atlas, through an identity atlas transform); no
    transform file: no class (the reader's choice stands)."""
    import nibabel as nib
    import numpy as np
    import SimpleITK as sitk

    from lesionq.core.location import CORTEX, INFRATENTORIAL
    from lesionq.io.atlas import load_atlas
    from lesionq.registration.rigid import save_transform
    from lesionq.review.added import atlas_location, grow_on_visit

    atlas = load_atlas(None)
    loc = np.asarray(atlas.location)
    xfm = save_transform(sitk.AffineTransform(3), tmp_path / "identity.txt")
    eroded = {}
    for label in (CORTEX, INFRATENTORIAL):
        core = loc == label
        for _ in range(2):  # deep inside the region: a 3x3x3 cube fits
            core &= np.roll(core, 1, 0) & np.roll(core, -1, 0) & np.roll(core, 1, 1)
            core &= np.roll(core, -1, 1) & np.roll(core, 1, 2) & np.roll(core, -1, 2)
        eroded[label] = tuple(int(v) for v in np.argwhere(core)[len(np.argwhere(core)) // 2])
    want = {CORTEX: "juxtacortical", INFRATENTORIAL: "infratentorial"}
    for label, (i, j, k) in eroded.items():
        image = np.zeros(loc.shape, np.float32)
        image[i - 1 : i + 2, j - 1 : j + 2, k - 1 : k + 2] = 100.0
        seed_mm = nib.affines.apply_affine(atlas.affine, (i, j, k))
        g = grow_on_visit(image, atlas.affine, seed_mm, threshold=0.5, mode="fraction",
                          connectivity=26)  # fmt: skip
        assert g.growth.n_voxels == 27
        assert atlas_location(g, xfm) == want[label], label
        assert atlas_location(g, tmp_path / "missing.txt") is None
        assert atlas_location(g, None) is None
        # the same anatomy on a grid 40 mm further along RAS x: the FLAIR -> template
        # transform (LPS) moves points by -40 mm along RAS x, i.e. +40 mm along LPS x
        moved = atlas.affine.copy()
        moved[0, 3] += 40.0
        shift = save_transform(sitk.TranslationTransform(3, (40.0, 0.0, 0.0)), tmp_path / "s.txt")
        g2 = grow_on_visit(image, moved, nib.affines.apply_affine(moved, (i, j, k)),
                           threshold=0.5, mode="fraction", connectivity=26)  # fmt: skip
        assert atlas_location(g2, shift) == want[label], label
