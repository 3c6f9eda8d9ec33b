// vnet controller web UI: plain DOM, no inline script (the page's
// Content-Security-Policy forbids it), data only ever set as text (never
// parsed as HTML). The token lives in sessionStorage and travels in the
// X-VNet-Auth header of each request: never in a URL or a cookie, so no
// other site can make the browser use it (CSRF).
"use strict";

const $ = (id) => document.getElementById(id);
let network = null; // the network shown
let timer = null;

function token() {
  return sessionStorage.getItem("vnet-token");
}

async function api(method, path, body) {
  const headers = { "X-VNet-Auth": token() || "" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  if (!r.ok) throw new Error((data && data.error) || r.status + " " + r.statusText);
  return data;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function button(text, cls, onclick) {
  const b = el("button", text, cls);
  b.type = "button";
  b.addEventListener("click", () => onclick().catch(showError));
  return b;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    if (c instanceof Node) td.appendChild(c);
    else td.textContent = c === undefined || c === null ? "" : String(c);
    tr.appendChild(td);
  }
  return tr;
}

function showError(e) {
  const target = network ? $("network-error") : $("signin-error");
  target.className = "error";
  target.textContent = e.message;
}

function show(section) {
  for (const id of ["signin", "networks", "network"]) $(id).hidden = id !== section;
  $("sign-out").hidden = section === "signin";
}

async function signIn(event) {
  event.preventDefault();
  sessionStorage.setItem("vnet-token", $("token").value.trim());
  $("token").value = "";
  try {
    const status = await api("GET", "/status");
    $("whoami").textContent = "controller " + status.address;
    await showNetworks();
  } catch (e) {
    sessionStorage.removeItem("vnet-token");
    $("signin-error").textContent = "Sign-in failed: " + e.message;
  }
}

function signOut() {
  sessionStorage.removeItem("vnet-token");
  network = null;
  clearInterval(timer);
  $("whoami").textContent = "";
  show("signin");
}

async function showNetworks() {
  network = null;
  clearInterval(timer);
  show("networks");
  const ids = await api("GET", "/controller/network");
  const rows = $("network-rows");
  rows.replaceChildren();
  for (const id of ids) {
    const n = await api("GET", "/controller/network/" + id);
    const members = await api("GET", "/controller/network/" + id + "/member");
    const open = el("a", id);
    open.id = "open-" + id;
    open.addEventListener("click", () => showNetwork(id).catch(showError));
    const tr = row([open, n.name, Object.keys(members).length,
      button("Delete", "danger", async () => {
        if (confirm("Delete network " + id + " and its members?")) {
          await api("DELETE", "/controller/network/" + id);
          await showNetworks();
        }
      })]);
    tr.id = "network-" + id;
    rows.appendChild(tr);
  }
}

async function createNetwork(event) {
  event.preventDefault();
  const body = { name: $("network-name").value.trim(), private: true };
  const start = $("pool-start").value.trim();
  const end = $("pool-end").value.trim();
  if (start && end) body.ipAssignmentPools = [{ ipRangeStart: start, ipRangeEnd: end }];
  const route = $("route").value.trim();
  if (route) body.routes = [{ target: route, via: null }];
  const status = await api("GET", "/status");
  const n = await api("POST", "/controller/network/" + status.address + "______", body);
  $("create-form").reset();
  await showNetworks();
  return n;
}

async function showNetwork(id) {
  network = id;
  show("network");
  $("network-id").textContent = id;
  $("network-error").textContent = "";
  $("new-key").textContent = "";
  const n = await api("GET", "/controller/network/" + id);
  $("set-name").value = n.name;
  $("set-multicast").value = n.multicastLimit;
  $("set-pools").value = n.ipAssignmentPools.map((p) => p.ipRangeStart + "-" + p.ipRangeEnd).join(", ");
  $("set-routes").value = n.routes.map((r) => r.target + (r.via ? " via " + r.via : "")).join(", ");
  $("set-dns-domain").value = n.dns.domain;
  $("set-dns-servers").value = n.dns.servers.join(", ");
  await refresh();
  clearInterval(timer);
  timer = setInterval(() => refresh().catch(showError), 2000);
}

function list(text) {
  return text.split(",").map((s) => s.trim()).filter((s) => s);
}

async function saveSettings(event) {
  event.preventDefault();
  const pools = list($("set-pools").value).map((p) => {
    const [s, e] = p.split("-").map((x) => x.trim());
    return { ipRangeStart: s, ipRangeEnd: e };
  });
  const routes = list($("set-routes").value).map((r) => {
    const [target, via] = r.split(/\s+via\s+/);
    return { target: target.trim(), via: via ? via.trim() : null };
  });
  await api("POST", "/controller/network/" + network, {
    name: $("set-name").value,
    multicastLimit: Number($("set-multicast").value),
    ipAssignmentPools: pools,
    routes,
    dns: { domain: $("set-dns-domain").value.trim(), servers: list($("set-dns-servers").value) },
  });
  $("network-error").className = "notice";
  $("network-error").textContent = "Saved.";
}

// The controller node's view of each member: online (an active path),
// DIRECT or RELAY, version, and when it was last heard.
function liveness(peer) {
  if (!peer) return { status: "OFFLINE", path: "", version: "", seen: "never" };
  const active = (peer.paths || []).filter((p) => p.active);
  const online = peer.session && (active.length > 0 || peer.route === "RELAY" || peer.route === "TCP_RELAY");
  const last = Math.min(...(peer.paths || []).map((p) => p.lastReceive).filter((x) => x !== null && x !== undefined));
  return {
    status: online ? "ONLINE" : "OFFLINE",
    path: online ? peer.route : "",
    version: peer.version || "",
    seen: Number.isFinite(last) ? Math.round(last / 1000) + " s ago" : "",
  };
}

async function refresh() {
  if (!network) return;
  const id = network;
  // Rebuilding the rows while someone edits one would lose their typing.
  const editing = document.activeElement;
  if (editing && editing.tagName === "INPUT" && $("member-rows").contains(editing)) return;
  const listed = await api("GET", "/controller/network/" + id + "/member");
  const peers = await api("GET", "/peer");
  const rows = $("member-rows");
  const pending = $("pending-routes");
  const memberRows = [];
  const pendingItems = [];
  for (const addr of Object.keys(listed).sort()) {
    const m = await api("GET", "/controller/network/" + id + "/member/" + addr);
    const path = "/controller/network/" + id + "/member/" + addr;
    const live = liveness(peers.find((p) => p.address === addr));
    const name = el("input");
    name.value = m.name || "";
    name.addEventListener("change", () => api("POST", path, { name: name.value }).catch(showError));
    const auth = m.authorized
      ? button("Deauthorize", "deauthorize", () => api("POST", path, { authorized: false }).then(refresh))
      : button("Authorize", "authorize", () => api("POST", path, { authorized: true }).then(refresh));
    const ips = el("input");
    ips.value = m.ipAssignments.join(", ");
    ips.addEventListener("change", () => api("POST", path, { ipAssignments: list(ips.value) }).catch(showError));
    const bridge = el("input");
    bridge.type = "checkbox";
    bridge.checked = m.activeBridge;
    bridge.addEventListener("change", () => api("POST", path, { activeBridge: bridge.checked }).catch(showError));
    const status = el("span", m.authorized ? live.status : "UNAUTHORIZED",
      live.status === "ONLINE" && m.authorized ? "online status" : "offline status");
    const tr = row([addr, name, status, live.path, live.version, live.seen, ips, bridge,
      (() => {
        const span = el("span");
        span.append(auth, " ", button("Delete", "danger", () => api("DELETE", path).then(refresh)));
        return span;
      })()]);
    tr.id = "member-" + addr;
    memberRows.push(tr);
    for (const r of m.advertisedRoutes || []) {
      if ((m.approvedRoutes || []).includes(r)) continue;
      const li = el("li", r + " via " + addr + " ");
      li.appendChild(button("Approve", "approve", () =>
        api("POST", path, { approvedRoutes: [...(m.approvedRoutes || []), r] }).then(refresh)));
      pendingItems.push(li);
    }
  }
  rows.replaceChildren(...memberRows);
  pending.replaceChildren(...(pendingItems.length ? pendingItems : [el("li", "none")]));
  const keys = await api("GET", "/controller/network/" + id + "/key");
  $("key-rows").replaceChildren(...keys.map((k) => row([
    k.id, k.state, (k.reusable ? "reusable" : "single-use") + (k.ephemeral ? ", ephemeral" : ""),
    k.usedBy.join(", "),
    k.revoked ? "" : button("Revoke", "danger", () =>
      api("DELETE", "/controller/network/" + id + "/key/" + k.id).then(refresh)),
  ])));
}

async function createKey(event) {
  event.preventDefault();
  const body = { reusable: $("key-reusable").checked, ephemeral: $("key-ephemeral").checked };
  const expires = $("key-expires").value.trim();
  if (expires) body.expiresIn = expires;
  const k = await api("POST", "/controller/network/" + network + "/key", body);
  $("new-key").textContent = "New key (shown once): " + k.key;
  $("key-form").reset();
  await refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("create-form").addEventListener("submit", (e) => createNetwork(e).catch(showError));
  $("settings-form").addEventListener("submit", (e) => saveSettings(e).catch(showError));
  $("key-form").addEventListener("submit", (e) => createKey(e).catch(showError));
  $("back").addEventListener("click", () => showNetworks().catch(showError));
  if (token()) {
    api("GET", "/status")
      .then((s) => { $("whoami").textContent = "controller " + s.address; return showNetworks(); })
      .catch(signOut);
  } else {
    show("signin");
  }
});
