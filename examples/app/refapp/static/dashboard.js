// Live dashboard of the tcache reference app: polls /api/dashboard (TCACHE.STATS, INFO tcache,
// the race log and the application's events) and draws the race chart on a <canvas>.
"use strict";

const POLL_MS = 1000;
const $ = (id) => document.getElementById(id);
const fmt = (n) => (n === undefined || n === null ? "–" : Number(n).toLocaleString("en-US"));
const ms = (s) => (s * 1000).toFixed(s * 1000 < 10 ? 2 : 1) + " ms";

function text(id, value) {
  const el = $(id);
  if (el.textContent !== String(value)) el.textContent = value;
}

function drawChart(races) {
  const canvas = $("race-chart");
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 900;
  const h = canvas.clientHeight || 260;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const css = getComputedStyle(document.documentElement);
  const colors = { db: css.getPropertyValue("--db").trim(), cache: css.getPropertyValue("--cache").trim() };
  const pad = { l: 64, r: 12, t: 10, b: 24 };
  const pw = w - pad.l - pad.r;
  const ph = h - pad.t - pad.b;

  // log scale in milliseconds, from 0.05 ms to the slowest read seen (at least 10 ms)
  const values = [];
  for (const r of races) {
    if (r.db_found) values.push(r.db_s * 1000);
    if (r.cache_found) values.push(r.cache_s * 1000);
  }
  const lo = Math.log10(0.05);
  const hi = Math.log10(Math.max(10, ...values) * 1.2);
  const y = (vms) => pad.t + ph - ((Math.log10(Math.max(vms, 0.05)) - lo) / (hi - lo)) * ph;
  const n = Math.max(races.length, 2);
  const x = (i) => pad.l + (pw * i) / (n - 1);

  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#6b7280";
  ctx.strokeStyle = "#eef0f3";
  ctx.lineWidth = 1;
  for (let p = Math.ceil(lo); p <= hi; p++) {
    const yy = y(Math.pow(10, p));
    ctx.beginPath(); ctx.moveTo(pad.l, yy); ctx.lineTo(w - pad.r, yy); ctx.stroke();
    const label = p < 0 ? Math.pow(10, p).toFixed(-p) : String(Math.pow(10, p));
    ctx.fillText(label + " ms", 4, yy + 4);
  }
  ctx.fillText(races.length ? `last ${races.length} races` : "no race yet: press Race", pad.l, h - 6);

  let drawn = 0;
  for (const [src, color] of [["db", colors.db], ["cache", colors.cache]]) {
    ctx.strokeStyle = color;
    ctx.fillStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    let started = false;
    races.forEach((r, i) => {  // a read that found nothing is no point; the line goes on
      if (!r[src + "_found"]) return;
      const px = x(i), py = y(r[src + "_s"] * 1000);
      if (started) ctx.lineTo(px, py); else { ctx.moveTo(px, py); started = true; }
    });
    ctx.stroke();
    races.forEach((r, i) => {
      if (!r[src + "_found"]) return;
      ctx.beginPath(); ctx.arc(x(i), y(r[src + "_s"] * 1000), 2.5, 0, 2 * Math.PI); ctx.fill();
      drawn++;
    });
  }
  canvas.dataset.points = String(drawn);
}

function renderTables(d) {
  const races = d.races.slice(-8).reverse();
  $("races").innerHTML = races.map((r) =>
    `<tr><td>${r.store_id}</td><td>${r.db_found ? ms(r.db_s) : "missing"}</td>` +
    `<td>${r.cache_found ? ms(r.cache_s) : "miss"}</td><td class="win-${r.winner}">${r.winner}</td></tr>`).join("");
  $("events").innerHTML = d.events.slice(0, 10).map((e) =>
    `<tr data-kind="${e.kind}" data-subject="${e.subject}"><td>${new Date(e.at * 1000).toLocaleTimeString()}</td>` +
    `<td>${e.kind}</td><td>${e.subject}</td><td>${e.detail}</td></tr>`).join("");
  $("gates").innerHTML = d.gates.map((g) =>
    `<tr><td>${g.name}</td><td>${fmt(g.checked)}</td><td>${fmt(g.rejected)}</td><td>${g.last_rejection || ""}</td></tr>`).join("");
}

function render(d) {
  const s = d.stats;
  text("t-hit-rate", s.hit_rate ?? "–");
  text("t-hits", `${fmt(s.hits)} hits, ${fmt(s.misses)} misses`);
  text("t-entries", fmt(s.entries));
  text("t-tags", `${fmt(s.tags)} tags, index ${fmt(s.index_bytes)} B`);
  text("t-invalidations", fmt(s.invalidations));
  text("t-invalidated", `${fmt(s.invalidated_entries)} entries dropped`);
  text("t-reclaim-pending", fmt(s.reclaim_pending) + " pending");
  text("t-reclaimed", `${fmt(s.reclaimed)} reclaimed in ${fmt(s.reclaim_slices)} slices`);
  text("t-gate-rejections", fmt(s.gate_rejections));
  const last = d.gates.filter((g) => g.last_rejection).map((g) => g.last_rejection)[0];
  text("t-gate-last", last || "none refused yet");
  text("t-leases", fmt(s.leases_granted) + " leases");
  text("t-waits", `${fmt(s.waits)} waits, ${fmt(s.wait_timeouts)} timeouts, ${fmt(s.lease_sets_refused)} refused sets`);
  text("t-generations", fmt(d.computations.report || 0));
  text("t-computations", Object.entries(d.computations).map(([k, v]) => `${k} ${v}`).join(", ") || "none");
  const wins = d.races.reduce((a, r) => { a[r.winner] = (a[r.winner] || 0) + 1; return a; }, {});
  text("race-summary", `tcache won ${wins.cache || 0}, PostgreSQL won ${wins.db || 0}`);
  renderTables(d);
  drawChart(d.races);
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
}

async function poll() {
  try {
    const resp = await fetch("/api/dashboard", { cache: "no-store" });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    const d = await resp.json();
    render(d);
    text("status", `live · ${d.server} · updated ${new Date().toLocaleTimeString()}`);
  } catch (e) {
    text("status", `disconnected (${e.message}); retrying`);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

async function action(method, path) {
  const resp = await fetch(path, { method });
  const body = await resp.text();
  text("last-action", `${method} ${path} → ${resp.status} ${body.slice(0, 120)}`);
}

$("btn-race").onclick = () => action("GET", `/reports/${$("store").value}/race`);
$("btn-read").onclick = () => action("GET", `/reports/${$("store").value}`);
$("btn-reset").onclick = () => action("POST", `/reports/${$("store").value}/reset`);
poll();
