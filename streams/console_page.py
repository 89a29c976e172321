"""The live console's one page: plain HTML and JavaScript over ``/console/data`` and
``/console/user`` (streams/console.py), no build step, no external assets."""

from __future__ import annotations

__all__ = ["PAGE"]

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>driftrec console</title>
<style>
 body{font:14px system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
 h1{font-size:1.3em;margin:0 0 .5em} h2{font-size:1.05em;margin:1.2em 0 .4em}
 .stats span{display:inline-block;margin-right:1.5em} .stats b{font-size:1.2em}
 table{border-collapse:collapse;background:#fff} td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}
 .bar{background:#4a7bd0;height:10px} .grid{display:grid;grid-template-columns:1fr 1fr;gap:1.5em}
 #events li,#user-result li{margin:2px 0} .dim{color:#888} canvas{background:#fff;border:1px solid #eee}
</style></head><body>
<h1>driftrec &mdash; live console</h1>
<div class="stats" id="stats">waiting for data&hellip;</div>
<div class="grid"><div>
<h2>Interest clusters</h2>
<table id="clusters"><thead><tr><th>id</th><th>label</th><th>users</th><th></th></tr></thead><tbody></tbody></table>
<h2>Cluster sizes over event time</h2><canvas id="history" width="560" height="200"></canvas>
</div><div>
<h2>Interest events</h2><ul id="events"></ul>
<h2>User lookup</h2>
<form id="lookup-form"><input id="user-id" placeholder="user id"> <button id="lookup" type="submit">Look up</button></form>
<div id="user-result"></div>
</div></div>
<script>
const esc = s => String(s ?? "").replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
const colours = ["#4a7bd0","#d0714a","#4ab08a","#b04a9c","#c9b23a","#6a4ad0","#4ab7d0","#888"];
function drawHistory(history) {
  const c = document.getElementById("history"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  if (history.length < 2) return;
  const ids = [...new Set(history.flatMap(h => Object.keys(h.sizes)))];
  const totals = history.map(h => ids.reduce((a, id) => a + (h.sizes[id] || 0), 0));
  const top = Math.max(1, ...totals), n = history.length;
  const base = new Array(n).fill(0);
  ids.forEach((id, k) => {
    g.beginPath();
    history.forEach((h, i) => g.lineTo(i / (n - 1) * c.width, c.height - (base[i] + (h.sizes[id] || 0)) / top * c.height));
    for (let i = n - 1; i >= 0; i--) g.lineTo(i / (n - 1) * c.width, c.height - base[i] / top * c.height);
    g.fillStyle = colours[k % colours.length]; g.fill();
    history.forEach((h, i) => base[i] += h.sizes[id] || 0);
  });
}
async function refresh() {
  try {
    const d = await (await fetch("/console/data")).json();
    document.getElementById("stats").innerHTML =
      `<span>events <b>${d.events.toLocaleString()}</b></span><span><b>${d.events_per_s}</b> events/s</span>` +
      `<span>latency p50/p95/p99 <b>${d.latency_ms.p50} / ${d.latency_ms.p95} / ${d.latency_ms.p99}</b> ms</span>` +
      `<span>lag <b>${d.lag}</b></span><span>model v<b>${d.model_version}</b></span>`;
    const most = Math.max(1, ...d.clusters.map(c => c.users));
    document.querySelector("#clusters tbody").innerHTML = d.clusters.map(c =>
      `<tr class="cluster" data-id="${c.id}"><td>${c.id}</td><td class="label">${esc(c.label) || '<span class="dim">(no label yet)</span>'}</td>` +
      `<td>${c.users}</td><td><div class="bar" style="width:${120 * c.users / most}px"></div></td></tr>`).join("");
    drawHistory(d.history);
    document.getElementById("events").innerHTML = d.interest_events.slice(0, 15).map(e => e.kind === "moved"
      ? `<li><b>${esc(e.user_id)}</b> moved ${e.previous} &rarr; ${e.cluster} <span class="dim">${esc(e.label)}</span></li>`
      : `<li>cluster ${e.cluster} ${e.kind}${e.into != null ? " into " + e.into : ""}</li>`).join("");
  } catch (err) { document.getElementById("stats").textContent = "console: " + err; }
}
document.getElementById("lookup-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const id = document.getElementById("user-id").value, out = document.getElementById("user-result");
  const r = await fetch("/console/user?id=" + encodeURIComponent(id));
  if (!r.ok) { out.innerHTML = `<p class="dim">no user ${esc(id)}</p>`; return; }
  const u = await r.json();
  out.innerHTML = `<p>cluster <b>${u.cluster ?? "none"}</b> <span class="dim">${esc(u.label)}</span>, ${u.facets} facet(s)</p>` +
    `<p>recent items: ${u.window.slice(0, 8).map(e => esc(e.item_id)).join(", ")}</p><ol class="recs">` +
    u.recommendations.map(i => `<li class="rec">${esc(i.item_id)} <span class="dim">${esc(i.source)}` +
      (i.because.length ? ", because of " + i.because.map(esc).join(", ") : "") + `</span></li>`).join("") + "</ol>";
});
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""
