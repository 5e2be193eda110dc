/* LEADERBOARD.html: unpacks the embedded data (gzip + base64 JSON) and draws the page. No network. */
"use strict";
const $ = (s, el = document) => el.querySelector(s);
const esc = (t) => String(t).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
const inline = (t) => esc(t).replace(/\*\*([^*]+)\*\*/g, "<b>$1</b>").replace(/`([^`]+)`/g, "<code>$1</code>");
const fmt = (x, d) => (x === null || x === undefined) ? "—" : Number(x).toFixed(d);
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
let D, state = {metric: null, sort: null, asc: true, filters: {}, sel: null};

async function unpack() {
  const b64 = $("#payload").textContent.trim();
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return JSON.parse(await new Response(stream).text());
}

function colorOf(name) { const i = D.solvers.indexOf(name); return COLORS[(i < 0 ? D.solvers.length : i) % COLORS.length]; }

function drawHeadline() {
  $("#findings").innerHTML = "<b>Findings.</b> " + inline(D.findings);
  const box = $("#headline");
  const N = D.names;   // the do-nothing solver and the quality metric: declared in Python, named here by nothing
  for (const g of D.headline) {
    const trivial = g.rows.some((r) => r[N.d_quality] !== null && r.solver !== N.trivial);
    let h = `<div><h3>${esc(g.label)}</h3><table class="headline"><thead><tr><th>#</th><th>solver</th><th>mean rank</th><th>W / L</th><th>gap</th><th>${esc(N.quality_head)}</th>${trivial ? `<th>${esc(N.delta_head)}</th>` : ""}</tr></thead><tbody>`;
    g.rows.forEach((r, i) => {
      h += `<tr><td>${i + 1}</td><td class="key">${i === 0 ? "<b>" + esc(r.solver) + "</b>" : esc(r.solver)}${r.failed ? ` (${r.failed} failed)` : ""}</td>` +
        `<td>${fmt(r.mean_rank, 2)}${r.rank_sd === null ? "" : " ± " + fmt(r.rank_sd, 2)}</td><td>${r.wins} / ${r.losses}</td>` +
        `<td>${fmt(r.gap_pct, 1)}%</td><td>${fmt(r[N.quality], N.digits)}</td>${trivial ? `<td>${r.solver === N.trivial ? "—" : (r[N.d_quality] > 0 ? "+" : "") + fmt(r[N.d_quality], N.digits)}</td>` : ""}</tr>`;
    });
    box.insertAdjacentHTML("beforeend", h + `</tbody></table><div class="note">${g.cells} cells, ${g.tests} paired tests</div></div>`);
  }
}

function drawFilters() {
  const box = $("#filters");
  let h = `<label>metric <select id="f-metric">${D.metrics.map((m) => `<option value="${m.name}">${esc(m.title)}</option>`).join("")}</select></label>`;
  for (const [k, vals] of Object.entries(D.filters)) {
    h += `<label>${esc(D.filter_titles[k] || k)} <select data-filter="${k}"><option value="">all</option>${vals.map((v) => `<option value="${esc(v)}">${esc(v)}</option>`).join("")}</select></label>`;
  }
  box.innerHTML = h;
  state.metric = D.metrics[0].name;
  $("#f-metric").addEventListener("change", (e) => { state.metric = e.target.value; drawTable(); });
  box.querySelectorAll("select[data-filter]").forEach((s) => s.addEventListener("change", (e) => {
    state.filters[e.target.dataset.filter] = e.target.value; drawTable(); syncCurveTasks();
  }));
}

function visibleRows() {
  return D.rows.filter((r) => Object.entries(state.filters).every(([k, v]) => !v || String(r[k]) === v));
}

function drawTable() {
  const m = D.metrics.find((x) => x.name === state.metric);
  const thead = $("#cells thead"), tbody = $("#cells tbody");
  const keys = ["task", "prior", "split", "lam"];
  const cols = [...keys.map((k) => ({key: k, label: k === "lam" ? "λ" : k})), ...D.solvers.map((s) => ({key: s, label: s, solver: true})), {key: "verdict", label: "verdict"}];
  thead.innerHTML = "<tr>" + cols.map((c) => `<th data-key="${esc(c.key)}" class="${c.solver ? "" : "key"}${state.sort === c.key ? (state.asc ? " sorted-asc" : " sorted-desc") : ""}">${esc(c.label)}</th>`).join("") + "</tr>";
  thead.querySelectorAll("th").forEach((th) => th.addEventListener("click", () => {
    state.asc = state.sort === th.dataset.key ? !state.asc : true; state.sort = th.dataset.key; drawTable();
  }));
  let rows = visibleRows();
  if (state.sort) {
    const k = state.sort, sgn = state.asc ? 1 : -1;
    const val = (r) => D.solvers.includes(k) ? ((r.cells[m.name][k] || [])[0] ?? Infinity) : (k === "verdict" ? ((r.verdict[m.name] || {}).best || "") : r[k]);
    rows = [...rows].sort((a, b) => { const x = val(a), y = val(b); return (x < y ? -1 : x > y ? 1 : 0) * sgn; });
  }
  $("#count").textContent = `${rows.length} of ${D.rows.length} rows`;
  let h = "";
  for (const r of rows) {
    const v = r.verdict[m.name];
    const bold = v ? (v.win ? [v.best] : [v.best, v.runner_up]) : [];
    h += `<tr data-row="${r.id}">` + keys.map((k) => `<td class="key">${esc(r[k])}</td>`).join("");
    for (const s of D.solvers) {
      const c = r.cells[m.name][s];
      if (!c) { h += "<td></td>"; continue; }
      const [mean, se, n, failed] = c;
      const text = mean === null ? "—" : fmt(mean, m.dec) + (n > 1 && se !== null ? " ± " + fmt(se, m.dec) : "");
      const cls = ["cell", bold.includes(s) ? "best" : "", failed ? "failed" : "", state.sel && state.sel[0] === r.id && state.sel[1] === s ? "sel" : ""].join(" ");
      h += `<td class="${cls}" data-solver="${esc(s)}" title="${esc(s)}: n = ${n}">${text}${failed ? ` (${failed} failed)` : ""}</td>`;
    }
    const fl = (r.floor || {})[m.name];
    const held = v && !v.win && v.significant && fl && fl.value !== null;
    h += `<td class="key" title="${esc(fl ? fl.caption : "")}">${v ? (v.win ? esc(v.best) + ` (p = ${Number(v.p).toPrecision(2)})` : `tie (p = ${Number(v.p).toPrecision(2)}${held ? `; Δ ${fmt(v.gain, m.dec)} ≤ floor ${fmt(fl.value, m.dec)}` : ""})`) : ""}</td></tr>`;
  }
  tbody.innerHTML = h;
  tbody.querySelectorAll("td.cell").forEach((td) => td.addEventListener("click", () => openDetail(+td.parentNode.dataset.row, td.dataset.solver)));
}

function openDetail(rowId, solver) {
  state.sel = [rowId, solver];
  const r = D.rows[rowId], box = $("#detail");
  const vals = (D.detail[String(rowId)] || {})[solver] || [];
  const names = D.metrics.map((m) => m.name);
  let h = `<h3>${esc(solver)} — ${esc(r.task)}, prior ${esc(r.prior)}, split ${esc(r.split)}, λ = ${r.lam} <button id="close-detail">close</button></h3>`;
  const sp = D.sprites[String(rowId)];
  if (sp) {
    const scale = 4, t = sp.tile * scale, W = sp.tile * sp.cols.length * scale, H = sp.tile * sp.images.length * scale;
    h += `<div class="tiles" style="grid-template-columns: 90px repeat(${sp.cols.length}, ${t}px)"><div></div>` + sp.cols.map((c) => `<div class="lab" title="${esc(c)}">${esc(c)}</div>`).join("");
    sp.images.forEach((img, i) => {
      h += `<div class="lab" title="${esc(img)}">${esc(img)}</div>` + sp.cols.map((c, j) => sp.missing.some(([a, b]) => a === i && b === j) ? `<div class="lab failed-tile">${j < 2 ? "—" : "failed"}</div>` :
        `<div class="tile${c === solver ? " hl" : ""}" style="width:${t}px;height:${t}px;background-image:url(${sp.src});background-size:${W}px ${H}px;background-position:-${j * t}px -${i * t}px"></div>`).join("");
    });
    h += "</div>";
  }
  h += `<table class="per-image"><thead><tr><th class="key">image</th><th>seed</th>${D.metrics.map((m) => `<th>${esc(m.name)}</th>`).join("")}<th class="key">status</th></tr></thead><tbody>` +
    vals.map((v) => `<tr><td class="key">${esc(v[0])}</td><td>${v[1]}</td>${names.map((_, i) => `<td>${fmt(v[2 + i], D.metrics[i].dec)}</td>`).join("")}<td class="key">${esc(v[2 + names.length])}</td></tr>`).join("") + "</tbody></table>";
  box.innerHTML = h;
  box.hidden = false;
  $("#close-detail").addEventListener("click", () => { box.hidden = true; state.sel = null; drawTable(); });
  drawTable();
  box.scrollIntoView({block: "nearest"});
}

function syncCurveTasks() {
  const sel = $("#curve-task"), tasks = Object.keys(D.curves);
  const base = state.filters.base, budget = state.filters.budget;
  const keep = tasks.filter((t) => D.rows.some((r) => r.task === t && (!base || r.base === base) && (!budget || String(r.budget) === budget)));
  const cur = sel.value;
  sel.innerHTML = keep.map((t) => `<option>${esc(t)}</option>`).join("");
  if (keep.includes(cur)) sel.value = cur;
  drawCharts();
}

function chart(el, title, panel, ylog, ylabel) {
  const names = Object.keys(panel.series);
  const data = [panel.x, ...names.map((n) => panel.series[n].map((v) => (v === null ? null : (ylog ? Math.max(v, 1e-3) : v))))];
  const opts = {
    title, width: Math.max(420, el.clientWidth - 10), height: 280,
    scales: {x: {time: false, distr: 3}, y: ylog ? {distr: 3} : {range: [0, 1.02]}},
    axes: [{label: "prior passes per image"}, {label: ylabel, size: 60}],
    series: [{label: "passes"}, ...names.map((n) => ({label: n, stroke: colorOf(n), width: 1.6, spanGaps: false,
      points: {show: false}, paths: ylog ? undefined : uPlot.paths.stepped({align: 1}),
      value: (u, v) => (v === null ? "—" : ylog ? v.toPrecision(3) : v.toFixed(3))}))],
    legend: {live: true},
  };
  return new uPlot(opts, data, el);
}

function drawCharts() {
  const box = $("#charts");
  box.innerHTML = "";
  const c = D.curves[$("#curve-task").value];
  if (!c) { box.textContent = "No traces for this task."; return; }
  const panels = [];
  if (c.anytime) panels.push(["anytime: mean MAP loss − f_ref", c.anytime, true, "gap to best (log)"]);
  for (const [k, p] of Object.entries(c.profiles || {})) panels.push([k, p, false, "fraction"]);
  for (const [title, p, ylog, ylabel] of panels) {
    const el = document.createElement("div");
    el.className = "chart";
    box.appendChild(el);
    chart(el, title, p, ylog, ylabel);
  }
}

function drawRegime() {
  if (!D.regime.length) { $("#regime-section").hidden = true; return; }
  const cols = Object.keys(D.regime[0]);
  $("#regime").innerHTML = `<table><thead><tr>${cols.map((c) => `<th>${esc(c)}</th>`).join("")}</tr></thead><tbody>` +
    D.regime.map((r) => "<tr>" + cols.map((c) => `<td>${typeof r[c] === "number" && !Number.isInteger(r[c]) ? r[c].toFixed(3) : esc(r[c])}</td>`).join("") + "</tr>").join("") + "</tbody></table>";
}

(async () => {
  D = await unpack();
  drawHeadline();
  drawFilters();
  drawTable();
  $("#curve-task").addEventListener("change", drawCharts);
  syncCurveTasks();
  drawRegime();
  document.body.dataset.ready = "1";
})().catch((e) => { console.error(e); document.body.dataset.ready = "error"; });
