// City command-center wall (市煤矿安全应急指挥部): per-mine tiles, the open incidents of every
// mine with their report chain (事故汇报链), the double-blind drills' results (双盲演练) and the
// alarm feed across mines, all from /ws/city (a snapshot, then an update at least once per
// second; the drill list with the snapshot and whenever it changed). Reconnects by itself;
// shows a stale banner when its own feed stops. Data from mines is inserted as text, never as
// HTML. Needs login.js (the token) loaded first.
"use strict";
const STATUS_LABEL = { normal: "正常", alarm: "报警", power_cut: "断电", incident: "应急处置中",
  no_data: "无数据" };
const KIND_LABEL = { over_limit: "超限", power_cut_limit: "断电", under_limit: "低限",
  fault: "故障", stale: "通讯中断", cut_unverified: "馈电异常", trend: "趋势", lockout: "闭锁",
  suspect: "数据可疑", mine_quiet: "数据中断", incident: "应急处置" };
const TRANSITION_LABEL = { raised: "报警", returned: "已恢复", acknowledged: "已确认",
  shelved: "已屏蔽", cleared: "已消除", escalated: "升级", update: "更新", retained: "在报",
  incident_opened: "启动", incident_closed: "已关闭", report_overdue: "汇报超时" };
const CUT_LABEL = { done: "已断电，馈电确认", active: "断电确认中", failed: "断电失败",
  skipped: "无需断电", pending: "待断电", overdue: "断电确认超时" };
const DRILL_STATUS_LABEL = { armed: "已布置", running: "进行中", aborted: "已中止",
  finished: "已结束" };
const STALE_AFTER_MS = 3000;
const FEED_MAX = 200;
const tiles = new Map();   // mine id -> element
const cards = new Map();   // "mine/incident id" -> element
const drillCards = new Map();  // "mine/drill id" -> element
let feed = [];             // newest first
let lastMessage = 0;
let brokerUp = false;

const $ = (sel) => document.querySelector(sel);
const fmtTime = (iso) => iso ? new Date(iso).toLocaleTimeString("zh-CN", { hour12: false }) : "";
const fmtDateTime = (iso) => iso
  ? new Date(iso).toLocaleString("zh-CN", { hour12: false }) : "";

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}

function fmtAge(s) {
  if (s === null || s === undefined) return "尚无数据";
  if (s < 60) return `${Math.round(s)} 秒前`;
  if (s < 3600) return `${Math.floor(s / 60)} 分钟前`;
  return `${Math.floor(s / 3600)} 小时前`;
}

function fmtDur(s) {
  s = Math.max(0, Math.round(Math.abs(s)));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const mm = String(m).padStart(h ? 2 : 1, "0"), ss = String(sec).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

function safeUrl(u) {
  try {
    const url = new URL(u);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch (e) { return null; }
}

function buildTile(t) {
  const a = el("article", "tile");
  a.dataset.mine = t.mine;
  const head = el("div", "head");
  head.append(el("span", "name"), el("span", "badge"));
  const ch4 = el("div", "ch4");
  ch4.append("最大瓦斯 ", el("b", "ch4v"), " %", el("span", "ch4p"));
  const counts = el("div", "counts");
  for (const [cls, label] of [["n-alarm", "报警"], ["n-unack", "未确认"], ["n-cut", "断电"]]) {
    const s = el("span", null, `${label} `);
    s.append(el("b", cls));
    counts.append(s);
  }
  const foot = el("div", "foot");
  foot.append(el("span", "age"));
  a.append(head, ch4, counts, el("div", "inc"), el("div", "top"), foot);
  return a;
}

function chainCounts(inc) {
  const chain = inc.report_chain || [];
  return `汇报 ${chain.filter((r) => r.state === "done").length}/${chain.length}`
    + (inc.report_overdue ? ` · 超时 ${inc.report_overdue}` : "");
}

function renderTile(t) {
  let a = tiles.get(t.mine);
  if (!a) { a = buildTile(t); tiles.set(t.mine, a); }
  a.dataset.status = t.status;
  a.dataset.unacked = t.unacked;
  a.classList.toggle("flash", t.unacked > 0);
  a.querySelector(".name").textContent = t.name;
  a.querySelector(".name").title = `${t.name} (${t.mine})`;
  const incs = t.open_incidents || [];
  let badge = STATUS_LABEL[t.status] || t.status;
  if (t.status === "incident" && incs.length && incs.every((i) => i.drill)) badge += "（演练）";
  if (t.status === "incident" && t.cut_relays > 0) badge += " · 断电";
  if (t.status === "no_data" && t.last_known_status && t.last_known_status !== "normal") {
    badge += ` · 最后: ${STATUS_LABEL[t.last_known_status]}`;
  }
  a.querySelector(".badge").textContent = badge;
  a.dataset.incidents = incs.length;
  const inc = a.querySelector(".inc");
  inc.textContent = incs.length
    ? `${incs[0].drill ? "【演练】" : ""}${incs[0].title || incs[0].id} · ${chainCounts(incs[0])}`
      + (incs.length > 1 ? ` 等 ${incs.length} 起` : "")
    : "";
  inc.hidden = !incs.length;
  inc.classList.toggle("overdue", incs.some((i) => i.report_overdue > 0));
  a.querySelector(".ch4v").textContent = t.max_ch4 === null || t.max_ch4 === undefined
    ? "—" : Number(t.max_ch4).toFixed(2);
  a.querySelector(".ch4p").textContent = t.max_ch4_point ? `（${t.max_ch4_point}）` : "";
  a.querySelector(".n-alarm").textContent = t.open_alarms;
  a.querySelector(".n-unack").textContent = t.unacked;
  a.querySelector(".n-cut").textContent = t.cut_relays;
  a.querySelector(".top").textContent = t.status === "no_data"
    ? `矿井数据中断，最后数据 ${t.last_seen ? fmtTime(t.last_seen) : "无"}` : (t.top_alarm || "");
  const foot = a.querySelector(".foot");
  foot.querySelector(".age").textContent = `最后数据：${fmtAge(t.age_s)}`;
  const url = t.url ? safeUrl(t.url) : null;
  let link = foot.querySelector("a");
  if (url && !link) {
    link = el("a", "drill", "进入矿井大屏 ›");
    link.target = "_blank";
    link.rel = "noopener";
    foot.append(link);
  }
  if (link && !url) { link.remove(); link = null; }
  if (link) link.href = url;
  return a;
}

function renderTiles(list) {
  const box = $("#tiles");
  const seen = new Set();
  if (list.length && box.querySelector(".empty")) box.innerHTML = "";
  for (const t of list) {
    seen.add(t.mine);
    box.append(renderTile(t));  // append keeps server order (stable by mine id)
  }
  for (const [id, a] of tiles) {
    if (!seen.has(id)) { a.remove(); tiles.delete(id); }
  }
  $("#count-mines").textContent = list.length;
  $("#count-alarm").textContent = list.filter((t) => t.status === "alarm").length;
  $("#count-cut").textContent = list.filter((t) => t.status === "power_cut"
    || (t.status === "incident" && t.cut_relays > 0)).length;
  $("#count-incident").textContent = list.filter((t) => t.status === "incident").length;
  $("#count-quiet").textContent = list.filter((t) => t.status === "no_data").length;
}

// --- open incidents and their report chain ---------------------------------------------------
function reportText(r) {
  const overdue = r.state === "overdue" || r.overdue;
  if (r.state === "done") {
    return `已确认 ${fmtTime(r.done_at)}${r.by ? `（${r.by}）` : ""}${r.late ? " · 超时后确认" : ""}`;
  }
  if (overdue) {
    const over = r.remaining_s !== null && r.remaining_s !== undefined && r.remaining_s < 0
      ? ` 已超 ${fmtDur(r.remaining_s)}` : "";
    return `超时未确认${over}${r.escalated_to ? " · 已越级上报" : ""}`;
  }
  if (r.state === "active") {
    return r.remaining_s === null || r.remaining_s === undefined
      ? "已通知，等待确认" : `等待确认 · 剩余 ${fmtDur(r.remaining_s)}`;
  }
  if (r.state === "pending") return "未通知";
  if (r.state === "skipped") return "跳过";
  if (r.state === "failed") return "失败";
  return r.state;
}

function buildCard() {
  const c = el("article", "city-inc");
  const head = el("div", "ihead");
  head.append(el("span", "imine"), el("span", "ititle"), el("span", "idrill", "演练"),
    el("span", "iage"));
  const facts = el("div", "facts");
  for (const cls of ["f-peak", "f-cut", "f-evac", "f-open"]) facts.append(el("span", cls));
  const stale = el("div", "istale", "矿井数据中断：以下为最后收到的状态");
  const chain = el("ol", "chain");
  const foot = el("div", "ifoot");
  c.append(head, facts, stale, chain, foot);
  return c;
}

function renderChain(ol, chain) {
  const rows = new Map([...ol.children].map((li) => [li.dataset.step, li]));
  const want = new Set(chain.map((r) => r.name));
  for (const [name, li] of rows) if (!want.has(name)) li.remove();
  for (const r of chain) {
    let li = rows.get(r.name);
    if (!li) {
      li = el("li");
      li.dataset.step = r.name;
      li.append(el("span", "lvl"), el("span", "to"), el("span", "st"));
    }
    ol.append(li);  // keeps the chain's order
    const shown = r.state !== "done" && r.overdue ? "overdue" : r.state;
    li.dataset.level = r.level;
    li.dataset.state = shown;
    li.querySelector(".lvl").textContent = r.title || r.level;
    li.querySelector(".to").textContent = r.to ? `通知：${r.to}` : "通知：—";
    li.querySelector(".st").textContent = reportText(r);
  }
}

function renderCard(inc) {
  const key = `${inc.mine}/${inc.id}`;
  let c = cards.get(key);
  if (!c) { c = buildCard(); cards.set(key, c); }
  c.dataset.mine = inc.mine;
  c.dataset.incident = inc.id;
  c.dataset.drill = inc.drill ? "true" : "false";
  c.classList.toggle("drill", !!inc.drill);
  c.classList.toggle("stale", !!inc.stale);
  c.classList.toggle("overdue", inc.report_overdue > 0);
  c.querySelector(".imine").textContent = inc.mine_name || inc.mine;
  c.querySelector(".ititle").textContent = inc.title || inc.kind || inc.id;
  c.querySelector(".idrill").hidden = !inc.drill;
  c.querySelector(".iage").textContent = `${fmtTime(inc.opened_at)} 启动 · 已持续 ${
    inc.age_s === null || inc.age_s === undefined ? "—" : fmtDur(inc.age_s)}`;
  const steps = inc.steps || [];
  const byName = new Map(steps.map((s) => [s.name, s]));
  const peak = inc.peak || {};
  c.querySelector(".f-peak").textContent = typeof peak.value === "number"
    ? `峰值 ${peak.value.toFixed(2)}%${peak.point_id ? `（${peak.point_id}）` : ""}` : "";
  const verified = byName.get("power_verified") || byName.get("power_cut");
  const cutLabel = verified ? (CUT_LABEL[verified.state] || verified.state) : "";
  const relays = (inc.relays || []).length;
  const fcut = c.querySelector(".f-cut");
  fcut.textContent = verified ? `断电：${cutLabel}${relays ? `（${relays} 路）` : ""}` : "";
  fcut.dataset.state = verified ? verified.state : "";
  const evac = steps.filter((s) => s.name.startsWith("evacuate:"));
  const people = evac.filter((s) => s.state !== "done")
    .reduce((n, s) => n + (s.extra && typeof s.extra.people === "number" ? s.extra.people : 0), 0);
  const fevac = c.querySelector(".f-evac");
  fevac.textContent = evac.length
    ? `撤人：${evac.filter((s) => s.state === "done").length}/${evac.length} 区域已确认`
      + (people ? `，尚有 ${people} 人` : "") : "";
  fevac.classList.toggle("warn", people > 0);
  c.querySelector(".f-open").textContent = chainCounts(inc);
  c.querySelector(".istale").hidden = !inc.stale;
  renderChain(c.querySelector(".chain"), inc.report_chain || []);
  const foot = c.querySelector(".ifoot");
  foot.textContent = "";
  foot.append(el("span", "iid", `事件编号 ${inc.id}`));
  const base = inc.url ? safeUrl(inc.url) : null;
  if (base) {
    const root = base.endsWith("/") ? base : `${base}/`;
    const report = el("a", "drill", "事件报告 ›");
    report.href = new URL(`api/v1/incidents/${encodeURIComponent(inc.id)}/report`, root).href;
    const wall = el("a", "drill", "进入矿井大屏 ›");
    wall.href = base;
    for (const a of [report, wall]) { a.target = "_blank"; a.rel = "noopener"; foot.append(a); }
  }
  return c;
}

function renderIncidents(list) {
  const box = $("#city-incidents");
  const incs = list.flatMap((t) => t.open_incidents || [])
    .sort((a, b) => String(b.opened_at || "").localeCompare(String(a.opened_at || "")));
  const seen = new Set();
  for (const inc of incs) {
    seen.add(`${inc.mine}/${inc.id}`);
    box.append(renderCard(inc));
  }
  for (const [key, c] of cards) {
    if (!seen.has(key)) { c.remove(); cards.delete(key); }
  }
  let empty = box.querySelector(".empty");
  if (incs.length && empty) empty.remove();
  if (!incs.length && !empty) {
    empty = el("p", "empty", "无未关闭事件");
    box.append(empty);
  }
}

// --- double-blind drills (双盲演练) ----------------------------------------------------------
const fmtSec = (s) => typeof s === "number" ? `${s.toFixed(1)} s` : null;

function buildDrillCard() {
  const c = el("article", "city-drill");
  const head = el("div", "dhead");
  head.append(el("span", "dmine"), el("span", "dname"), el("span", "dstatus"),
    el("span", "dverdict"));
  const facts = el("div", "dfacts");
  for (const cls of ["dstart", "ddur", "dby", "dreason"]) facts.append(el("span", cls));
  const proof = el("div", "dproof");
  proof.append(el("span", "dcommit"), el("span", "dsite"));
  const marks = el("ol", "marks");
  const foot = el("div", "dfoot");
  c.append(head, facts, proof, marks, foot);
  return c;
}

function renderMarks(ol, marks, started) {
  ol.textContent = "";
  if (!marks.length) {
    ol.append(el("li", "nomarks", started ? "无评分步骤" : "无评分步骤（演练未开始）"));
    return;
  }
  for (const m of marks) {
    const li = el("li");
    li.dataset.step = m.step;
    li.dataset.passed = m.passed ? "true" : "false";
    const sec = fmtSec(m.seconds);
    const lim = fmtSec(m.limit_s);
    const kind = m.step.startsWith("alarm:") ? m.step.slice(6) : null;
    const title = kind && KIND_LABEL[kind] ? `报警：${KIND_LABEL[kind]}` : (m.title || m.step);
    li.append(el("span", "mt", title),
      el("span", "ms", sec === null ? "实测 未完成" : `实测 ${sec}`),
      el("span", "ml", lim === null ? "时限 —" : `时限 ${lim}`),
      el("span", "mr", m.passed ? "合格" : "不合格"));
    ol.append(li);
  }
}

function renderDrillCard(d) {
  const key = `${d.mine}/${d.id}`;
  let c = drillCards.get(key);
  if (!c) { c = buildDrillCard(); drillCards.set(key, c); }
  c.dataset.mine = d.mine;
  c.dataset.drill = d.id;
  c.dataset.status = d.status;
  c.dataset.passed = d.passed === true ? "true" : d.passed === false ? "false" : "";
  c.dataset.revealed = d.revealed ? "true" : "false";
  c.querySelector(".dmine").textContent = d.mine_name || d.mine;
  c.querySelector(".dname").textContent = d.scenario_name || d.scenario || "场景未公开";
  c.querySelector(".dstatus").textContent = DRILL_STATUS_LABEL[d.status] || d.status;
  const verdict = c.querySelector(".dverdict");
  verdict.textContent = d.passed === true ? "合格" : d.passed === false ? "不合格" : "未评分";
  const marks = d.marks || [];
  verdict.title = marks.length ? `合格步骤 ${d.marks_passed}/${marks.length}` : "";
  c.querySelector(".dstart").textContent = d.started_at
    ? `开始 ${fmtDateTime(d.started_at)}`
    : `未开始${d.armed_at ? `（布置于 ${fmtDateTime(d.armed_at)}）` : ""}`;
  c.querySelector(".ddur").textContent = typeof d.duration_s === "number"
    ? `历时 ${fmtDur(d.duration_s)}` : "";
  c.querySelector(".dby").textContent = d.ended_by
    ? `${d.status === "aborted" ? "中止" : "结束"}：${d.ended_by === "system" ? "系统" : d.ended_by}`
    : "";
  c.querySelector(".dreason").textContent = d.status === "aborted" && d.abort_reason
    ? `原因：${d.abort_reason}` : "";
  const commit = c.querySelector(".dcommit");
  commit.textContent = d.commitment_short ? `承诺值 ${d.commitment_short}…` : "承诺值 —";
  commit.title = d.commitment || "";
  c.querySelector(".dsite").textContent = d.revealed
    ? `演练地点：${d.point || "—"}（计划已公开）` : "演练地点：未公开";
  renderMarks(c.querySelector(".marks"), marks, !!d.started_at);
  const foot = c.querySelector(".dfoot");
  foot.textContent = "";
  foot.append(el("span", "did", `演练编号 ${d.id}`));
  const base = d.url ? safeUrl(d.url) : null;
  if (base) {
    const root = base.endsWith("/") ? base : `${base}/`;
    const report = el("a", "drill", "演练评分 ›");
    report.href = new URL(`api/v1/drills/${encodeURIComponent(d.id)}/report?format=html`,
      root).href;
    report.target = "_blank";
    report.rel = "noopener";
    foot.append(report);
  }
  return c;
}

function renderDrills(list) {
  const box = $("#city-drills");
  const seen = new Set();
  for (const d of list) {
    seen.add(`${d.mine}/${d.id}`);
    box.append(renderDrillCard(d));  // append keeps server order (newest first)
  }
  for (const [key, c] of drillCards) {
    if (!seen.has(key)) { c.remove(); drillCards.delete(key); }
  }
  let empty = box.querySelector(".empty");
  if (list.length && empty) empty.remove();
  if (!list.length && !empty) {
    empty = el("p", "empty", "暂无演练记录");
    box.append(empty);
  }
}

function renderFeed() {
  const list = $("#feed");
  list.innerHTML = "";
  if (!feed.length) { list.append(el("li", "empty", "无报警")); return; }
  for (const e of feed) {
    const li = el("li");
    li.dataset.seq = e.seq;
    li.dataset.mine = e.mine;
    li.dataset.kind = e.kind || "";
    li.dataset.alarm = e.id || "";
    li.dataset.state = e.state || "";
    const done = e.state === "cleared" || e.state === "closed" || e.transition === "returned";
    const sev = e.kind === "mine_quiet" ? "sev-quiet" : e.kind === "incident" && !done
      ? "sev-incident" : `sev${e.severity || 3}`;
    li.className = `${sev}${done ? " done" : ""}`;
    const kind = KIND_LABEL[e.kind] || e.kind || "";
    const msg = el("span", "msg", `${e.drill ? "【演练】" : ""}【${kind}】${e.message}`);
    li.append(el("time", null, fmtTime(e.at)), el("span", "mine", e.mine_name), msg,
      el("span", "tr", TRANSITION_LABEL[e.transition] || e.transition));
    list.append(li);
  }
}

function onMessage(msg) {
  brokerUp = !!msg.broker_connected;
  if (msg.type === "snapshot") feed = [];
  if (msg.alarms && msg.alarms.length) {
    const known = new Set(feed.map((e) => e.seq));
    const fresh = msg.alarms.filter((e) => !known.has(e.seq));
    feed = fresh.concat(feed).sort((a, b) => b.seq - a.seq).slice(0, FEED_MAX);
    renderFeed();
  } else if (msg.type === "snapshot") {
    renderFeed();
  }
  renderTiles(msg.mines || []);
  renderIncidents(msg.mines || []);
  if (Array.isArray(msg.drills)) renderDrills(msg.drills);
}

function connect() {
  const ws = new WebSocket(wsUrl("/ws/city"));
  ws.onmessage = (ev) => { lastMessage = Date.now(); onMessage(JSON.parse(ev.data)); };
  ws.onclose = (ev) => {
    if (ev.code === 4401 || ev.code === 4403) { showLogin(); return; }
    setTimeout(connect, 1000);
  };
  ws.onerror = () => ws.close();
}

function tick() {
  $("#clock").textContent = new Date().toLocaleString("zh-CN", { hour12: false });
  const fresh = Date.now() - lastMessage < STALE_AFTER_MS;
  const conn = $("#conn");
  let state = "ok", text = "数据正常";
  if (!fresh) { state = "stale"; text = "指挥部数据中断"; }
  else if (!brokerUp) { state = "broker_down"; text = "消息服务器断开"; }
  conn.textContent = text;
  conn.className = `conn ${state === "ok" ? "ok" : "bad"}`;
  conn.dataset.state = state;
  document.body.classList.toggle("stale", state !== "ok");
  $("#stale-banner").hidden = fresh;
  if (fresh && !brokerUp) {
    $("#stale-banner").hidden = false;
    $("#stale-banner").textContent = "指挥部与消息服务器连接中断：各矿数据可能已过期，正在重连…";
  } else {
    $("#stale-banner").textContent = "指挥部数据中断：画面停留在最后收到的数据，正在重新连接…";
  }
}

setInterval(tick, 500);
tick();
connect();
