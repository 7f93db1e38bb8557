// Login shared by the wall screen and the city view: the token lives in localStorage (one per
// origin: a mine's service and the city are separate logins); every REST call carries it as a
// Bearer header and every WebSocket as ?token=. A 401, or a WebSocket closed with 4401, shows
// the login form; logging in reloads the page.
"use strict";
let token = localStorage.getItem("mw_token") || "";

function api(url, opts = {}) {
  return fetch(url, { ...opts, headers: { ...(opts.headers || {}), Authorization: `Bearer ${token}` } })
    .then((r) => { if (r.status === 401) { showLogin(); throw new Error("401"); } return r; });
}

function wsUrl(path) {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  return `${proto}://${location.host}${path}?token=${encodeURIComponent(token)}`;
}

const LOGIN_FORM = `<form id="login-form">
    <h2>minewatch 登录</h2>
    <label>用户名 <input id="login-user" autocomplete="username" value="admin"></label>
    <label>密码 <input id="login-password" type="password" autocomplete="current-password"></label>
    <button type="submit">登录</button>
    <p id="login-error"></p>
  </form>`;

function showLogin() {
  let box = document.querySelector("#login");
  if (box && !box.hidden) return;
  if (!box) {  // one form for every page that loads this file (static markup, no data)
    box = document.createElement("div");
    box.id = "login";
    box.innerHTML = LOGIN_FORM;
    document.body.appendChild(box);
  }
  box.hidden = false;
  document.querySelector("#login-form").onsubmit = async (ev) => {
    ev.preventDefault();
    const form = new URLSearchParams({ username: document.querySelector("#login-user").value,
      password: document.querySelector("#login-password").value });
    const r = await fetch("/api/v1/auth/token", { method: "POST", body: form });
    if (!r.ok) {
      document.querySelector("#login-error").textContent = (await r.json()).detail || "登录失败";
      return;
    }
    token = (await r.json()).access_token;
    localStorage.setItem("mw_token", token);
    location.reload();
  };
}
