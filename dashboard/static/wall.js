// Dispatch wall screen: mine schematic, alarm banner with sound, incidents, point table with
// filters, trend chart (ECharts, served from npm by the API). Live data over /ws/live and
// /ws/alarms; reconnects by itself and greys out when data is stale.
"use strict";
const STATE_LABEL = { normal: "正常", alarm: "报警", cut: "断电", fault: "故障", stale: "无数据",
  calibrating: "标校" };
const KIND_LABEL = { over_limit: "超限", power_cut_limit: "断电", under_limit: "低限",
  fault: "故障", stale: "通讯中断", cut_unverified: "馈电异常", lockout: "闭锁",
  spool_full: "缓存满", trend: "趋势预警", suspect: "数据异常", alarm_flood: "报警泛滥" };
const ALARM_STATE = { unack_active: "未确认", ack_active: "已确认", unack_rtn: "已恢复未确认",
  cleared: "已消除" };
const STEP_STATE = { pending: "待通知", active: "进行中", done: "完成", overdue: "超时",
  failed: "失败", skipped: "跳过" };
const USER = "调度员";
const points = new Map();   // id -> {meta, row, node, live}
const alarms = new Map();   // id -> alarm json
const commands = new Map();
const incidents = new Map();
const relays = new Map();   // id -> {area, cut}
let layout = null;
let lastMessage = 0;
let selected = null;        // point id shown in the chart
let span = 600;             // chart span, seconds
let chart = null;
let chartData = [];
let trendInfo = null;
let shiftStart = null;
let chartDirty = false;

const $ = (sel) => document.querySelector(sel);
const fmtTime = (iso) => iso ? new Date(iso).toLocaleTimeString("zh-CN", { hour12: false }) : "";
const post = (url, body) => api(url, { method: "POST",
  headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

const SVG = "http://www.w3.org/2000/svg";
const el = (tag, attrs = {}) => {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
};

function fmtValue(p, v) {
  if (v === null || v === undefined) return "—";
  if (["fan", "smoke", "feed"].includes(p.kind)) {
    return { fan: v >= 0.5 ? "开" : "停", smoke: v >= 0.5 ? "有烟" : "无烟",
      feed: v >= 0.5 ? "有电" : "无电" }[p.kind];
  }
  const digits = p.kind === "ch4" || p.kind === "co2" || p.kind === "wind" ? 2 : 1;
  return Number(v).toFixed(digits);
}

// --- points table and filters ---------------------------------------------------------------
async function loadPoints() {
  const [list, mine] = await Promise.all([
    api("/api/v1/points").then((r) => r.json()),
    api("/api/v1/mine").then((r) => r.json())]);
  layout = mine;
  $("#mine-name").textContent = `${mine.mine.name} · 安全监控调度大屏`;
  for (const r of mine.relays) relays.set(r.id, { area: r.area, cut: r.cut });
  const body = $("#points tbody");
  body.innerHTML = "";
  const kinds = new Map(), areas = new Map();
  for (const p of list) {
    const tr = document.createElement("tr");
    tr.dataset.point = p.id;
    tr.dataset.kind = p.kind;
    tr.dataset.area = p.area;
    tr.title = `${p.kind_name} · ${p.location_name || ""} · ${p.area_name}`;
    tr.innerHTML = `<td>${p.id}</td><td class="pname">${p.name}</td>
      <td class="num value"></td><td>${p.unit}</td><td><span class="state"></span></td>`;
    tr.onclick = () => selectPoint(p.id);
    body.appendChild(tr);
    points.set(p.id, { meta: p, row: tr, node: null, live: p });
    kinds.set(p.kind, p.kind_name);
    areas.set(p.area, p.area_name);
  }
  fillSelect("#filter-kind", kinds);
  fillSelect("#filter-area", areas);
  drawSchematic(mine, list);
  for (const p of list) update(p);
  $("#count-points").textContent = list.length;
  applyFilter();
}

function fillSelect(sel, entries) {
  const s = $(sel);
  for (const [value, label] of entries) {
    const o = document.createElement("option");
    o.value = value; o.textContent = label;
    s.appendChild(o);
  }
}

function applyFilter() {
  const text = $("#filter-text").value.trim();
  const kind = $("#filter-kind").value, area = $("#filter-area").value;
  const state = $("#filter-state").value;
  for (const { meta, row } of points.values()) {
    const st = row.dataset.state;
    const ok = (!text || meta.id.includes(text) || meta.name.includes(text))
      && (!kind || meta.kind === kind) && (!area || meta.area === area)
      && (!state || (state === "abnormal" ? st !== "normal" : st === state));
    row.hidden = !ok;
  }
}

function update(u) {
  const entry = points.get(u.id);
  if (!entry) return;
  entry.live = u;
  const { row, node, meta } = entry;
  row.querySelector(".value").textContent = fmtValue(meta, u.value);
  row.querySelector(".state").textContent = STATE_LABEL[u.state] || u.state;
  row.dataset.state = u.state;
  row.dataset.value = u.value === null ? "" : u.value;
  if (node) {
    node.dataset.state = u.state;
    node.querySelector("text").textContent = fmtValue(meta, u.value);
  }
  if (u.id === selected && span === 600 && u.value !== null && u.ts) {
    chartData.push([new Date(u.ts).getTime(), u.value]);
    const cutoff = Date.now() - span * 1000;
    while (chartData.length && chartData[0][0] < cutoff) chartData.shift();
    chartDirty = true;
  }
  $("#count-cut").textContent = document.querySelectorAll('#points tr[data-state="cut"]').length;
}

// --- schematic ---------------------------------------------------------------------------------
function along(path, at) {
  const seg = [];
  let total = 0;
  for (let i = 1; i < path.length; i++) {
    const d = Math.hypot(path[i][0] - path[i - 1][0], path[i][1] - path[i - 1][1]);
    seg.push(d); total += d;
  }
  let want = at * total;
  for (let i = 1; i < path.length; i++) {
    if (want <= seg[i - 1] || i === path.length - 1) {
      const f = seg[i - 1] ? Math.min(1, want / seg[i - 1]) : 0;
      return [path[i - 1][0] + f * (path[i][0] - path[i - 1][0]),
        path[i - 1][1] + f * (path[i][1] - path[i - 1][1])];
    }
    want -= seg[i - 1];
  }
  return path[0];
}

function drawSchematic(mine, list) {
  const svg = $("#schematic");
  svg.innerHTML = "";
  const all = mine.roadways.flatMap((r) => r.path);
  if (!all.length) return;
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const pad = Math.max(x1 - x0, y1 - y0) * 0.06 + 20;
  svg.setAttribute("viewBox", `${x0 - pad} ${y0 - pad} ${x1 - x0 + 2 * pad} ${y1 - y0 + 2 * pad}`);
  svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
  const defs = el("defs");
  const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "5", refY: "5",
    markerWidth: "4", markerHeight: "4", orient: "auto" });
  marker.appendChild(el("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }));
  defs.appendChild(marker);
  svg.appendChild(defs);
  const layers = { cut: el("g"), evac: el("g"), road: el("g"), label: el("g"), pts: el("g") };
  for (const g of Object.values(layers)) svg.appendChild(g);
  for (const r of mine.roadways) {
    const d = "M" + r.path.map((p) => p.join(",")).join(" L");
    if (r.area) {
      layers.cut.appendChild(el("path", { d, class: "area-cut", "data-area": r.area,
        visibility: "hidden" }));
      layers.evac.appendChild(el("path", { d, class: "area-evac", "data-area": r.area,
        visibility: "hidden" }));
    }
    // Air flows from the first vertex to the last: arrows on every segment's middle.
    layers.road.appendChild(el("path", { d, class: `road ${r.kind}`, "data-roadway": r.id }));
    for (let i = 1; i < r.path.length; i++) {
      const [a, b] = [r.path[i - 1], r.path[i]];
      const m = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2];
      layers.road.appendChild(el("path", { d: `M${a.join(",")} L${m.join(",")}`,
        "marker-end": "url(#arrow)", stroke: "none", fill: "none" }));
    }
    const mid = along(r.path, 0.5);
    const label = el("text", { x: mid[0], y: mid[1] - 12, class: "road-label",
      "text-anchor": "middle" });
    label.textContent = r.name;
    layers.label.appendChild(label);
  }
  const placed = new Map();
  const roads = new Map(mine.roadways.map((r) => [r.id, r]));
  for (const p of list) {
    const road = roads.get(p.roadway);
    if (!road) continue;
    const [x, y] = along(road.path, p.at ?? 0.5);
    const key = `${Math.round(x / 25)},${Math.round(y / 25)}`;
    const n = placed.get(key) || 0;
    placed.set(key, n + 1);
    const g = el("g", { class: "pt", "data-point": p.id, transform: `translate(${x},${y})` });
    const title = el("title");
    title.textContent = `${p.id} ${p.name}`;
    g.appendChild(title);
    g.appendChild(el("circle", { r: 8 }));
    const t = el("text", { x: 12, y: 5 + n * 17 });
    g.appendChild(t);
    g.onclick = () => selectPoint(p.id);
    layers.pts.appendChild(g);
    points.get(p.id).node = g;
  }
  updateAreas();
}

function updateAreas() {
  const cut = new Set([...relays.values()].filter((r) => r.cut).map((r) => r.area));
  const evac = new Set();
  for (const inc of incidents.values()) {
    if (inc.state !== "open") continue;
    for (const s of inc.steps) {
      if (s.name.startsWith("evacuate:") && s.state !== "done") evac.add(s.extra.area);
    }
  }
  for (const path of document.querySelectorAll("#schematic .area-cut")) {
    const on = cut.has(path.dataset.area);
    path.setAttribute("visibility", on ? "visible" : "hidden");
    path.classList.toggle("on", on);
  }
  for (const path of document.querySelectorAll("#schematic .area-evac")) {
    const on = evac.has(path.dataset.area);
    path.setAttribute("visibility", on ? "visible" : "hidden");
    path.classList.toggle("on", on);
  }
}

// --- alarms and sound --------------------------------------------------------------------------
function alarmRank(a, b) {
  return a.severity - b.severity
    || (a.state.startsWith("unack") ? 0 : 1) - (b.state.startsWith("unack") ? 0 : 1)
    || (a.state === "unack_rtn" ? 1 : 0) - (b.state === "unack_rtn" ? 1 : 0)
    || (b.raised_at > a.raised_at ? 1 : -1);
}

// Root alarms first (by priority, unacknowledged first, newest first), each followed by the
// consequence alarms it suppresses by design; shelved / out-of-service ones last (ISA-18.2).
function screenOrder(open) {
  const children = new Map();
  for (const a of open) {
    if (a.suppressed && a.suppressed_by) {
      if (!children.has(a.suppressed_by)) children.set(a.suppressed_by, []);
      children.get(a.suppressed_by).push(a);
    }
  }
  const out = [];
  for (const a of open.filter((x) => x.annunciated).sort(alarmRank)) {
    out.push(a);
    out.push(...(children.get(a.id) || []).sort(alarmRank));
  }
  const placed = new Set(out.map((a) => a.id));
  out.push(...open.filter((a) => !placed.has(a.id)).sort(alarmRank));
  return out;
}

function renderAlarms() {
  const list = $("#alarm-list");
  const open = screenOrder([...alarms.values()].filter((a) => a.state !== "cleared"));
  list.innerHTML = open.length ? "" : '<li class="empty">无报警</li>';
  const unackPoints = new Set();
  for (const a of open) {
    const li = document.createElement("li");
    li.dataset.alarm = a.id;
    li.dataset.kind = a.kind;
    li.dataset.point = a.point_id;
    li.className = `sev${a.severity} ${a.state.startsWith("unack") ? "unack" : ""} ${a.state === "unack_rtn" ? "rtn" : ""}`
      + (a.annunciated ? "" : " quiet") + (a.suppressed ? " child" : "");
    li.innerHTML = `<time>${fmtTime(a.raised_at)}</time><span class="msg">【${KIND_LABEL[a.kind] || a.kind}】${a.message}</span>
      <span class="astate">${ALARM_STATE[a.state] || a.state}</span>`;
    if (a.state.startsWith("unack")) {
      if (a.annunciated) unackPoints.add(a.point_id);
      const b = document.createElement("button");
      b.textContent = "确认";
      b.onclick = (ev) => { ev.stopPropagation(); post(`/api/v1/alarms/${a.id}/ack`, { user: USER }); };
      li.appendChild(b);
    }
    li.onclick = () => points.has(a.point_id) && selectPoint(a.point_id);
    list.appendChild(li);
  }
  for (const { node, meta } of points.values()) {
    if (node) node.classList.toggle("unack", unackPoints.has(meta.id));
  }
  $("#count-alarms").textContent = open.filter((a) => a.state !== "unack_rtn").length;
  // The tone follows the highest-priority unacknowledged annunciated alarm; acknowledging
  // silences it. There is no mute-all.
  const unack = open.filter((a) => a.annunciated && a.state.startsWith("unack"));
  const level = unack.length ? Math.min(...unack.map((a) => a.severity)) : null;
  document.body.dataset.sound = level ? String(level) : "off";
}

let audio = null;
let beat = 0;
function armSound() {
  try {
    audio = audio || new (window.AudioContext || window.webkitAudioContext)();
    audio.resume();
    $("#sound").textContent = "报警声音已启用";
    $("#sound").classList.add("armed");
  } catch (e) { /* no audio device: the screen still flashes */ }
}

function tone(freq, start, dur) {
  const osc = audio.createOscillator(), gain = audio.createGain();
  osc.frequency.value = freq;
  osc.type = "square";
  gain.gain.value = 0.08;
  osc.connect(gain).connect(audio.destination);
  osc.start(audio.currentTime + start);
  osc.stop(audio.currentTime + start + dur);
}

function soundTick() {
  beat += 1;
  const level = document.body.dataset.sound;
  window.__tones = window.__tones || 0;
  if (level === "off" || !audio || audio.state !== "running") return;
  // 1 紧急: two high beeps every second; 2 高: one mid beep every second; 3 中: a low beep
  // every three seconds.
  if (level === "1") { tone(988, 0, 0.12); tone(988, 0.25, 0.12); window.__tones += 2; }
  else if (level === "2") { tone(740, 0, 0.2); window.__tones += 1; }
  else if (beat % 3 === 0) { tone(523, 0, 0.3); window.__tones += 1; }
}

// --- commands, incidents, shift -------------------------------------------------------------
function renderCommands() {
  const list = $("#command-list");
  const items = [...commands.values()].sort((a, b) => (b.issued_at > a.issued_at ? 1 : -1)).slice(0, 20);
  list.innerHTML = items.length ? "" : '<li class="empty">无指令</li>';
  const RESULT = { pending: "待执行", sent: "已下发", verified: "馈电确认", unverified: "未确认",
    failed: "失败", refused: "拒绝" };
  for (const c of items) {
    const li = document.createElement("li");
    li.className = c.result === "verified" ? "" : "sev1";
    li.dataset.command = c.id;
    li.innerHTML = `<time>${fmtTime(c.issued_at)}</time><span class="msg">${c.action === "cut" ? "断电" : "复电"} ${c.target_name}</span><span>${RESULT[c.result] || c.result}</span>`;
    list.appendChild(li);
  }
}

function onCommand(c) {
  commands.set(c.id, c);
  const r = relays.get(c.target);
  if (r && ["sent", "verified", "unverified"].includes(c.result)) r.cut = c.action === "cut";
  renderCommands();
  updateAreas();
}

function countdown(step) {
  if (!step.deadline || !["active", "pending", "overdue"].includes(step.state)) {
    return step.done_at ? fmtTime(step.done_at) : "";
  }
  const s = Math.round((new Date(step.deadline).getTime() - Date.now()) / 1000);
  const abs = Math.abs(s), mm = Math.floor(abs / 60), ss = String(abs % 60).padStart(2, "0");
  return s >= 0 ? `剩 ${mm}:${ss}` : `超时 ${mm}:${ss}`;
}

function renderIncidents() {
  const box = $("#incidents");
  const open = [...incidents.values()].filter((i) => i.state === "open")
    .sort((a, b) => (b.opened_at > a.opened_at ? 1 : -1));
  $("#count-incidents").textContent = open.length;
  if (!open.length) { box.innerHTML = '<p class="empty">无进行中的应急处置</p>'; return; }
  box.innerHTML = "";
  for (const inc of open) {
    const div = document.createElement("div");
    div.className = "incident";
    div.dataset.incident = inc.id;
    const peak = inc.peak && inc.peak.value != null ? `最高 ${Number(inc.peak.value).toFixed(2)}%` : "";
    div.innerHTML = `<h3>${inc.title} <small>${fmtTime(inc.opened_at)} ${peak}</small>`
      // A drill (双盲演练) looks exactly like a real incident here: no drill label.
      + `<a href="/api/v1/incidents/${inc.id}/report?token=${encodeURIComponent(token)}" target="_blank">报告</a></h3>`;
    for (const s of inc.steps) {
      if (s.state === "skipped" || s.name === "close") continue;
      const row = document.createElement("div");
      row.className = "step";
      row.dataset.step = s.name;
      row.dataset.state = s.state;
      let extra = "";
      if (s.name.startsWith("evacuate:") && s.extra.people != null) extra = ` 井下 ${s.extra.people} 人`;
      if (s.name.startsWith("report:") && s.extra.to) extra = ` → ${s.extra.to}`;
      if (s.name.startsWith("discharge:") && s.extra.team) extra = ` ${s.extra.team}`;
      row.innerHTML = `<span class="name">${s.title}${extra}</span>`
        + `<span class="when" data-deadline="${s.deadline || ""}">${countdown(s)}</span>`
        + `<span class="badge">${STEP_STATE[s.state] || s.state}</span>`;
      if ((s.name.startsWith("evacuate:") || s.name.startsWith("report:"))
          && ["active", "overdue"].includes(s.state)) {
        const b = document.createElement("button");
        b.textContent = s.name.startsWith("evacuate:") ? "确认撤出" : "确认汇报";
        b.onclick = () => post(`/api/v1/incidents/${inc.id}/steps/${s.name}/ack`, { user: USER });
        row.appendChild(b);
      }
      if (s.detail && ["failed", "overdue"].includes(s.state)) row.title = s.detail;
      div.appendChild(row);
    }
    box.appendChild(div);
  }
}

function tickCountdowns() {
  for (const inc of incidents.values()) {
    for (const s of inc.steps) {
      const n = document.querySelector(`.incident[data-incident="${inc.id}"] .step[data-step="${s.name}"] .when`);
      if (n) n.textContent = countdown(s);
    }
  }
}

async function loadShift() {
  try {
    const d = await api("/api/v1/duty").then((r) => r.json());
    $("#shift-name").textContent = d.shift || "–";
    $("#on-duty").textContent = d.on_duty.slice(0, 3).map((x) => `${x.title} ${x.name}`).join("　");
    shiftStart = d.shift_start;
    if (shiftStart) {
      const list = await api(`/api/v1/alarms?from=${encodeURIComponent(shiftStart)}&limit=10000`)
        .then((r) => r.json());
      $("#shift-alarms").textContent = list.length;
    }
    const subs = await api("/api/v1/substations").then((r) => r.json());
    const ul = $("#substations");
    ul.innerHTML = "";
    for (const s of subs) {
      const li = document.createElement("li");
      li.className = s.online ? "" : "down";
      li.dataset.substation = s.id;
      li.textContent = `${s.id} ${s.name} ${s.protocol === "mqtt" ? "MQTT" : "Modbus"} · ${s.online ? "正常" : "通讯中断"}`;
      ul.appendChild(li);
    }
  } catch (e) { /* the server is down: the stale indicator says so */ }
}

// --- trend chart (ECharts) -------------------------------------------------------------------
async function selectPoint(id) {
  selected = id;
  for (const { row, node, meta } of points.values()) {
    row.classList.toggle("selected", meta.id === id);
    if (node) node.classList.toggle("selected", meta.id === id);
  }
  await loadSeries();
}

async function loadSeries() {
  if (!selected) return;
  const meta = points.get(selected).meta;
  const to = new Date(), from = new Date(to.getTime() - span * 1000);
  const q = `from=${encodeURIComponent(from.toISOString())}&to=${encodeURIComponent(to.toISOString())}`;
  if (span <= 600) {
    const r = await api(`/api/v1/points/${selected}/readings?${q}&limit=100000`).then((x) => x.json());
    chartData = r.readings.filter((x) => x.value !== null).map((x) => [new Date(x.ts).getTime(), x.value]);
  } else {
    const res = span <= 3600 ? "1m" : "5m";
    const r = await api(`/api/v1/history?points=${selected}&${q}&resolution=${res}&limit=10000`)
      .then((x) => x.json());
    chartData = r.rows.filter((x) => x.max !== null).map((x) => [new Date(x.bucket).getTime(), x.max]);
  }
  $("#chart-title").textContent = `${meta.id} ${meta.name}（${meta.unit}）`;
  await refreshTrend();
  drawChart();
}

async function refreshTrend() {
  if (!selected) return;
  const p = await api(`/api/v1/points/${selected}`).then((r) => r.json());
  trendInfo = p.trend;
  points.get(selected).meta.limits = p.limits;
  $("#chart-forecast").textContent = p.trend && p.trend.active ? p.trend.forecast_text : "";
}

function drawChart() {
  if (!selected || !window.echarts) return;
  if (!chart) {
    chart = echarts.init($("#chart"), "dark", { renderer: "canvas" });
    window.__chart = chart;
  }
  const meta = points.get(selected).meta;
  const lim = meta.limits || {};
  const lines = [];
  if (lim.alarm_hi != null) lines.push({ yAxis: lim.alarm_hi, name: "报警", lineStyle: { color: "#f39c12" } });
  if (lim.cut != null && lim.cut !== lim.alarm_hi) lines.push({ yAxis: lim.cut, name: "断电", lineStyle: { color: "#e0312b" } });
  if (lim.alarm_lo != null) lines.push({ yAxis: lim.alarm_lo, name: "下限", lineStyle: { color: "#f39c12" } });
  const series = [{ name: meta.name, type: "line", showSymbol: false, data: chartData,
    lineStyle: { width: 2, color: "#9fc5e8" },
    markLine: { symbol: "none", data: lines, label: { formatter: "{b} {c}" } } }];
  if (trendInfo && trendInfo.active && trendInfo.forecast_s != null && chartData.length
      && lim.alarm_hi != null) {
    const last = chartData[chartData.length - 1];
    series.push({ name: "预测", type: "line", showSymbol: false,
      data: [last, [last[0] + trendInfo.forecast_s * 1000, lim.alarm_hi]],
      lineStyle: { type: "dashed", color: "#f39c12" } });
  }
  chart.setOption({
    backgroundColor: "transparent", animation: false,
    grid: { left: 50, right: 70, top: 20, bottom: 50 },
    tooltip: { trigger: "axis" },
    xAxis: { type: "time" },
    yAxis: { type: "value", scale: true },
    dataZoom: [{ type: "inside" }, { type: "slider", height: 18, bottom: 8 }],
    series,
  }, { replaceMerge: ["series"] });
}

// --- connections ---------------------------------------------------------------------------------
function connect(path, onMessage) {
  const ws = new WebSocket(wsUrl(path));
  ws.onmessage = (ev) => { lastMessage = Date.now(); onMessage(JSON.parse(ev.data)); };
  ws.onclose = (ev) => {
    if (ev.code === 4401) { showLogin(); return; }
    setTimeout(() => connect(path, onMessage), 1000);
  };
  ws.onerror = () => ws.close();
  return ws;
}

function onLive(msg) {
  for (const u of msg.points) update(u);
}

function onAlarms(msg) {
  if (msg.type === "snapshot") {
    alarms.clear();
    for (const a of msg.alarms) alarms.set(a.id, a);
    incidents.clear();
    for (const i of msg.incidents || []) incidents.set(i.id, i);
    renderIncidents();
    updateAreas();
  } else if (msg.type === "alarm") {
    alarms.set(msg.alarm.id, msg.alarm);
  } else if (msg.type === "command") {
    onCommand(msg.command);
  } else if (msg.type === "incident") {
    incidents.set(msg.incident.id, msg.incident);
    renderIncidents();
    updateAreas();
  }
  renderAlarms();
}

function tick() {
  $("#clock").textContent = new Date().toLocaleString("zh-CN", { hour12: false });
  const fresh = Date.now() - lastMessage < 3000;
  const conn = $("#conn");
  conn.textContent = fresh ? "数据正常" : "数据中断";
  conn.className = `conn ${fresh ? "ok" : "bad"}`;
  conn.dataset.state = fresh ? "ok" : "stale";
  document.body.classList.toggle("stale", !fresh);
  tickCountdowns();
  if ($("#filter-state").value) applyFilter();
  if (chartDirty) { chartDirty = false; drawChart(); }
}

async function main() {
  setInterval(tick, 500);
  setInterval(soundTick, 1000);
  setInterval(() => { if (selected) { refreshTrend().then(drawChart).catch(() => {}); } }, 2000);
  setInterval(loadShift, 10000);
  $("#sound").onclick = armSound;
  armSound();  // allowed where the browser permits autoplay (a kiosk wall screen)
  for (const id of ["#filter-text", "#filter-kind", "#filter-area", "#filter-state"]) {
    $(id).addEventListener("input", applyFilter);
  }
  for (const b of document.querySelectorAll(".zoom button")) {
    b.onclick = () => {
      span = Number(b.dataset.span);
      for (const x of document.querySelectorAll(".zoom button")) x.classList.toggle("on", x === b);
      loadSeries();
    };
  }
  window.addEventListener("resize", () => chart && chart.resize());
  for (;;) {
    try { await loadPoints(); break; } catch (e) { await new Promise((r) => setTimeout(r, 1000)); }
  }
  api("/api/v1/commands?limit=20").then((r) => r.json()).then((list) => {
    for (const c of list) commands.set(c.id, c);
    renderCommands();
  });
  loadShift();
  connect("/ws/live", onLive);
  connect("/ws/alarms", onAlarms);
  selectPoint([...points.keys()][0]);
}
main();
