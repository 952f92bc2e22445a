// proxbalance dashboard: hash routes over /api/v1/, live updates from /api/v1/stream.
// Every string from the API reaches the page through textContent or an attribute, never as
// markup. The bearer token lives in this tab's sessionStorage and travels only in the
// Authorization header (never in a URL).
"use strict";

const TOKEN_KEY = "proxbalance.token";
const SVG = "http://www.w3.org/2000/svg";
const app = document.getElementById("app");
const crumbs = document.getElementById("crumbs");
const liveBadge = document.getElementById("live");
const loginForm = document.getElementById("login");
const logoutButton = document.getElementById("logout");

let page = null; // { kind, cluster, vmid, reload }
let renderSeq = 0;
let stream = null; // { cluster, controller }
let reloadTimer = null;
let skipFilter = { reason: "", text: "" };
let clusterQuery = { q: "", offset: 0 };

// ---------------------------------------------------------------- DOM helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = String(v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

const fmt = {
  pct: (v) => (v === null || v === undefined || Number.isNaN(v) ? "–" : `${v.toFixed(1)} %`),
  num: (v, d = 1) => (v === null || v === undefined || Number.isNaN(v) ? "–" : v.toFixed(d)),
  ratio: (v) => (v ? `${v.toFixed(2)}×` : "–"),
  gib: (b) => (b ? `${(b / 1073741824).toFixed(1)} GiB` : "0"),
  rate: (bps) => {
    if (!bps) return "0 B/s";
    const units = ["B/s", "KiB/s", "MiB/s", "GiB/s"];
    let i = 0;
    while (bps >= 1024 && i < units.length - 1) { bps /= 1024; i++; }
    return `${bps.toFixed(bps < 10 ? 1 : 0)} ${units[i]}`;
  },
  age: (ms) => {
    if (ms === null || ms === undefined) return "–";
    const s = Math.round(ms / 1000);
    if (s < 90) return `${s} s`;
    if (s < 5400) return `${Math.round(s / 60)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  },
  time: (ms) => (ms ? new Date(ms).toLocaleTimeString() : "–"),
  words: (w) => String(w || "").replace(/_/g, " "),
};

function badge(text, kind, title) {
  return h("span", { class: `badge ${kind || ""}`, title }, text);
}

function section(title, id, ...body) {
  return h("section", { class: "card", id }, h("h2", {}, title), ...body);
}

// A bar with the value, an optional marker line (e.g. the 95 % capacity line) and a
// threshold tint.
function bar(value, max, warn, marker) {
  const pct = Math.max(0, Math.min(100, (value / max) * 100));
  const fill = h("span", { class: `fill ${value >= warn ? "hot" : ""}` });
  fill.style.width = `${pct}%`;
  const el = h("span", { class: "bar" }, fill);
  if (marker !== undefined) {
    const m = h("span", { class: "marker", title: `${marker} % capacity line` });
    m.style.left = `${Math.min(100, (marker / max) * 100)}%`;
    el.append(m);
  }
  return el;
}

// An inline SVG sparkline of `values` (0..max; hourly, oldest first, null where an hour has no
// figure), with the threshold as a dashed line.
function sparkline(values, max, threshold, label) {
  const w = 120, hgt = 28;
  const pts = values.map((v, i) => [i, v]).filter(([, v]) => typeof v === "number" && !Number.isNaN(v));
  if (pts.length === 0) return h("div", { class: "spark-empty muted small" }, "no 24 h data yet");
  const svg = s("svg", { class: "spark", viewBox: `0 0 ${w} ${hgt}`, preserveAspectRatio: "none", role: "img", "aria-label": label });
  const y = (v) => hgt - 2 - (Math.max(0, Math.min(max, v)) / max) * (hgt - 4);
  const x = (i) => (values.length === 1 ? w / 2 : (i / (values.length - 1)) * (w - 2) + 1);
  if (threshold !== undefined) {
    svg.append(s("line", { x1: 0, x2: w, y1: y(threshold), y2: y(threshold), class: "spark-threshold" }));
  }
  const line = pts.length === 1
    ? [[x(pts[0][0]) - 2, y(pts[0][1])], [x(pts[0][0]) + 2, y(pts[0][1])]]
    : pts.map(([i, v]) => [x(i), y(v)]);
  const d = line.map(([px, py], k) => `${k ? "L" : "M"}${px.toFixed(1)},${py.toFixed(1)}`).join(" ");
  const first = line[0][0].toFixed(1), last = line[line.length - 1][0].toFixed(1);
  svg.append(s("path", { d: `${d} L${last},${hgt} L${first},${hgt} Z`, class: "spark-area" }));
  svg.append(s("path", { d, class: "spark-line" }));
  svg.append(s("title", {}, `${label}: ${pts.length} hourly points, last ${pts[pts.length - 1][1].toFixed(1)} %`));
  return svg;
}

function copyButton(text) {
  const b = h("button", { class: "copy", type: "button", title: "copy the command" }, "copy");
  b.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) {
      const ta = h("textarea", {}, text);
      document.body.append(ta);
      ta.select();
      document.execCommand("copy");
      ta.remove();
    }
    b.textContent = "copied";
    setTimeout(() => { b.textContent = "copy"; }, 1500);
  });
  return b;
}

// ---------------------------------------------------------------- API

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function headers() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path) {
  const r = await fetch(`/api/v1/${path}`, { headers: headers(), cache: "no-store" });
  let body = null;
  try { body = await r.json(); } catch (_) { body = null; }
  if (!r.ok) {
    if (r.status === 401) showLogin(body && body.error);
    throw new ApiError(r.status, (body && body.error) || `HTTP ${r.status}`);
  }
  return body;
}

const enc = encodeURIComponent;

function showLogin(message) {
  loginForm.hidden = false;
  app.hidden = true;
  const err = document.getElementById("login-error");
  if (token() && message) {
    err.textContent = message;
    err.hidden = false;
  }
  document.getElementById("token").focus();
}

loginForm.addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
  document.getElementById("token").value = "";
  loginForm.hidden = true;
  app.hidden = false;
  logoutButton.hidden = false;
  stopStream();
  render();
});

logoutButton.addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  logoutButton.hidden = true;
  stopStream();
  showLogin();
});

// ---------------------------------------------------------------- live updates

function setLive(state, title) {
  liveBadge.className = `live ${state}`;
  liveBadge.textContent = state === "on" ? "live" : state === "off" ? "offline" : "reconnecting";
  liveBadge.title = title || "";
}

function stopStream() {
  if (stream) stream.controller.abort();
  stream = null;
}

// One stream at a time, filtered to the page's cluster; read with fetch() so that the token
// goes in a header. Reconnects after a pause when it ends.
function ensureStream(cluster) {
  if (stream && stream.cluster === cluster) return;
  stopStream();
  const controller = new AbortController();
  const mine = { cluster, controller };
  stream = mine;
  (async () => {
    let delay = 1000;
    while (stream === mine) {
      try {
        const q = cluster ? `?cluster=${enc(cluster)}` : "";
        const r = await fetch(`/api/v1/stream${q}`, { headers: headers(), signal: controller.signal, cache: "no-store" });
        if (r.status === 401) { setLive("off", "token refused"); showLogin(); return; }
        if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
        setLive("on");
        delay = 1000;
        const reader = r.body.getReader();
        const decoder = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += decoder.decode(value, { stream: true });
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            let kind = "message", data = "";
            for (const line of block.split("\n")) {
              if (line.startsWith("event: ")) kind = line.slice(7);
              else if (line.startsWith("data: ")) data += line.slice(6);
            }
            if (data) onLive(kind, JSON.parse(data));
          }
        }
      } catch (e) {
        if (controller.signal.aborted) return;
        setLive("retry", String(e.message || e));
      }
      if (stream !== mine) return;
      setLive("retry");
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 15000);
    }
  })();
}

function onLive(kind, data) {
  if (!page) return;
  if (kind === "lagged" || kind === "hello") {
    if (kind === "lagged") scheduleReload(0);
    return;
  }
  // a set or an overload of what the page shows: reload it (the event feed comes with it)
  if (page.kind === "clusters" || data.cluster === page.cluster) {
    scheduleReload(page.kind === "clusters" ? 1000 : 150);
  }
}

function scheduleReload(ms) {
  if (reloadTimer) return;
  reloadTimer = setTimeout(() => {
    reloadTimer = null;
    if (page && page.reload) page.reload();
  }, ms);
}

// ---------------------------------------------------------------- routing

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "cluster" && parts[1] && parts[2] === "guest" && parts[3]) {
    return { kind: "guest", cluster: parts[1], vmid: parts[3] };
  }
  if (parts[0] === "cluster" && parts[1]) return { kind: "cluster", cluster: parts[1] };
  return { kind: "clusters" };
}

function setCrumbs(r) {
  crumbs.replaceChildren(h("a", { href: "#/" }, "clusters"));
  if (r.cluster) {
    crumbs.append(h("span", { class: "sep" }, "/"), h("a", { href: `#/cluster/${enc(r.cluster)}` }, r.cluster));
  }
  if (r.vmid) crumbs.append(h("span", { class: "sep" }, "/"), h("span", {}, `guest ${r.vmid}`));
}

function render() {
  const r = route();
  setCrumbs(r);
  page = { ...r, reload: null };
  const seq = ++renderSeq;
  const draw = async () => {
    if (seq !== renderSeq) return;
    try {
      let view;
      if (r.kind === "clusters") view = await clustersPage();
      else if (r.kind === "cluster") view = await clusterPage(r.cluster);
      else view = await guestPage(r.cluster, r.vmid);
      if (seq !== renderSeq) return;
      const y = window.scrollY;
      app.replaceChildren(view);
      window.scrollTo(0, y);
      app.dataset.page = r.kind;
      app.dataset.renders = String(Number(app.dataset.renders || 0) + 1);
      performance.mark(`pb-rendered-${app.dataset.renders}`);
    } catch (e) {
      if (seq !== renderSeq) return;
      if (e.status === 401) return;
      app.replaceChildren(h("div", { class: "card error", id: "page-error" }, String(e.message || e)));
      app.dataset.page = "error";
    }
  };
  page.reload = draw;
  ensureStream(r.kind === "clusters" ? "" : r.cluster);
  return draw();
}

window.addEventListener("hashchange", () => { skipFilter = { reason: "", text: "" }; render(); });

// ---------------------------------------------------------------- clusters page

async function clustersPage() {
  const q = clusterQuery;
  const data = await api(`clusters?q=${enc(q.q)}&offset=${q.offset}&limit=50`);
  const search = h("input", { type: "search", id: "cluster-search", placeholder: "search clusters", value: q.q });
  let t = null;
  search.addEventListener("input", () => {
    clearTimeout(t);
    t = setTimeout(() => { clusterQuery = { q: search.value, offset: 0 }; render().then(() => {
      const el = document.getElementById("cluster-search");
      if (el) { el.focus(); el.setSelectionRange(el.value.length, el.value.length); }
    }); }, 250);
  });
  const rows = data.clusters.map((c) => h("tr", { "data-cluster": c.name, class: `health-${c.health}` },
    h("td", {}, h("span", { class: `dot ${c.health}`, title: c.health }), h("a", { href: `#/cluster/${enc(c.name)}`, class: "cluster-link" }, c.name),
      c.problems.length ? h("div", { class: "muted small" }, c.problems.join(" · ")) : null),
    h("td", {}, badge(c.health, c.health)),
    h("td", { class: "num" }, c.nodes, c.stale_nodes ? h("span", { class: "muted small" }, ` (${c.stale_nodes} stale)`) : null),
    h("td", { class: "num" }, c.guests),
    h("td", { class: `num ${c.overloads ? "warn-text" : ""}` }, c.overloads),
    h("td", { class: "num" }, c.moves),
    h("td", { class: "num" }, fmt.age(c.age_ms)),
    h("td", { class: `num ${c.collector_errors ? "warn-text" : ""}` }, c.collector_errors)));
  const pager = h("div", { class: "pager" },
    h("button", { type: "button", disabled: q.offset === 0, onclick: () => { clusterQuery = { ...q, offset: Math.max(0, q.offset - data.limit) }; render(); } }, "‹ previous"),
    h("span", { class: "muted" }, data.matched ? `${q.offset + 1}–${q.offset + data.clusters.length} of ${data.matched}` : "no cluster"),
    h("button", { type: "button", disabled: q.offset + data.limit >= data.matched, onclick: () => { clusterQuery = { ...q, offset: q.offset + data.limit }; render(); } }, "next ›"));
  return h("div", {},
    h("div", { class: "page-head" },
      h("h1", {}, "Clusters"),
      h("div", { class: "counts" },
        badge(`${data.health.critical} critical`, "critical"),
        badge(`${data.health.warning} warning`, "warning"),
        badge(`${data.health.ok} ok`, "ok"),
        h("span", { class: "muted" }, `${data.total} clusters`))),
    h("div", { class: "card" },
      h("div", { class: "toolbar" }, search, pager),
      h("table", { id: "clusters-table", class: "grid" },
        h("thead", {}, h("tr", {}, ["cluster", "health", "nodes", "guests", "overloads", "moves pending", "data age", "collector errors"].map((c) => h("th", {}, c)))),
        h("tbody", {}, rows))));
}

// ---------------------------------------------------------------- cluster page

function nodeBadges(n, score, overcommitThreshold) {
  const b = [];
  if (n.maintenance) b.push(badge("maintenance", "info"));
  if (n.status !== "online") b.push(badge(n.status, "critical"));
  if (n.stale) b.push(badge("stale", "warning", "no snapshot within state.staleness_s"));
  else if (n.missed_cycle) b.push(badge("missed cycle", "warning"));
  if (score && score.iowait_stressed) b.push(badge("IOWait-stressed", "warning"));
  if (n.overcommit_ratio > overcommitThreshold) b.push(badge("overcommitted", "warning", `committed/total ${fmt.ratio(n.overcommit_ratio)}`));
  for (const r of n.overloaded) b.push(badge(`overload: ${fmt.words(r)}`, "critical"));
  if (n.error) b.push(badge("collector error", "warning", n.error));
  return b;
}

function metricCell(current, avg24, series, idx, threshold, label) {
  return h("td", { class: "metric" },
    h("div", { class: "metric-row" }, h("strong", {}, fmt.pct(current)), h("span", { class: "muted small" }, `24 h ${fmt.pct(avg24)}`)),
    bar(current || 0, 100, threshold),
    sparkline(series.map((p) => p[idx]), 100, threshold, `${label}, last 24 h`));
}

function nodesTable(state, set) {
  const scores = new Map((set ? set.node_scores : []).map((n) => [n.node, n]));
  const t = state.thresholds;
  const rows = state.nodes.map((n) => {
    const sc = scores.get(n.node);
    const series = n.series_24h || [];
    return h("tr", { "data-node": n.node, class: n.status !== "online" || n.stale ? "dim" : "" },
      h("td", { class: "node-name" }, h("strong", {}, n.node), h("div", { class: "badges" }, nodeBadges(n, sc, state.overcommit_threshold)),
        h("div", { class: "muted small" }, `${n.running_guests}/${n.guests} guests running`)),
      h("td", { class: "num score", title: "the node's score as a target (lower is better)" }, sc ? fmt.num(sc.score) : "–"),
      metricCell(n.cpu, n.avg_cpu_24h, series, 1, t.cpu, "CPU"),
      metricCell(n.mem, n.avg_mem_24h, series, 2, t.mem, "memory"),
      h("td", { class: "metric committed" },
        h("div", { class: "metric-row" }, h("strong", {}, fmt.pct(n.committed_pct)), h("span", { class: "muted small" }, `24 h ${fmt.pct(n.avg_committed_24h)}`)),
        bar(Math.min(n.committed_pct, 150), 150, 95, 95),
        h("div", { class: "metric-row small" },
          h("span", { class: "muted" }, `${fmt.gib(n.committed_mem_bytes)} of ${fmt.gib(n.mem_total_bytes)}`),
          h("span", { class: n.overcommit_ratio > state.overcommit_threshold ? "warn-text" : "muted" }, `ratio ${fmt.ratio(n.overcommit_ratio)}`)),
        sparkline(series.map((p) => p[4]), 150, 95, "committed memory")),
      metricCell(n.iowait, n.avg_iowait_24h, series, 3, t.iowait, "IOWait"));
  });
  return h("table", { id: "nodes-table", class: "grid nodes" },
    h("thead", {}, h("tr", {}, ["node", "score", "CPU", "memory", "committed memory (95 % line)", "IOWait"].map((c) => h("th", {}, c)))),
    h("tbody", {}, rows));
}

function gainOf(r) {
  return r.gain ? r.gain.total - r.gain.cost : r.score_improvement;
}

function movesTable(cluster, set) {
  if (!set.recommendations.length) {
    return h("p", { class: "muted", id: "no-moves" }, set.summary.convergence_message || "No move: the cluster is balanced.");
  }
  const rows = set.recommendations.map((r, i) => h("tr", { "data-vmid": r.vmid },
    h("td", { class: "num" }, i + 1),
    h("td", {}, h("a", { class: "guest-link", href: `#/cluster/${enc(cluster)}/guest/${r.vmid}` }, `${r.vmid} ${r.name}`), h("div", { class: "muted small" }, r.type)),
    h("td", { class: "move-cell" }, h("span", { class: "node-pill" }, r.source_node), " → ", h("span", { class: "node-pill" }, r.target_node)),
    h("td", {}, badge(fmt.words(r.reason.kind), "info"), h("div", { class: "small" }, r.reason.summary)),
    h("td", { class: "num" }, fmt.num(gainOf(r), 2)),
    h("td", { class: "num" }, `${fmt.num(r.confidence, 0)} %`),
    h("td", {}, badge(r.risk.level, r.risk.level === "high" ? "critical" : r.risk.level === "low" ? "ok" : "warning", (r.risk.factors || []).join("; "))),
    h("td", { class: "cmd" }, h("code", {}, r.command), copyButton(r.command))));
  return h("table", { id: "moves-table", class: "grid" },
    h("thead", {}, h("tr", {}, ["#", "guest", "move", "reason", "gain", "confidence", "risk", "command"].map((c) => h("th", {}, c)))),
    h("tbody", {}, rows));
}

// before → after, the after value green when better, red when worse (`lowerIsBetter` null:
// neither).
function arrow(before, after, f, lowerIsBetter = true) {
  const better = lowerIsBetter === null ? false : lowerIsBetter ? after < before - 1e-9 : after > before + 1e-9;
  const worse = lowerIsBetter === null ? false : lowerIsBetter ? after > before + 1e-9 : after < before - 1e-9;
  return h("span", { class: "delta" }, f(before), " → ", h("span", { class: better ? "good-text" : worse ? "warn-text" : "" }, f(after)));
}

function predictionTable(set) {
  const p = set.prediction;
  const rows = p.nodes.map((n) => h("tr", { "data-node": n.node },
    h("td", {}, n.node, n.maintenance ? badge("maintenance", "info") : null),
    h("td", {}, arrow(n.before.cpu, n.after.cpu, fmt.pct)),
    h("td", {}, arrow(n.before.mem, n.after.mem, fmt.pct)),
    h("td", {}, arrow(n.before.committed_pct, n.after.committed_pct, fmt.pct)),
    h("td", {}, arrow(n.before.iowait, n.after.iowait, fmt.pct)),
    h("td", {}, arrow(n.before.score, n.after.score, (v) => fmt.num(v))),
    h("td", { class: "num" }, arrow(n.before.running_guests, n.after.running_guests, String, null))));
  return h("table", { id: "prediction-table", class: "grid" },
    h("thead", {}, h("tr", {}, ["node", "CPU", "memory", "committed", "IOWait", "score", "guests"].map((c) => h("th", {}, c)))),
    h("tbody", {}, rows));
}

function imbalance(set) {
  const b = set.prediction.imbalance_before, a = set.prediction.imbalance_after;
  return h("div", { class: "stats", id: "imbalance" },
    stat("imbalance (CV)", arrow(b.normalized_cv, a.normalized_cv, (v) => fmt.num(v, 3))),
    stat("CPU spread", arrow(b.cpu_spread, a.cpu_spread, fmt.pct)),
    stat("memory spread", arrow(b.mem_spread, a.mem_spread, fmt.pct)),
    stat("objective", arrow(set.prediction.objective_before, set.prediction.objective_after, (v) => fmt.num(v, 1))),
    stat("cluster health", arrow(set.summary.cluster_health, set.summary.predicted_health, (v) => fmt.num(v, 0), false)));
}

function stat(label, value) {
  return h("div", { class: "stat" }, h("div", { class: "muted small" }, label), h("div", { class: "stat-value" }, value));
}

function skippedSection(cluster, set) {
  const reasons = [...new Set(set.skipped.map((g) => g.reason))].sort();
  const tbody = h("tbody", {});
  const count = h("span", { class: "muted small", id: "skipped-count" });
  const fill = () => {
    const text = skipFilter.text.toLowerCase();
    const shown = set.skipped.filter((g) => (!skipFilter.reason || g.reason === skipFilter.reason)
      && (!text || `${g.vmid} ${g.name} ${g.node} ${g.detail}`.toLowerCase().includes(text)));
    tbody.replaceChildren(...shown.slice(0, 200).map((g) => h("tr", { "data-vmid": g.vmid },
      h("td", {}, h("a", { href: `#/cluster/${enc(cluster)}/guest/${g.vmid}` }, g.vmid)),
      h("td", {}, g.name), h("td", {}, g.node), h("td", {}, badge(fmt.words(g.reason), "muted-badge")), h("td", { class: "small" }, g.detail))));
    count.textContent = shown.length > 200 ? `first 200 of ${shown.length}` : `${shown.length} of ${set.skipped.length}`;
  };
  const select = h("select", { id: "skip-reason" }, h("option", { value: "" }, "every reason"),
    reasons.map((r) => h("option", { value: r, selected: r === skipFilter.reason }, `${fmt.words(r)} (${set.summary.skip_reasons[r] || 0})`)));
  select.addEventListener("change", () => { skipFilter.reason = select.value; fill(); });
  const search = h("input", { type: "search", id: "skip-search", placeholder: "filter guests", value: skipFilter.text });
  search.addEventListener("input", () => { skipFilter.text = search.value; fill(); });
  fill();
  return section(`Skipped guests (${set.skipped.length})`, "skipped",
    h("div", { class: "toolbar" }, select, search, count),
    h("table", { id: "skipped-table", class: "grid compact" },
      h("thead", {}, h("tr", {}, ["vmid", "name", "node", "reason", "detail"].map((c) => h("th", {}, c)))), tbody));
}

function eventRow(e) {
  return h("li", { class: `event ${e.state}`, "data-node": e.node },
    h("span", { class: "muted small" }, fmt.time(e.at_unix_ms)),
    badge(e.state, e.state === "raised" ? "critical" : "ok"),
    h("strong", {}, e.node), " ", fmt.words(e.reason),
    h("span", { class: "muted small" }, ` value ${fmt.num(e.value, 2)}, threshold ${fmt.num(e.threshold, 2)}${e.avg_24h !== null && e.avg_24h !== undefined ? `, 24 h ${fmt.num(e.avg_24h, 2)}` : ""}`));
}

async function clusterPage(cluster) {
  const c = enc(cluster);
  const [state, recs, events] = await Promise.all([
    api(`clusters/${c}`),
    api(`clusters/${c}/recommendations`).catch((e) => ({ error: e })),
    api(`events?cluster=${c}&limit=100`).catch(() => ({ events: [] })),
  ]);
  const set = recs.error ? null : recs.set;
  document.body.dataset.cycle = String(state.cycle || "");
  const stale = state.nodes.filter((n) => n.stale).length;
  const head = h("div", { class: "page-head" },
    h("h1", { id: "cluster-name" }, cluster),
    h("div", { class: "stats", id: "cluster-meta", "data-cycle": state.cycle || "", "data-generation": recs.generation || "" },
      stat("nodes", `${state.nodes.length}${stale ? ` (${stale} stale)` : ""}`),
      stat("moves pending", set ? String(set.recommendations.length) : "–"),
      stat("urgency", set ? set.summary.urgency : "–"),
      stat("data age", fmt.age(state.age_ms)),
      stat("updated", fmt.time(state.data_at_unix_ms)),
      stat("PVE", state.pve_version || "–")));
  const errors = state.collector_errors.length
    ? section(`Collector errors (${state.collector_errors.length})`, "collector-errors",
      h("ul", { class: "errors" }, state.collector_errors.map((e) => h("li", {}, h("strong", {}, e.node || "cluster"), ` ${e.kind} ${e.path}: ${e.message}`))))
    : null;
  const plan = set
    ? section(`Plan: ${set.recommendations.length} move(s)`, "plan", imbalance(set), movesTable(cluster, set),
      set.deferred && set.deferred.length ? h("p", { class: "muted small" }, `${set.deferred.length} move(s) deferred by the plan's limits.`) : null,
      set.unresolved && set.unresolved.length ? h("ul", { class: "errors" }, set.unresolved.map((u) => h("li", {}, `${fmt.words(u.rule)} on ${u.node}: ${u.detail}`))) : null)
    : section("Plan", "plan", h("p", { class: "error", id: "plan-error" }, String(recs.error.message || recs.error)));
  const eventList = h("ul", { class: "events", id: "event-list" }, events.events.map(eventRow));
  return h("div", {},
    head, errors,
    section("Nodes", "nodes", nodesTable(state, set)),
    plan,
    set ? section("Predicted state: before → after", "prediction", predictionTable(set)) : null,
    set ? skippedSection(cluster, set) : null,
    section("Overload events", "events", events.events.length ? null : h("p", { class: "muted", id: "no-events" }, "No overload raised or cleared in the events stream."), eventList));
}

// ---------------------------------------------------------------- guest page

// A target's score details are flattened into it (absent for a node that is not online).
function scored(o) {
  return o && typeof o.score === "number" ? o : null;
}

function penalties(details) {
  if (!details || !details.penalties) return [];
  return Object.entries(details.penalties)
    .filter(([, v]) => Math.abs(v) > 1e-9)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => h("span", { class: "chip" }, `${fmt.words(k)} ${fmt.num(v, 1)}`));
}

async function guestPage(cluster, vmid) {
  const c = enc(cluster);
  const [guest, options, recs] = await Promise.all([
    api(`clusters/${c}/guests/${enc(vmid)}`),
    api(`clusters/${c}/guests/${enc(vmid)}/options`).catch((e) => ({ error: e })),
    api(`clusters/${c}/recommendations`).catch(() => null),
  ]);
  const move = recs && recs.set.recommendations.find((r) => String(r.vmid) === String(guest.vmid));
  const skipped = recs && recs.set.skipped.find((g) => String(g.vmid) === String(guest.vmid));
  const figures = h("div", { class: "stats", id: "guest-figures" },
    stat("node", guest.node),
    stat("status", guest.status),
    stat("CPU", `${fmt.pct(guest.cpu)} of ${fmt.num(guest.vcpus, 0)} vCPU`),
    stat("memory", `${fmt.gib(guest.mem_used_bytes)} / ${fmt.gib(guest.mem_max_bytes)}`),
    stat("disk read / write", `${fmt.rate(guest.disk_read_bps)} / ${fmt.rate(guest.disk_write_bps)}`),
    stat("network in / out", `${fmt.rate(guest.net_in_bps)} / ${fmt.rate(guest.net_out_bps)}`),
    stat("pool", guest.pool || "–"),
    stat("tags", guest.tags.length ? guest.tags.join(", ") : "–"));
  const flags = [];
  if (guest.ha_managed) flags.push(badge("HA-managed", "info"));
  if (guest.lock) flags.push(badge(`locked: ${guest.lock}`, "warning"));
  if (guest.passthrough) flags.push(badge("passthrough", "warning"));
  if (guest.local_storages.length) flags.push(badge(`local disks: ${guest.local_storages.join(", ")}`, "warning"));
  const plan = move
    ? h("div", { class: "move card", id: "guest-move" },
      h("h2", {}, "Recommended move"),
      h("p", {}, h("span", { class: "node-pill" }, move.source_node), " → ", h("span", { class: "node-pill" }, move.target_node), " ", badge(fmt.words(move.reason.kind), "info"), " ", move.reason.summary),
      h("p", { class: "small" }, `gain ${fmt.num(gainOf(move), 2)}, confidence ${fmt.num(move.confidence, 0)} %, risk ${move.risk.level}`),
      h("div", { class: "cmd" }, h("code", {}, move.command), copyButton(move.command)))
    : skipped
      ? h("div", { class: "card", id: "guest-skipped" }, h("h2", {}, "Not planned"), h("p", {}, badge(fmt.words(skipped.reason), "muted-badge"), " ", skipped.detail))
      : h("div", { class: "card muted", id: "guest-stays" }, "No move planned for this guest.");
  let optionsSection;
  if (options.error) {
    optionsSection = section("Options", "options", h("p", { class: "error", id: "options-error" }, String(options.error.message || options.error)));
  } else {
    const src = options.source;
    const targets = [...options.targets].sort((a, b) => (b.eligible - a.eligible) || ((scored(a) ? a.score : 1e9) - (scored(b) ? b.score : 1e9)));
    const rows = [
      h("tr", { class: "source", "data-node": src.node },
        h("td", {}, h("strong", {}, src.node), " ", badge("current", "info")),
        h("td", { class: "num" }, fmt.num(src.score)),
        h("td", { class: "gate" }, src.guest_gate ? h("span", {}, badge(fmt.words(src.guest_gate.reason), "muted-badge"), " ", src.guest_gate.detail) : h("span", { class: "muted" }, `boost ${fmt.num(src.boost, 1)}`)),
        h("td", {}, penalties(src))),
      ...targets.map((t) => h("tr", { "data-node": t.node, class: t.eligible ? "" : "dim" },
        h("td", {}, h("strong", {}, t.node), " ", t.eligible ? badge("eligible", "ok") : badge("refused", "critical")),
        h("td", { class: "num" }, scored(t) ? fmt.num(t.score) : "–"),
        h("td", { class: "gate" }, t.gate_reason || h("span", { class: "muted" }, "–")),
        h("td", {}, penalties(scored(t))))),
    ];
    optionsSection = section("Options: every node as a target", "options",
      h("p", { class: "muted small" }, "Lower scores are better targets; a refused node names the gate or rule that refuses it."),
      h("table", { id: "options-table", class: "grid" },
        h("thead", {}, h("tr", {}, ["node", "score", "gate / rule", "penalties"].map((x) => h("th", {}, x)))),
        h("tbody", {}, rows)));
  }
  return h("div", {},
    h("div", { class: "page-head" },
      h("h1", { id: "guest-name" }, `${guest.vmid} ${guest.name}`, " ", h("span", { class: "muted small" }, guest.type)),
      h("div", { class: "badges" }, flags)),
    h("div", { class: "card" }, figures),
    plan,
    optionsSection);
}

// ---------------------------------------------------------------- start

if (token()) logoutButton.hidden = false;
render();
