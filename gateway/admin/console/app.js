"use strict";
// The admin console: plain DOM, every user-supplied string set with textContent, every call
// through the admin API with the token kept in sessionStorage (this tab only).

const TOKEN_KEY = "gateway-admin-token";
const state = {
  keys: [],
  catalogue: [],
  limits: { keys_per_account: 500, ips_per_key: 50 },
  revealed: new Map(),
  detail: null,
  draft: null,
  deleting: null,
  rotating: null,
  me: { actor: "", account: null, permissions: [] },
};
const WEEK = 7 * 24 * 3600 * 1000;
const may = (permission) => state.me.permissions.includes(permission);
const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, error) {
    super(error.message);
    this.status = status;
    this.code = error.code;
    this.field = error.field;
  }
}

async function api(method, path, body) {
  const init = { method, headers: { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) || ""}` } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, { code: "network", message: "The gateway cannot be reached." });
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const error = data && data.error ? data.error : { code: `http_${response.status}`, message: `Request failed (${response.status}).` };
    if (response.status === 401 && sessionStorage.getItem(TOKEN_KEY) && state.signedIn) {
      signOut("Your session ended: sign in again.");
    }
    throw new ApiError(response.status, error);
  }
  return data;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "text") node.textContent = value;
    else if (name === "on") for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function notify(message, isError = true) {
  const notice = $("notice");
  notice.textContent = message;
  notice.hidden = false;
  notice.className = isError ? "notice" : "notice ok";
  clearTimeout(notify.timer);
  notify.timer = setTimeout(() => { notice.hidden = true; }, isError ? 8000 : 3000);
}

function showError(target, err) {
  const node = $(target);
  node.textContent = err.message || String(err);
  node.hidden = false;
}

function clearError(target) {
  $(target).hidden = true;
  $(target).textContent = "";
}

const when = (iso) => (iso ? new Date(iso).toLocaleString() : "Never");

function summary(scope, allText, noun) {
  if (scope === "all") return allText;
  if (scope.length === 0) return `No ${noun}s`;
  const shown = scope.slice(0, 2).join(", ");
  return scope.length > 2 ? `${shown} +${scope.length - 2}` : shown;
}

// ---- sign in / out -------------------------------------------------------------------------

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.signedIn = false;
  state.revealed.clear();
  state.me = { actor: "", account: null, permissions: [] };
  $("keys").hidden = true;
  $("tokens").hidden = true;
  $("detail").hidden = true;
  $("sign-out").hidden = true;
  $("show-tokens").hidden = true;
  $("whoami").textContent = "";
  $("sign-in").hidden = false;
  if (message) notify(message);
}

async function signIn(event) {
  event.preventDefault();
  clearError("sign-in-error");
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  try {
    state.me = await api("GET", "/api/v1/me");
  } catch (err) {
    sessionStorage.removeItem(TOKEN_KEY);
    showError("sign-in-error", err.status === 401 ? new Error("That token was refused.") : err);
    return;
  }
  $("token").value = "";
  await enter();
}

async function enter() {
  state.signedIn = true;
  if (!state.me.actor) state.me = await api("GET", "/api/v1/me");
  $("sign-in").hidden = true;
  $("sign-out").hidden = false;
  $("keys").hidden = false;
  $("whoami").textContent = state.me.account ? `Token ${state.me.actor} · account ${state.me.account}` : "";
  $("show-tokens").hidden = !may("tokens:manage");
  $("create-form").hidden = !may("keys:write");
  if (!may("keys:read")) {
    $("key-table").hidden = true;
    notify("This token cannot list keys.");
    return;
  }
  try {
    const [settings, catalogue] = await Promise.all([api("GET", "/api/v1/settings"), api("GET", "/api/v1/interfaces")]);
    state.limits = settings.limits;
    state.catalogue = catalogue.categories;
    await loadKeys();
  } catch (err) {
    notify(err.message);
  }
}

async function loadKeys() {
  const keys = [];
  let cursor = null;
  do {
    const page = await api("GET", `/api/v1/keys?limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    keys.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  state.keys = keys;
  renderKeys();
}

// ---- the list ------------------------------------------------------------------------------

function renderKeys() {
  const counts = new Map();
  for (const key of state.keys) counts.set(key.account, (counts.get(key.account) || 0) + 1);
  const usage = $("usage");
  usage.replaceChildren(
    ...[...counts.entries()].sort().map(([account, n]) =>
      el("span", { text: `${account}: ${n} / ${state.limits.keys_per_account} keys`, dataset: { account } })),
  );
  $("empty").hidden = state.keys.length > 0;
  $("key-rows").replaceChildren(...state.keys.map(keyRow));
  const soon = state.keys.filter((key) => expiry(key) === "expiring").length;
  $("expiry-warning").hidden = soon === 0;
  $("expiry-warning").textContent = `${soon} key${soon === 1 ? "" : "s"} will expire within a week.`;
}

// "expired", "expiring" (within a week) or null
function expiry(key) {
  if (!key.expires_at) return null;
  const left = new Date(key.expires_at).getTime() - Date.now();
  return left <= 0 ? "expired" : left <= WEEK ? "expiring" : null;
}

function expiryBadge(key) {
  const status = expiry(key);
  if (!status) return null;
  const text = status === "expired" ? "Expired" : `Expires ${when(key.expires_at)}`;
  return el("span", { class: `badge ${status}`, text, title: `expires_at ${key.expires_at}` });
}

function keyRow(key) {
  const revealed = state.revealed.get(key.id);
  const cell = (label, ...children) => el("td", { "data-label": label, class: label === "Key" ? "key-cell" : null }, ...children);
  const toggle = el("input", { type: "checkbox", "aria-label": `Enable ${key.name}`, disabled: !may("keys:write") });
  toggle.checked = key.enabled;
  toggle.addEventListener("change", () => setEnabled(key, toggle));
  const ips = key.ip_whitelist.length;
  return el("tr", { dataset: { id: key.id }, class: key.enabled ? null : "disabled-row" },
    cell("Name", el("span", { class: "name", text: key.name })),
    cell("Key",
      el("span", { class: "secret", text: revealed || key.key_masked }),
      may("keys:reveal") ? el("button", { type: "button", class: "icon reveal", "aria-label": revealed ? "Hide key" : "Reveal key",
        text: revealed ? "Hide" : "Show", on: { click: () => toggleReveal(key) } }) : null,
      may("keys:reveal") ? el("button", { type: "button", class: "icon copy-value", "aria-label": "Copy key value", text: "Copy",
        on: { click: () => copyValue(key) } }) : null),
    cell("Account", key.account),
    cell("Apps", summary(key.apps, "All apps", "app")),
    cell("Interfaces", summary(key.interfaces, "All interfaces", "interface")),
    cell("IP whitelist", ips ? `${ips} / ${state.limits.ips_per_key}` : "Any IP"),
    cell("Status", el("label", { class: "switch" }, toggle, el("span", { class: "status", text: key.enabled ? "Enabled" : "Disabled" })),
      expiryBadge(key)),
    cell("Created", when(key.created_at)),
    cell("Last used", el("span", { class: "last-used", text: when(key.last_used_at) })),
    el("td", { class: "actions" },
      el("button", { type: "button", class: "details", text: "Details", on: { click: () => openDetail(key.id) } }),
      ...(may("keys:write") ? [
        el("button", { type: "button", class: "rotate", text: "Rotate", on: { click: () => askRotate(key) } }),
        el("button", { type: "button", class: "copy-key", text: "Copy key", on: { click: () => copyKey(key) } }),
        el("button", { type: "button", class: "delete", text: "Delete", on: { click: () => askDelete(key) } }),
      ] : [])));
}

function askRotate(key) {
  state.rotating = key;
  $("rotate-name").textContent = key.name;
  $("confirm-rotate").showModal();
}

async function confirmRotate() {
  const key = state.rotating;
  state.rotating = null;
  if (!key || $("confirm-rotate").returnValue !== "rotate") return;
  try {
    const grace = Number($("rotate-grace").value);
    const rotated = await api("POST", `/api/v1/keys/${encodeURIComponent(key.id)}/rotate`, { grace_seconds: grace });
    state.revealed.delete(key.id);
    showNewKey(rotated, "Key rotated.",
      rotated.previous_expires_at ? `The previous secret works until ${when(rotated.previous_expires_at)}.` : "The previous secret no longer works.");
    replaceKey(rotated);
  } catch (err) {
    notify(err.message);
  }
}

// ---- admin tokens --------------------------------------------------------------------------

async function showTokens() {
  $("keys").hidden = true;
  $("detail").hidden = true;
  $("tokens").hidden = false;
  $("new-token").hidden = true;
  $("token-account").value = state.me.account || "";
  $("token-account").disabled = Boolean(state.me.account);
  $("token-permissions").replaceChildren(...state.me.permissions.map((permission) =>
    el("label", {}, el("input", { type: "checkbox", value: permission, name: "permission" }), permission)));
  await loadTokens();
}

function hideTokens() {
  $("tokens").hidden = true;
  $("keys").hidden = false;
}

async function loadTokens() {
  try {
    const answer = await api("GET", "/api/v1/tokens");
    $("token-rows").replaceChildren(...answer.items.map((token) => el("tr", { dataset: { id: token.id } },
      el("td", { class: "token-name", text: token.name }),
      el("td", { text: token.id }),
      el("td", { text: token.account || "Every account" }),
      el("td", { text: token.permissions.join(", ") }),
      el("td", { text: when(token.last_used_at) }),
      el("td", {}, el("button", { type: "button", class: "revoke danger", text: "Revoke",
        on: { click: () => revokeToken(token) } })))));
  } catch (err) {
    notify(err.message);
  }
}

async function createToken(event) {
  event.preventDefault();
  clearError("token-error");
  const permissions = [...document.querySelectorAll("#token-permissions input:checked")].map((box) => box.value);
  const account = $("token-account").value.trim();
  try {
    const created = await api("POST", "/api/v1/tokens", { name: $("token-name").value.trim(), account: account || null, permissions });
    $("new-token-value").textContent = created.token;
    $("new-token").hidden = false;
    $("token-name").value = "";
    await loadTokens();
  } catch (err) {
    showError("token-error", err);
  }
}

async function revokeToken(token) {
  try {
    await api("DELETE", `/api/v1/tokens/${encodeURIComponent(token.id)}`);
    notify("Token revoked.", false);
    await loadTokens();
  } catch (err) {
    notify(err.message);
  }
}

async function reveal(key) {
  const answer = await api("GET", `/api/v1/keys/${encodeURIComponent(key.id)}/secret`);
  return answer.key;
}

async function toggleReveal(key) {
  try {
    if (state.revealed.has(key.id)) state.revealed.delete(key.id);
    else state.revealed.set(key.id, await reveal(key));
    renderKeys();
  } catch (err) {
    notify(err.message);
  }
}

async function copyValue(key) {
  try {
    const value = state.revealed.get(key.id) || (await reveal(key));
    await navigator.clipboard.writeText(value);
    notify("Key copied to the clipboard.", false);
  } catch (err) {
    notify(err.message || "The clipboard is not available.");
  }
}

async function setEnabled(key, toggle) {
  try {
    replaceKey(await api("PATCH", `/api/v1/keys/${encodeURIComponent(key.id)}`, { enabled: toggle.checked }));
  } catch (err) {
    toggle.checked = !toggle.checked;
    notify(err.message);
  }
}

function replaceKey(updated) {
  state.keys = state.keys.map((key) => (key.id === updated.id ? updated : key));
  renderKeys();
  if (state.detail === updated.id) renderDetail(updated, false);
}

function showNewKey(created, title = "New key created.", note = "") {
  $("new-key-title").textContent = title;
  $("new-key-note").textContent = note;
  $("new-key-value").textContent = created.key;
  $("new-key").hidden = false;
}

async function createKey(event) {
  event.preventDefault();
  const body = {};
  if ($("new-name").value.trim()) body.name = $("new-name").value.trim();
  if ($("new-account").value.trim()) body.account = $("new-account").value.trim();
  try {
    const created = await api("POST", "/api/v1/keys", body);
    $("new-name").value = "";
    $("new-account").value = "";
    showNewKey(created);
    await loadKeys();
  } catch (err) {
    notify(err.message);
  }
}

async function copyKey(key) {
  try {
    showNewKey(await api("POST", `/api/v1/keys/${encodeURIComponent(key.id)}/copy`));
    await loadKeys();
  } catch (err) {
    notify(err.message);
  }
}

function askDelete(key) {
  state.deleting = key;
  $("delete-name").textContent = key.name;
  $("delete-masked").textContent = key.key_masked;
  $("delete-last-used").textContent = when(key.last_used_at);
  $("confirm-delete").showModal();
}

async function confirmDelete() {
  const key = state.deleting;
  state.deleting = null;
  if (!key || $("confirm-delete").returnValue !== "delete") return;
  try {
    await api("DELETE", `/api/v1/keys/${encodeURIComponent(key.id)}`);
    if (state.detail === key.id) closeDetail();
    state.revealed.delete(key.id);
    await loadKeys();
    notify("Key deleted.", false);
  } catch (err) {
    notify(err.message);
  }
}

// ---- the detail panel ----------------------------------------------------------------------

function openDetail(id) {
  const key = state.keys.find((k) => k.id === id);
  if (!key) return;
  state.detail = id;
  renderDetail(key, true);
  $("detail").classList.toggle("readonly", !may("keys:write"));
  $("detail").hidden = false;
}

function closeDetail() {
  state.detail = null;
  $("detail").hidden = true;
}

function renderDetail(key, fresh) {
  if (fresh || !state.draft) {
    state.draft = {
      apps: key.apps === "all" ? [] : [...key.apps],
      appsMode: key.apps === "all" ? "all" : "list",
      interfaces: new Set(key.interfaces === "all" ? [] : key.interfaces),
      interfacesMode: key.interfaces === "all" ? "all" : "list",
    };
    for (const id of ["name-error", "apps-error", "interfaces-error", "ip-error", "rate-error"]) clearError(id);
  }
  $("detail-title").textContent = key.name;
  $("detail-id").textContent = key.id;
  $("detail-masked").textContent = key.key_masked;
  $("detail-name").value = key.name;
  for (const radio of document.querySelectorAll("input[name=apps-mode]")) radio.checked = radio.value === state.draft.appsMode;
  for (const radio of document.querySelectorAll("input[name=interfaces-mode]")) radio.checked = radio.value === state.draft.interfacesMode;
  renderApps();
  renderCatalogue();
  renderWhitelist(key);
  renderRates(key);
}

function chip(text, label, onRemove) {
  return el("li", {}, el("span", { text }), el("button", { type: "button", "aria-label": label, text: "×", on: { click: onRemove } }));
}

function renderApps() {
  $("app-list").replaceChildren(...state.draft.apps.map((app) =>
    chip(app, `Remove app ${app}`, () => {
      state.draft.apps = state.draft.apps.filter((a) => a !== app);
      renderApps();
    })));
}

function renderCatalogue() {
  const chosen = state.draft.interfaces;
  const box = (value, text) => {
    const input = el("input", { type: "checkbox", value });
    input.checked = chosen.has(value);
    input.addEventListener("change", () => {
      if (input.checked) chosen.add(value);
      else chosen.delete(value);
      state.draft.interfacesMode = "list";
      for (const radio of document.querySelectorAll("input[name=interfaces-mode]")) radio.checked = radio.value === "list";
    });
    return el("label", {}, input, ` ${text}`);
  };
  $("catalogue").replaceChildren(...state.catalogue.map((category) => {
    const concrete = category.interfaces.filter((id) => !id.includes("{"));
    const patterns = category.interfaces.filter((id) => id.includes("{"));
    return el("div", { class: "category" },
      box(category.id, `${category.id} (every interface)`),
      el("div", { class: "items" }, ...concrete.map((id) => box(id, id))),
      patterns.length ? el("p", { class: "hint", text: `Also: ${patterns.join(", ")}` }) : null);
  }));
}

function renderWhitelist(key) {
  const list = key.ip_whitelist;
  $("ip-count").textContent = `${list.length} / ${state.limits.ips_per_key}`;
  $("ip-list").replaceChildren(...list.map((entry) =>
    chip(entry, `Remove ${entry}`, () => saveWhitelist(key, list.filter((e) => e !== entry)))));
}

function renderRates(key) {
  const limits = key.rate_limits;
  $("rate-list").replaceChildren(...limits.map((limit) =>
    chip(`${limit.requests} per ${limit.per}`, `Remove the ${limit.per} limit`, () =>
      patchDetail({ rate_limits: limits.filter((l) => l.per !== limit.per) }, "rate-error"))));
}

function currentKey() {
  return state.keys.find((k) => k.id === state.detail);
}

async function patchDetail(body, errorTarget) {
  clearError(errorTarget);
  try {
    const updated = await api("PATCH", `/api/v1/keys/${encodeURIComponent(state.detail)}`, body);
    replaceKey(updated);
    return updated;
  } catch (err) {
    showError(errorTarget, err);
    return null;
  }
}

async function saveWhitelist(key, entries) {
  const updated = await patchDetail({ ip_whitelist: entries }, "ip-error");
  if (updated) $("ip-input").value = "";
}

function wireDetail() {
  $("detail-close").addEventListener("click", closeDetail);
  $("rename-form").addEventListener("submit", (event) => {
    event.preventDefault();
    patchDetail({ name: $("detail-name").value }, "name-error");
  });
  for (const radio of document.querySelectorAll("input[name=apps-mode]")) {
    radio.addEventListener("change", () => { state.draft.appsMode = radio.value; });
  }
  for (const radio of document.querySelectorAll("input[name=interfaces-mode]")) {
    radio.addEventListener("change", () => { state.draft.interfacesMode = radio.value; });
  }
  $("app-add").addEventListener("click", () => {
    const value = $("app-input").value.trim();
    if (!value) return;
    if (!state.draft.apps.includes(value)) state.draft.apps.push(value);
    state.draft.appsMode = "list";
    $("app-input").value = "";
    renderDetail(currentKey(), false);
  });
  $("apps-save").addEventListener("click", () =>
    patchDetail({ apps: state.draft.appsMode === "all" ? "all" : state.draft.apps }, "apps-error"));
  $("interfaces-save").addEventListener("click", () =>
    patchDetail({ interfaces: state.draft.interfacesMode === "all" ? "all" : [...state.draft.interfaces] }, "interfaces-error"));
  $("rate-add").addEventListener("click", () => {
    const key = currentKey();
    if (!key) return;
    const limit = { requests: Number($("rate-requests").value), per: $("rate-per").value };
    const others = key.rate_limits.filter((l) => l.per !== limit.per);  // one limit per window
    patchDetail({ rate_limits: [...others, limit] }, "rate-error").then((updated) => {
      if (updated) $("rate-requests").value = "";
    });
  });
  $("ip-add").addEventListener("click", () => {
    const key = currentKey();
    const value = $("ip-input").value;
    if (key && value.trim()) saveWhitelist(key, [...key.ip_whitelist, value]);
  });
}

// ---- start ---------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut());
  $("create-form").addEventListener("submit", createKey);
  $("new-key-close").addEventListener("click", () => { $("new-key").hidden = true; });
  $("new-key-copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("new-key-value").textContent);
      notify("Key copied to the clipboard.", false);
    } catch (err) {
      notify("The clipboard is not available.");
    }
  });
  $("confirm-delete").addEventListener("close", confirmDelete);
  $("confirm-rotate").addEventListener("close", confirmRotate);
  $("show-tokens").addEventListener("click", showTokens);
  $("tokens-close").addEventListener("click", hideTokens);
  $("token-form").addEventListener("submit", createToken);
  wireDetail();
  if (sessionStorage.getItem(TOKEN_KEY)) enter();
  else $("sign-in").hidden = false;
});
