// The rack view: one EventSource on api/events delivers whole snapshots; everything is
// redrawn from the latest one (text only through textContent: names and messages come from
// manifests and peers). Actions confirm first, then POST with the X-Microfaas-Ui header.
"use strict";

const $ = (sel) => document.querySelector(sel);
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of kids) if (c != null) e.append(c instanceof Node ? c : String(c));
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function ago(iso) {
  if (!iso) return "–";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

function notice(msg) {
  $("#notice").textContent = msg;
}

async function post(path, body, question) {
  if (!window.confirm(question)) return;
  try {
    const r = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Microfaas-Ui": "1" },
      body: JSON.stringify(body || {}),
    });
    const text = await r.text();
    notice(r.ok ? `${question.replace(/\?$/, "")}: requested` : `refused (${r.status}): ${text}`);
  } catch (e) {
    notice(`request failed: ${e}`);
  }
}

function button(label, path, body, question) {
  const b = el("button", { type: "button", textContent: label });
  b.dataset.action = label.toLowerCase().replace(/\s+/g, "-");
  b.addEventListener("click", () => post(path, body, question));
  return b;
}

function workerTile(w) {
  const enc = encodeURIComponent(w.name);
  const link = w.link ? `${w.link.status === "True" ? "up" : "down"} (${w.link.reason})` : "–";
  const boot = w.lastBoot
    ? `${ago(w.lastBoot)}${w.bootSeconds != null ? `, ${Number(w.bootSeconds).toFixed(2)} s` : ""}`
    : "–";
  const power = `${w.power.state} · ${w.power.evidence}`;
  const maint = w.health === "Maintenance"
    ? button("Return to service", `api/workers/${enc}/health`, { health: "Good" }, `Return ${w.name} to service?`)
    : button("Maintenance", `api/workers/${enc}/health`, { health: "Maintenance" }, `Put ${w.name} in Maintenance (it is powered off and left unused)?`);
  const result = w.powerResult && w.powerResult.action
    ? `${w.powerResult.action}: ${w.powerResult.ok ? "done" : "failed"} — ${w.powerResult.message}` : null;
  return el("div", { class: "tile", "data-worker": w.name, "data-phase": w.phase, "data-health": w.health },
    el("div", { class: "top" },
      el("span", {}, el("span", { class: "name", textContent: w.name }), " ", el("span", { class: "kind", textContent: w.kind })),
      el("span", { class: `phase ${w.phase}`, textContent: w.phase })),
    el("dl", {},
      el("dt", {}, "power"), el("dd", { title: power, textContent: power }),
      el("dt", {}, "link"), el("dd", { textContent: link }),
      el("dt", {}, "health"), el("dd", { textContent: w.health }),
      el("dt", {}, "function"), el("dd", { class: "function", textContent: w.function || "–" }),
      el("dt", {}, "last boot"), el("dd", { textContent: boot }),
      w.powerRequest ? el("dt", {}, "request") : null,
      w.powerRequest ? el("dd", { textContent: `power ${w.powerRequest.action} pending` }) : null,
      result ? el("dt", {}, "last request") : null,
      result ? el("dd", { title: result, textContent: result }) : null),
    el("div", { class: "actions" },
      button("On", `api/workers/${enc}/power`, { action: "on" }, `Power ${w.name} on?`),
      button("Off", `api/workers/${enc}/power`, { action: "off" }, `Power ${w.name} off?`),
      button("Cycle", `api/workers/${enc}/power`, { action: "cycle" }, `Power-cycle ${w.name}?`),
      maint));
}

// A line (or dots) over [x, y] points in a w×h box, with the y range labelled.
function plot(points, opts) {
  const w = 300, h = 110, pad = 18;
  const s = svg("svg", { class: "plot", viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: "none" });
  s.append(svg("rect", { x: 0, y: 0, width: w, height: h, fill: "#fafafa" }));
  const t = svg("text", { x: 3, y: 10 });
  t.textContent = opts.title;
  s.append(t);
  if (points.length === 0) return s;
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const y1 = Math.max(...ys, opts.minMax || 0) * 1.1 || 1;
  const X = (x) => pad + ((x - x0) / (x1 - x0)) * (w - pad - 4);
  const Y = (y) => h - 12 - (y / y1) * (h - 26);
  const top = svg("text", { x: 3, y: 22 });
  top.textContent = `${y1.toFixed(y1 < 10 ? 2 : 0)} ${opts.unit}`;
  s.append(top);
  if (opts.dots) {
    for (const [x, y] of points) s.append(svg("circle", { cx: X(x), cy: Y(y), r: 1.6, fill: opts.color }));
  } else {
    const d = points.map(([x, y], i) => `${i ? "L" : "M"}${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join("");
    s.append(svg("path", { d, fill: "none", stroke: opts.color, "stroke-width": 1.5 }));
  }
  return s;
}

function meterCard(m) {
  const pts = m.samples.map(([t, w]) => [t, w]);
  return el("div", { class: "card", "data-meter": m.name },
    el("div", { class: "head" },
      el("span", { class: "name", textContent: m.name }),
      el("span", { class: "watts", textContent: m.watts != null ? `${m.watts.toFixed(2)} W` : "– W" })),
    plot(pts, { title: "watts, last 5 min", unit: "W", color: "#d97706" }));
}

function switchCard(s) {
  const ports = el("div", { class: "ports" });
  for (const p of s.ports) {
    const up = p.oper === "Up" || p.oper === "up";
    ports.append(el("span", { class: `port ${up ? "up" : "down"}`, title: `${p.descr || ""} ${p.oper}`,
      textContent: `${p.key}${p.worker ? ` → ${p.worker}` : ""}` }));
  }
  return el("div", { class: "card", "data-switch": s.name },
    el("div", { class: "head" }, el("span", { class: "name", textContent: s.name }),
      el("span", { class: `phase ${s.phase === "Reachable" ? "Ready" : "Failed"}`, textContent: s.phase })),
    ports);
}

function throughput(attempts) {
  if (attempts.length === 0) return [];
  const t0 = attempts[0][0], t1 = attempts[attempts.length - 1][0];
  const bin = Math.max(1000, Math.ceil((t1 - t0) / 30 / 1000) * 1000);
  const bins = new Map();
  for (const a of attempts) {
    const k = Math.floor((a[0] - t0) / bin);
    bins.set(k, (bins.get(k) || 0) + 1);
  }
  const n = Math.floor((t1 - t0) / bin);
  const out = [];
  for (let k = 0; k <= n; k++) out.push([t0 + k * bin, ((bins.get(k) || 0) * 60000) / bin]);
  return out;
}

function workloadCard(w) {
  const enc = encodeURIComponent(w.name);
  const card = el("div", { class: "card", "data-workload": w.name, "data-phase": w.phase });
  const head = el("div", { class: "head" },
    el("span", { class: "name", textContent: w.name }),
    el("span", { class: "mute", textContent: w.run ? `run ${w.run} · ${w.phase}` : w.phase }),
    button("Rerun", `api/workloads/${enc}/rerun`, {}, `Run workload ${w.name} again?`));
  card.append(head);
  if (!w.run) return card;
  const done = w.succeeded + w.failed;
  card.append(el("div", { class: "progress" }, el("div", { style: `width:${(w.progress * 100).toFixed(1)}%` })));
  card.append(el("div", { class: "mute", textContent:
    `${done}/${w.total} done · ${w.succeeded} ok · ${w.failed} failed · ${w.retried} retried` }));
  const lat = w.attempts.filter((a) => a[1] != null).map((a) => [a[0], a[1]]);
  card.append(el("div", { class: "plots" },
    plot(lat, { title: "round trip per invocation", unit: "ms", color: "#2563eb", dots: true }),
    plot(throughput(w.attempts), { title: "throughput", unit: "/min", color: "#059669" })));
  return card;
}

function eventRow(e) {
  return el("tr", { class: e.type },
    el("td", { class: "mute", textContent: ago(e.time) }),
    el("td", { textContent: e.object }),
    el("td", { textContent: e.reason + (e.count > 1 ? ` ×${e.count}` : "") }),
    el("td", { textContent: e.message }));
}

function render(s) {
  $("#cluster").textContent = s.cluster || "";
  $("#rack").replaceChildren(...s.workers.map(workerTile));
  $("#meters").replaceChildren(...(s.meters.length ? s.meters.map(meterCard) : [el("p", { class: "mute" }, "no PowerMeter declared")]));
  $("#switches").replaceChildren(...(s.switches.length ? s.switches.map(switchCard) : [el("p", { class: "mute" }, "no Switch declared")]));
  $("#workloads").replaceChildren(...(s.workloads.length ? s.workloads.map(workloadCard) : [el("p", { class: "mute" }, "no Workload declared")]));
  $("#events tbody").replaceChildren(...s.events.map(eventRow));
  window.microfaasSnapshots = (window.microfaasSnapshots || 0) + 1;
}

function connect() {
  const live = $("#live");
  const src = new EventSource("api/events");
  src.addEventListener("snapshot", (m) => {
    live.textContent = "live";
    live.className = "live on";
    render(JSON.parse(m.data));
  });
  src.onerror = () => {
    live.textContent = "reconnecting…";
    live.className = "live off";
  };
}

connect();
