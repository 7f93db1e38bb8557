// City command-center wall (市煤矿安全应急指挥部): per-mine tiles and the alarm feed across mines,
// all from /ws/city (a snapshot, then an update at least once per second). Reconnects by
// itself; shows a stale banner when its own feed stops. Data from mines is inserted as text.
"use strict";
const STATUS_LABEL = { normal: "正常", alarm: "报警", power_cut: "断电", incident: "事故处置",
  no_data: "数据中断" };
const KIND_LABEL = { over_limit: "超限", power_cut_limit: "断电", under_limit: "低限",
  fault: "故障", stale: "通讯中断", cut_unverified: "馈电异常", trend: "趋势", lockout: "闭锁",
  suspect: "数据可疑", mine_quiet: "数据中断" };
const TRANSITION_LABEL = { raised: "报警", returned: "已恢复", acknowledged: "已确认",
  shelved: "已屏蔽", cleared: "已消除", escalated: "升级", update: "更新", retained: "在报" };
const STALE_AFTER_MS = 3000;
const FEED_MAX = 200;
const tiles = new Map();   // mine id -> element
let feed = [];             // newest first
let lastMessage = 0;
let brokerUp = false;

const $ = (sel) => document.querySelector(sel);
const fmtTime = (iso) => iso ? new Date(iso).toLocaleTimeString("zh-CN", { hour12: false }) : "";

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
  a.append(head, ch4, counts, el("div", "top"), foot);
  return a;
}

function renderTile(t) {
  let a = tiles.get(t.mine);
  if (!a) { a = buildTile(t); tiles.set(t.mine, a); }
  a.dataset.status = t.status;
  a.dataset.unacked = t.unacked;
  a.classList.toggle("flash", t.unacked > 0);
  a.querySelector(".name").textContent = t.name;
  a.querySelector(".name").title = `${t.name} (${t.mine})`;
  let badge = STATUS_LABEL[t.status] || t.status;
  if (t.status === "no_data" && t.last_known_status && t.last_known_status !== "normal") {
    badge += ` · 最后: ${STATUS_LABEL[t.last_known_status]}`;
  }
  a.querySelector(".badge").textContent = badge;
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
  $("#count-cut").textContent = list.filter((t) => t.status === "power_cut" || t.status === "incident").length;
  $("#count-quiet").textContent = list.filter((t) => t.status === "no_data").length;
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
    const done = e.state === "cleared" || e.transition === "returned";
    li.className = `${e.kind === "mine_quiet" ? "sev-quiet" : `sev${e.severity || 3}`}${done ? " done" : ""}`;
    const kind = KIND_LABEL[e.kind] || e.kind || "";
    const msg = el("span", "msg", `${e.drill ? "【演习】" : ""}【${kind}】${e.message}`);
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
}

function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/ws/city`);
  ws.onmessage = (ev) => { lastMessage = Date.now(); onMessage(JSON.parse(ev.data)); };
  ws.onclose = () => setTimeout(connect, 1000);
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
