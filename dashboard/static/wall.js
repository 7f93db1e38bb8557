// Dispatch wall screen: point table from /api/v1/points, live values over /ws/live,
// alarms and commands over /ws/alarms. Reconnects by itself; greys out when data is stale.
"use strict";
const STATE_LABEL = { normal: "正常", alarm: "报警", cut: "断电", fault: "故障", stale: "无数据",
  calibrating: "标校" };
const KIND_LABEL = { over_limit: "超限", power_cut_limit: "断电", under_limit: "低限",
  fault: "故障", stale: "通讯中断", cut_unverified: "馈电异常", lockout: "闭锁",
  spool_full: "缓存满", trend: "趋势预警", suspect: "数据异常", alarm_flood: "报警泛滥" };
const ALARM_STATE = { unack_active: "未确认", ack_active: "已确认", unack_rtn: "已恢复未确认",
  cleared: "已消除" };
const points = new Map();   // id -> {meta, row}
const alarms = new Map();   // id -> alarm json
const commands = new Map();
let lastMessage = 0;

const $ = (sel) => document.querySelector(sel);
const fmtTime = (iso) => iso ? new Date(iso).toLocaleTimeString("zh-CN", { hour12: false }) : "";

function fmtValue(p, v) {
  if (v === null || v === undefined) return "—";
  if (["fan", "smoke", "feed"].includes(p.kind)) {
    return { fan: v >= 0.5 ? "开" : "停", smoke: v >= 0.5 ? "有烟" : "无烟",
      feed: v >= 0.5 ? "有电" : "无电" }[p.kind];
  }
  const digits = p.kind === "ch4" || p.kind === "co2" || p.kind === "wind" ? 2 : 1;
  return Number(v).toFixed(digits);
}

async function loadPoints() {
  const [list, mine] = await Promise.all([
    fetch("/api/v1/points").then((r) => r.json()),
    fetch("/api/v1/mine").then((r) => r.json())]);
  $("#mine-name").textContent = `${mine.mine.name} · 安全监控调度大屏`;
  const body = $("#points tbody");
  body.innerHTML = "";
  for (const p of list) {
    const tr = document.createElement("tr");
    tr.dataset.point = p.id;
    tr.innerHTML = `<td>${p.id}</td><td>${p.name}</td><td>${p.kind_name}</td>
      <td>${p.location_name || ""}</td><td>${p.area_name}</td><td class="num value"></td>
      <td>${p.unit}</td><td><span class="state"></span></td>`;
    body.appendChild(tr);
    points.set(p.id, { meta: p, row: tr });
    update(p);
  }
  $("#count-points").textContent = list.length;
}

function update(u) {
  const entry = points.get(u.id);
  if (!entry) return;
  entry.row.querySelector(".value").textContent = fmtValue(entry.meta, u.value);
  entry.row.querySelector(".state").textContent = STATE_LABEL[u.state] || u.state;
  entry.row.dataset.state = u.state;
  entry.row.dataset.value = u.value === null ? "" : u.value;
  $("#count-cut").textContent = document.querySelectorAll('#points tr[data-state="cut"]').length;
}

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
      const b = document.createElement("button");
      b.textContent = "确认";
      b.onclick = () => fetch(`/api/v1/alarms/${a.id}/ack`, { method: "POST",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify({ user: "调度员" }) });
      li.appendChild(b);
    }
    list.appendChild(li);
  }
  $("#count-alarms").textContent = open.filter((a) => a.state !== "unack_rtn").length;
}

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

function connect(path, onMessage) {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}${path}`);
  ws.onmessage = (ev) => { lastMessage = Date.now(); onMessage(JSON.parse(ev.data)); };
  ws.onclose = () => setTimeout(() => connect(path, onMessage), 1000);
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
  } else if (msg.type === "alarm") {
    alarms.set(msg.alarm.id, msg.alarm);
  } else if (msg.type === "command") {
    commands.set(msg.command.id, msg.command);
    renderCommands();
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
}

async function main() {
  setInterval(tick, 500);
  for (;;) {
    try { await loadPoints(); break; } catch (e) { await new Promise((r) => setTimeout(r, 1000)); }
  }
  fetch("/api/v1/commands?limit=20").then((r) => r.json()).then((list) => {
    for (const c of list) commands.set(c.id, c);
    renderCommands();
  });
  connect("/ws/live", onLive);
  connect("/ws/alarms", onAlarms);
}
main();
