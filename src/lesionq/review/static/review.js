/* lesionq review: the NiiVue viewer, keyboard reading, decisions saved in place,
 * and adding a missed lesion. Loaded by templates/_niivue.html after the vendored
 * NiiVue build (global `niivue`); reads its settings from <script id="nv-config">.
 * Every request goes to this server (CSP connect-src 'self'); writes carry the
 * session's CSRF token in the X-CSRF-Token header. */
(function () {
  "use strict";
  var cfg = JSON.parse(document.getElementById("nv-config").textContent);
  var csrfInput = document.querySelector("input[name=csrf_token]");
  var csrf = csrfInput ? csrfInput.value : "";
  var statusEl = document.getElementById("nv-status");
  var locEl = document.getElementById("nv-location");
  var lesions = cfg.lesions.slice();
  var current = -1;
  var nv = null;
  var nvPrev = null;
  var labelIdx = [];
  var flickerTimer = null;
  var flickerOn = false;
  var preview = null;   // {params, summary}
  var previewLoading = Promise.resolve();
  window.lesionqViewer = { ready: false, errors: [] };

  // a refusal or failure is styled as an error (class "err") and announced; else muted
  function say(text, error) {
    if (!statusEl) { return; }
    statusEl.textContent = text;
    statusEl.className = error ? "err" : "muted";
    statusEl.setAttribute("role", error ? "alert" : "status");
  }
  function byId(id) { return document.getElementById(id); }

  // ------------------------------------------------------------------ viewer
  async function start() {
    if (!window.niivue || !cfg.volumes.flair) { say("viewer unavailable"); return; }
    var opts = { backColor: [0, 0, 0, 1], show3Dcrosshair: false, crosshairColor: [1, 0.2, 0.2, 1], crosshairWidth: 1,
      isRadiologicalConvention: true, dragMode: 2, multiplanarForceRender: false,
      loadingText: "loading", isResizeCanvas: true };
    nv = new niivue.Niivue(opts);
    await nv.attachTo("nv-canvas");
    var list = [{ url: cfg.volumes.flair, name: "flair.nii.gz" }];
    if (cfg.volumes.previous_flair) {
      list.push({ url: cfg.volumes.previous_flair, name: "previous_flair.nii.gz", opacity: 0 });
    }
    var overlays = [["t2_labels", "red"], ["gd_labels", "green"], ["newenlarging_labels", "warm"],
      ["added", "blue"]];
    overlays.forEach(function (o) {
      if (cfg.volumes[o[0]]) {
        labelIdx.push(list.length);
        list.push({ url: cfg.volumes[o[0]], name: o[0] + ".nii.gz", colormap: o[1], opacity: 0.45,
          cal_min: 0.5, cal_max: 1 });
      }
    });
    await nv.loadVolumes(list);
    nv.setSliceType(nv.sliceTypeMultiplanar);
    nv.onLocationChange = function (data) {
      if (locEl && data && data.mm) {
        locEl.textContent = data.mm.slice(0, 3).map(function (v) { return v.toFixed(1); }).join(", ") + " mm";
      }
      var seed = byId("seed-mm");
      if (seed && data && data.mm && document.activeElement !== seed) {
        seed.value = data.mm.slice(0, 3).map(function (v) { return v.toFixed(1); }).join(", ");
      }
    };
    var v0 = nv.volumes[0];
    byId("wl-min").value = Math.round(v0.cal_min * 10) / 10;
    byId("wl-max").value = Math.round(v0.cal_max * 10) / 10;
    if (cfg.volumes.previous_flair && byId("nv-previous")) {
      nvPrev = new niivue.Niivue(opts);
      await nvPrev.attachTo("nv-previous");
      await nvPrev.loadVolumes([{ url: cfg.volumes.previous_flair, name: "previous_flair.nii.gz" }]);
      nvPrev.setSliceType(nvPrev.sliceTypeMultiplanar);
      nv.broadcastTo(nvPrev, { "2d": true, "3d": true });
      nvPrev.broadcastTo(nv, { "2d": true, "3d": true });
    }
    say("ready");
    window.lesionqViewer.crosshairs = function () {  // for tests: both panes' cursors (mm)
      return [nv, nvPrev].filter(Boolean).map(function (v) {
        return Array.from(v.frac2mm(v.scene.crosshairPos)).slice(0, 3);
      });
    };
    window.lesionqViewer.ready = true;
    var hl = document.querySelector("#lesions tr.hl");
    if (hl) { select(indexOfRow(hl.id)); }
  }

  function redraw() {
    if (!nv) { return; }
    nv.updateGLVolume();
    if (nvPrev) { nvPrev.scene.crosshairPos = nv.scene.crosshairPos; nvPrev.drawScene(); }
  }

  function centre(mm) {
    if (!nv || !mm) { return; }
    nv.scene.crosshairPos = nv.mm2frac([mm[0], mm[1], mm[2]]);
    nv.createOnLocationChange();
    redraw();
  }

  function zoom(f) {
    if (!nv) { return; }
    var p = nv.scene.pan2Dxyzmm.slice();
    p[3] = Math.min(Math.max(p[3] * f, 0.5), 8);
    nv.setPan2Dxyzmm(p);
    if (nvPrev) { nvPrev.setPan2Dxyzmm(p.slice()); }
  }

  function setWindow() {
    if (!nv) { return; }
    var lo = parseFloat(byId("wl-min").value);
    var hi = parseFloat(byId("wl-max").value);
    if (!(hi > lo)) { return; }
    [nv, nvPrev].forEach(function (v) {
      if (!v) { return; }
      v.volumes[0].cal_min = lo; v.volumes[0].cal_max = hi;
      if (v === nv && cfg.volumes.previous_flair) { v.volumes[1].cal_min = lo; v.volumes[1].cal_max = hi; }
      v.updateGLVolume();
    });
  }

  function toggleLabels(show) {
    if (!nv) { return; }
    labelIdx.forEach(function (i) { nv.setOpacity(i, show ? 0.45 : 0); });
  }

  function flicker() {
    if (!nv || !cfg.volumes.previous_flair) { return; }
    var btn = byId("flicker");
    var lab = byId("flicker-label");
    if (flickerTimer) {
      clearInterval(flickerTimer); flickerTimer = null; flickerOn = false;
      nv.setOpacity(1, 0);
      if (btn) { btn.setAttribute("aria-pressed", "false"); }
      if (lab) { lab.textContent = ""; }
      return;
    }
    if (btn) { btn.setAttribute("aria-pressed", "true"); }
    flickerTimer = setInterval(function () {
      flickerOn = !flickerOn;
      nv.setOpacity(1, flickerOn ? 1 : 0);
      if (lab) { lab.textContent = flickerOn ? "(showing: previous)" : "(showing: this visit)"; }
    }, 600);
  }

  // ------------------------------------------------------------------ lesions
  function rowOf(i) { return i >= 0 && i < lesions.length ? byId(lesions[i].row) : null; }
  function indexOfRow(id) {
    for (var i = 0; i < lesions.length; i++) { if (lesions[i].row === id) { return i; } }
    return -1;
  }

  function select(i) {
    if (i < 0 || i >= lesions.length) { return; }
    var old = rowOf(current);
    if (old) { old.classList.remove("hl"); old.removeAttribute("aria-current"); }
    current = i;
    var row = rowOf(i);
    if (row) {
      row.classList.add("hl"); row.setAttribute("aria-current", "true");
      row.scrollIntoView({ block: "nearest" });
    }
    centre(lesions[i].mm);
    if (cfg.mode === "read" && cfg.canDecide) {  // recorded once per reader and lesion
      fetch("/visits/" + cfg.visit + "/viewed", { method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify({ lesion: lesions[i].key }) })
        .then(function (r) { return r.text(); }).catch(function () { return null; });
    }
    document.dispatchEvent(new CustomEvent("lesionq:lesion-selected", { detail: lesions[i].key }));
  }

  function undecided(i) {
    var row = rowOf(i);
    if (!row) { return false; }
    if (cfg.mode === "adjudicate") {
      var a = row.querySelector(".adjudicated");
      return !!(a && /pending/.test(a.textContent));
    }
    var d = row.querySelector(".decision");
    return !!(d && /\(default\)/.test(d.textContent));
  }

  function nextUndecided() {
    for (var s = 1; s <= lesions.length; s++) {
      var i = (current + s + lesions.length) % lesions.length;
      if (undecided(i)) { select(i); return; }
    }
    say("no undecided lesion left");
  }

  function setCount(id, value) {
    var el = byId(id);
    if (el && value !== undefined) { el.textContent = value === null ? "n/a" : String(value); }
  }

  // volumes as the page's `num` filter writes them: one decimal, "n/a" for none
  function setVolume(id, value) {
    var el = byId(id);
    if (el && value !== undefined) {
      el.textContent = value === null || isNaN(Number(value)) ? "n/a" : Number(value).toFixed(1);
    }
  }

  async function send(url, body) {
    var r = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body)
    });
    var data = {};
    try { data = await r.json(); } catch (e) { data = { error: "HTTP " + r.status }; }
    if (!r.ok) { throw new Error(data.error || ("HTTP " + r.status)); }
    return data;
  }

  async function decide(key, choice, comment) {
    var i = -1;
    for (var j = 0; j < lesions.length; j++) { if (lesions[j].key === key) { i = j; } }
    var row = i >= 0 ? rowOf(i) : null;
    try {
      var data = await send(cfg.decideUrl, { result_id: cfg.result, lesion: key, choice: choice,
        comment: comment === undefined ? null : comment });
      if (row) {
        var sel = row.querySelector("select[name=choice]");
        if (sel) { sel.value = choice; }
        var cell = row.querySelector(cfg.mode === "adjudicate" ? ".adjudicated" : ".decision");
        if (cell) {
          var c = row.querySelector("input[name=comment]");
          cell.textContent = choice;
          if (cfg.mode !== "adjudicate" && c && c.value) {
            var span = document.createElement("span");
            span.className = "muted"; span.textContent = " (" + c.value + ")";
            cell.appendChild(span);
          }
        }
      }
      if (data.provisional) {
        setCount("provisional-t2-count", data.provisional.t2_count);
        setCount("provisional-gd-count", data.provisional.gd_count);
        setVolume("provisional-t2-volume", data.provisional.t2_volume_mm3);
        setVolume("provisional-gd-volume", data.provisional.gd_volume_mm3);
      }
      if (data.reviewed) {
        setCount("reviewed-t2-count", data.reviewed.t2_count_reviewed);
        setCount("reviewed-gd-count", data.reviewed.gd_count_reviewed);
        setVolume("reviewed-t2-volume", data.reviewed.t2_volume_reviewed_mm3);
        setVolume("reviewed-gd-volume", data.reviewed.gd_volume_reviewed_mm3);
      }
      if (data.status) { setCount("review-status", data.status.replace(/_/g, " ")); }
      say((data.saved ? "saved: " : "unchanged: ") + key + " " + choice);
    } catch (e) {
      say("not saved: " + e.message, true);
      window.lesionqViewer.errors.push(e.message);
    }
  }

  function choose(choice) {
    if (!cfg.canDecide || current < 0) { return; }
    var k = lesions[current];
    var row = rowOf(current);
    var c = row ? row.querySelector("input[name=comment]") : null;
    if (choice === "relabel") {
      var options = cfg.relabels[k.label] || [];
      if (!options.length) { say("no relabel for " + k.label); return; }
      var sel = row ? row.querySelector("select[name=choice]") : null;
      var now = sel ? sel.value : "";
      var at = options.indexOf(now.replace(/^relabel:/, ""));
      choice = "relabel:" + options[(at + 1) % options.length];
    }
    decide(k.key, choice, c ? c.value : null);
  }

  // forms of the lesion tables save in place (they still work without script)
  document.querySelectorAll("form.decide, form.adjudicate").forEach(function (f) {
    f.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var key = f.querySelector("input[name=lesion]").value;
      decide(key, f.querySelector("select[name=choice]").value, f.querySelector("input[name=comment]").value);
    });
  });

  // clicking a lesion row (not its controls) centres all planes on the lesion
  lesions.forEach(function (l, i) {
    var row = byId(l.row);
    if (!row) { return; }
    row.addEventListener("click", function (ev) {
      if (ev.target.closest("a, button, select, input, form")) { return; }
      select(i);
    });
  });

  // ------------------------------------------------------------------ add a lesion
  function growParams() {
    var seed = (byId("seed-mm").value || "").split(",").map(function (v) { return parseFloat(v); });
    if (seed.length !== 3 || seed.some(function (v) { return !isFinite(v); })) {
      throw new Error("give the seed as x, y, z in mm (click the image)");
    }
    return { x: seed[0], y: seed[1], z: seed[2], threshold: parseFloat(byId("add-threshold").value),
      mode: byId("add-mode").value, connectivity: parseInt(byId("add-connectivity").value, 10),
      label: byId("add-label").value };
  }

  async function growPreview() {
    var p;
    try { p = growParams(); } catch (e) { byId("grow-summary").textContent = e.message; return; }
    var q = new URLSearchParams(p).toString();
    var r = await fetch("/api/visits/" + cfg.visit + "/grow?" + q, { credentials: "same-origin" });
    var data = await r.json();
    if (!r.ok) { byId("grow-summary").textContent = data.error || ("HTTP " + r.status); return; }
    preview = { params: p, summary: data };
    byId("grow-summary").textContent = data.n_voxels
      ? data.n_voxels + " voxels, " + data.volume_mm3.toFixed(1) + " mm\u00b3" + (data.capped ? " (capped: raise the threshold)" : "")
      : "nothing grows here at this threshold";
    byId("grow-save").disabled = !data.n_voxels;
    if (nv) {
      nv.volumes.slice().forEach(function (v) { if (v.name === "preview.nii.gz") { nv.removeVolume(v); } });
      if (data.n_voxels) {
        previewLoading = nv.addVolumeFromUrl({ url: "/visits/" + cfg.visit + "/grow.nii.gz?" + q, name: "preview.nii.gz",
          colormap: "green", opacity: 0.6, cal_min: 0.5, cal_max: 1 });
        await previewLoading;
      }
      redraw();
    }
  }

  async function growSave() {
    if (!preview || !preview.summary.n_voxels) { byId("grow-summary").textContent = "preview first (g)"; return; }
    await previewLoading.catch(function () { return null; });
    var body = Object.assign({}, preview.params, { result_id: cfg.result,
      location: byId("add-location").value || null });
    try {
      var data = await send("/api/visits/" + cfg.visit + "/added", body);
      byId("grow-summary").textContent = "saved as " + data.added.name + "; reloading";
      window.location.assign("/visits/" + cfg.visit + "?lesion=" + encodeURIComponent(data.key));
    } catch (e) {
      byId("grow-summary").textContent = "not saved: " + e.message;
    }
  }

  if (byId("grow-preview")) {
    byId("grow-preview").addEventListener("click", growPreview);
    byId("grow-save").addEventListener("click", growSave);
  }
  ["wl-min", "wl-max"].forEach(function (id) { var el = byId(id); if (el) { el.addEventListener("change", setWindow); } });
  if (byId("zoom-in")) { byId("zoom-in").addEventListener("click", function () { zoom(1.25); }); }
  if (byId("zoom-out")) { byId("zoom-out").addEventListener("click", function () { zoom(0.8); }); }
  if (byId("show-labels")) { byId("show-labels").addEventListener("change", function (e) { toggleLabels(e.target.checked); }); }
  if (byId("flicker")) { byId("flicker").addEventListener("click", flicker); }

  // ------------------------------------------------------------------ keyboard
  document.addEventListener("keydown", function (ev) {
    var t = ev.target;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    if (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA")) { return; }
    var k = ev.key;
    var handled = true;
    if (ev.shiftKey && nv && k.indexOf("Arrow") === 0) {
      var d = { ArrowLeft: [-1, 0, 0], ArrowRight: [1, 0, 0], ArrowUp: [0, 1, 0], ArrowDown: [0, -1, 0] }[k];
      nv.moveCrosshairInVox(d[0], d[1], d[2]); redraw();
    } else if ((k === "PageUp" || k === "PageDown") && nv) {
      nv.moveCrosshairInVox(0, 0, k === "PageUp" ? 1 : -1); redraw();
    } else if (k === "j" || k === "ArrowDown") { select(Math.min(current + 1, lesions.length - 1)); }
    else if (k === "k" || k === "ArrowUp") { select(Math.max(current - 1, 0)); }
    else if (k === "n") { nextUndecided(); }
    else if (k === "a") { choose("accept"); }
    else if (k === "r") { choose("reject"); }
    else if (k === "l") { choose("relabel"); }
    else if (k === "q" && cfg.nextVisit) { window.location.assign(cfg.nextVisit); }
    else if (k === "f") { flicker(); }
    else if (k === "+" || k === "=") { zoom(1.25); }
    else if (k === "-") { zoom(0.8); }
    else if (k === "g" && byId("grow-preview")) { growPreview(); }
    else if (k === "s" && byId("grow-save")) { growSave(); }
    else if ((k === "[" || k === "]") && byId("add-threshold")) {
      var th = byId("add-threshold");
      var step = parseFloat(th.step) || 0.25;
      th.value = (parseFloat(th.value) + (k === "]" ? step : -step)).toFixed(2);
      growPreview();
    } else { handled = false; }
    if (handled) { ev.preventDefault(); }
  });

  start().catch(function (e) {
    say("viewer failed: " + e.message, true);
    window.lesionqViewer.errors.push(String(e && e.message));
  });
})();
