"use strict";
// The admin console: plain DOM, every user-supplied string set with textContent, every call
// through the admin API with the token kept in sessionStorage (this tab only). Words come from
// i18n.js (English, Simplified Chinese); the choice of language is kept in localStorage.

const TOKEN_KEY = "gateway-admin-token";
const LANG_KEY = "gateway-console-lang";
const PAGE_SIZE = 50;
const WEEK = 7 * 24 * 3600 * 1000;
const WINDOWS = ["second", "minute", "hour", "day"];
const state = {
  lang: "en",
  keys: [], // the page shown
  accounts: {}, // account -> number of keys
  catalogue: [],
  names: {}, // id -> {en, zh}, as GET /api/v1/interfaces names them (the operator's own catalogue)
  limits: { keys_per_account: 500, ips_per_key: 50 },
  revealed: new Map(),
  pages: [null], // the cursor of each page seen so far; the last one is the page shown
  next: null,
  filters: { q: "", account: "", status: "" },
  newKeyId: null, // the key whose secret the banner shows
  editing: null, // null (panel closed), "new", or a key id
  editingKey: null, // the key as the API last returned it (it may be on another page by now)
  original: null, // the form's values when the panel opened (to tell unsaved changes)
  draft: null,
  fieldErrors: new Set(),
  me: { actor: "", account: null, permissions: [] },
};
const may = (permission) => state.me.permissions.includes(permission);
const $ = (id) => document.getElementById(id);

// ---- words -----------------------------------------------------------------------------------

function t(name, values = {}) {
  const text = (STRINGS[state.lang] && STRINGS[state.lang][name]) || STRINGS.en[name] || name;
  return text.replace(/\{(\w+)\}/g, (_, key) => (key in values ? String(values[key]) : `{${key}}`));
}

function label(id) {
  const names = NAMES[id];
  if (names) return names[state.lang === "zh" ? 1 : 0];
  const given = state.names[id];
  return given ? (state.lang === "zh" ? given.zh : given.en) || id : id;
}

function translatePage() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  document.title = `${t("title")} · Gateway`;
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
  for (const node of document.querySelectorAll("[data-i18n-aria-label]")) node.setAttribute("aria-label", t(node.dataset.i18nAriaLabel));
  $("lang").value = state.lang;
}

function setLanguage(lang) {
  state.lang = lang === "zh" ? "zh" : "en";
  localStorage.setItem(LANG_KEY, state.lang);
  translatePage();
  if (state.signedIn) {
    renderAccounts();
    renderKeys();
    if (state.editing) renderForm();
  }
}

const when = (iso) => (iso ? new Date(iso).toLocaleString(state.lang === "zh" ? "zh-CN" : "en-GB") : t("never"));

// ---- the API ---------------------------------------------------------------------------------

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
    throw new ApiError(0, { code: "network", message: t("unreachable") });
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const error = data && data.error ? data.error : { code: `http_${response.status}`, message: `Request failed (${response.status}).` };
    if (response.status === 401 && sessionStorage.getItem(TOKEN_KEY) && state.signedIn) signOut(t("sessionEnded"));
    throw new ApiError(response.status, error);
  }
  return data;
}

const keyPath = (id, rest = "") => `/api/v1/keys/${encodeURIComponent(id)}${rest}`;

// ---- small DOM helpers -----------------------------------------------------------------------

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

const ICONS = {
  eye: "M1 12s4-7 11-7 11 7 11 7-4 7-11 7S1 12 1 12zm11 3a3 3 0 1 0 0-6 3 3 0 0 0 0 6z",
  eyeOff: "M3 3l18 18M10.6 6.1A10 10 0 0 1 12 6c7 0 11 6 11 6a17 17 0 0 1-3.2 3.8M6.4 6.9A17 17 0 0 0 1 12s4 7 11 7a10 10 0 0 0 4.2-.9M9.9 9.9a3 3 0 0 0 4.2 4.2",
  copy: "M9 9h11v11H9zM5 15H4V4h11v1",
};

function icon(name) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", "icon-svg");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", ICONS[name]);
  svg.append(path);
  return svg;
}

function notify(message, isError = true) {
  const notice = $("notice");
  notice.textContent = message;
  notice.hidden = false;
  notice.className = isError ? "notice" : "notice ok";
  clearTimeout(notify.timer);
  notify.timer = setTimeout(() => { notice.hidden = true; }, isError ? 8000 : 3000);
}

function showError(target, message) {
  $(target).textContent = message;
  $(target).hidden = false;
}

function clearError(target) {
  $(target).hidden = true;
  $(target).textContent = "";
}

function summary(scope, allText) {
  if (scope === "all") return allText;
  if (scope.length === 0) return t("noneOf");
  const shown = scope.slice(0, 2).map(label).join(", ");
  return scope.length > 2 ? `${shown} +${scope.length - 2}` : shown;
}

// ---- sign in / out ---------------------------------------------------------------------------

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.signedIn = false;
  state.revealed.clear();
  state.me = { actor: "", account: null, permissions: [] };
  for (const id of ["keys", "tokens", "detail", "sign-out", "show-tokens"]) $(id).hidden = true;
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
    showError("sign-in-error", err.status === 401 ? t("tokenRefused") : err.message);
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
  $("whoami").textContent = state.me.account ? t("whoami", { actor: state.me.actor, account: state.me.account }) : "";
  $("show-tokens").hidden = !may("tokens:manage");
  $("new-key-button").hidden = !may("keys:write");
  if (!may("keys:read")) {
    $("key-table").hidden = true;
    notify(t("cannotList"));
    return;
  }
  try {
    const catalogue = await api("GET", "/api/v1/interfaces");
    state.catalogue = catalogue.categories;
    state.names = {};
    for (const category of state.catalogue) {
      if (category.name) state.names[category.id] = category.name;
      Object.assign(state.names, category.interface_names || {});
    }
    await loadSettings();
    await loadPage(null);
  } catch (err) {
    notify(err.message);
  }
}

async function loadSettings() {
  const settings = await api("GET", "/api/v1/settings");
  state.limits = settings.limits;
  state.accounts = settings.accounts || {};
  renderAccounts();
}

function renderAccounts() {
  const accounts = Object.keys(state.accounts).sort();
  $("usage").replaceChildren(...accounts.map((account) => el("span", {
    dataset: { account },
    text: t("accountUsage", { account, count: state.accounts[account], limit: state.limits.keys_per_account }),
  })));
  const select = $("filter-account");
  select.replaceChildren(el("option", { value: "", text: t("allAccounts") }),
    ...accounts.map((account) => el("option", { value: account, text: account })));
  select.value = accounts.includes(state.filters.account) ? state.filters.account : "";
  select.hidden = Boolean(state.me.account) || accounts.length < 2;
  $("account-suggestions").replaceChildren(...accounts.map((account) => el("option", { value: account })));
  const known = new Set();
  for (const key of state.keys) if (key.apps !== "all") for (const app of key.apps) known.add(app);
  $("app-suggestions").replaceChildren(...[...known].sort().map((app) => el("option", { value: app })));
}

// ---- the list: one page at a time, through the API's cursor ---------------------------------

async function loadPage(cursor, { forward = true } = {}) {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (cursor) params.set("cursor", cursor);
  for (const [name, value] of Object.entries(state.filters)) if (value) params.set(name, value);
  const page = await api("GET", `/api/v1/keys?${params}`);
  if (forward && cursor && state.pages[state.pages.length - 1] !== cursor) state.pages.push(cursor);
  state.keys = page.items;
  state.next = page.next_cursor;
  renderKeys();
  renderAccounts();
}

async function reloadPage() {
  await loadPage(state.pages[state.pages.length - 1], { forward: false });
}

async function filtersChanged() {
  state.filters = { q: $("search").value.trim(), account: $("filter-account").value, status: $("filter-status").value };
  state.pages = [null];
  try {
    await loadPage(null);
  } catch (err) {
    notify(err.message);
  }
}

function renderKeys() {
  const filtered = Object.values(state.filters).some(Boolean);
  $("empty").hidden = state.keys.length > 0;
  $("empty").textContent = filtered ? t("noMatch") : t("noKeys");
  $("key-rows").replaceChildren(...state.keys.map(keyRow));
  const soon = state.keys.filter((key) => expiry(key) === "expiring").length;
  $("expiry-warning").hidden = soon === 0;
  $("expiry-warning").textContent = t("expiringSoon", { count: soon });
  $("page-prev").disabled = state.pages.length <= 1;
  $("page-next").disabled = !state.next;
  $("page-info").textContent = t("pageInfo", { page: state.pages.length, count: state.keys.length });
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
  const text = status === "expired" ? t("expired") : t("expires", { when: when(key.expires_at) });
  return el("span", { class: `badge ${status}`, text, title: `expires_at ${key.expires_at}` });
}

function statusSwitch(enabled, name, onToggle, disabled) {
  const button = el("button", { type: "button", class: "switch", role: "switch", "aria-checked": String(enabled),
    "aria-label": t("switchLabel", { name }), disabled },
  el("span", { class: "track", "aria-hidden": "true" }), el("span", { class: "status", text: enabled ? t("enabled") : t("disabled") }));
  button.addEventListener("click", onToggle);
  return button;
}

function keyRow(key) {
  const revealed = state.revealed.get(key.id);
  const cell = (name, ...children) => el("td", { "data-label": t(name), class: name }, ...children);
  const ips = key.ip_whitelist.length;
  const switcher = statusSwitch(key.enabled, key.name, () => setEnabled(key, switcher), !may("keys:write"));
  return el("tr", { dataset: { id: key.id }, class: key.enabled ? null : "disabled-row" },
    cell("colName", el("span", { class: "name", text: key.name }), expiryBadge(key)),
    cell("colKey", el("span", { class: "key-tools" },
      el("code", { class: "secret", text: revealed || key.key_masked }),
      may("keys:reveal") ? el("button", { type: "button", class: "icon reveal", "aria-pressed": String(Boolean(revealed)),
        "aria-label": t(revealed ? "hideKey" : "revealKey", { name: key.name }), title: t(revealed ? "hideKey" : "revealKey", { name: key.name }),
        on: { click: () => toggleReveal(key) } }, icon(revealed ? "eyeOff" : "eye")) : null,
      may("keys:reveal") ? el("button", { type: "button", class: "icon copy-value", "aria-label": t("copyKeyValue", { name: key.name }),
        title: t("copyKeyValue", { name: key.name }), on: { click: () => copyValue(key) } }, icon("copy")) : null)),
    cell("colAccount", key.account),
    cell("colApps", summary(key.apps, t("allApps"))),
    cell("colInterfaces", summary(key.interfaces, t("allInterfaces"))),
    cell("colWhitelist", ips ? `${ips} / ${state.limits.ips_per_key}` : t("anyIp")),
    cell("colStatus", switcher),
    cell("colLastUsed", el("span", { class: "last-used", text: when(key.last_used_at) })),
    el("td", { class: "actions" },
      el("button", { type: "button", class: "details", text: t("details"), on: { click: () => guarded(() => openEditor(key)) } }),
      ...(may("keys:write") ? [
        el("button", { type: "button", class: "rotate", text: t("rotate"), on: { click: () => askRotate(key) } }),
        el("button", { type: "button", class: "duplicate", text: t("duplicate"), on: { click: () => askDuplicate(key) } }),
        el("button", { type: "button", class: "delete", text: t("delete"), on: { click: () => askDelete(key) } }),
      ] : [])));
}

async function reveal(key) {
  return (await api("GET", keyPath(key.id, "/secret"))).key;
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
    notify(t("copied"), false);
  } catch (err) {
    notify(err.message || t("noClipboard"));
  }
}

async function setEnabled(key, button) {
  button.disabled = true;
  try {
    replaceKey(await api("PATCH", keyPath(key.id), { enabled: !key.enabled }));
  } catch (err) {
    notify(err.message);
    button.disabled = false;
  }
}

function replaceKey(updated) {
  state.keys = state.keys.map((key) => (key.id === updated.id ? updated : key));
  renderKeys();
  if (state.editing === updated.id) followChange(updated);
}

// The key open in the editor changed elsewhere (its row's switch, a rotation, a save): fields
// the user has not touched take the new values; the user's own edits stay as they are.
function followChange(updated) {
  const fresh = valuesOf(updated);
  for (const field of Object.keys(fresh)) {
    if (JSON.stringify(state.draft[field]) === JSON.stringify(state.original[field])) state.draft[field] = fresh[field];
  }
  state.original = fresh;
  state.editingKey = updated;
  renderForm();
}

function showNewKey(created, title, note = "") {
  state.newKeyId = created.id;
  $("new-key-title").textContent = title;
  $("new-key-note").textContent = note;
  $("new-key-value").textContent = created.key;
  $("new-key").hidden = false;
}

function forgetSecret(keyId) {
  state.revealed.delete(keyId);
  if (state.newKeyId === keyId) {  // a deleted key's secret must not stay on screen
    state.newKeyId = null;
    $("new-key").hidden = true;
    $("new-key-value").textContent = "";
  }
}

// ---- confirmations: rotate, duplicate, delete -----------------------------------------------

// A confirmation dialog: `action` runs once, if the user picks the button whose value is
// `accept` (Escape, Cancel or another button run nothing).
function confirmThen(dialogId, accept, action) {
  const dialog = $(dialogId);
  dialog.returnValue = "";
  dialog.addEventListener("close", () => { if (dialog.returnValue === accept) action(); }, { once: true });
  dialog.showModal();
}

function askRotate(key) {
  $("rotate-name").textContent = key.name;
  confirmThen("confirm-rotate", "rotate", () => rotate(key));
}

async function rotate(key) {
  try {
    const rotated = await api("POST", keyPath(key.id, "/rotate"), { grace_seconds: Number($("rotate-grace").value) });
    state.revealed.delete(key.id);
    showNewKey(rotated, t("keyRotated"),
      rotated.previous_expires_at ? t("previousWorks", { when: when(rotated.previous_expires_at) }) : t("previousStopped"));
    replaceKey(rotated);
  } catch (err) {
    notify(err.message);
  }
}

function askDuplicate(key) {
  $("duplicate-name").textContent = key.name;
  confirmThen("confirm-duplicate", "duplicate", () => duplicate(key));
}

async function duplicate(key) {
  try {
    showNewKey(await api("POST", keyPath(key.id, "/copy")), t("duplicated"));
    await loadSettings();
    await reloadPage();
  } catch (err) {
    notify(err.message);
  }
}

function askDelete(key) {
  $("delete-name").textContent = key.name;
  $("delete-masked").textContent = key.key_masked;
  $("delete-last-used").textContent = when(key.last_used_at);
  confirmThen("confirm-delete", "delete", () => remove(key));
}

async function remove(key) {
  try {
    await api("DELETE", keyPath(key.id));
    forgetSecret(key.id);
    if (state.editing === key.id) closeEditor();
    await loadSettings();
    await reloadPage();
    notify(t("deleted"), false);
  } catch (err) {
    notify(err.message);
  }
}

// ---- the editor: one form to create a key or change one, saved with one button --------------

function valuesOf(key) {
  return {
    name: key.name,
    account: key.account,
    enabled: key.enabled,
    appsMode: key.apps === "all" ? "all" : "list",
    apps: key.apps === "all" ? [] : [...key.apps],
    interfacesMode: key.interfaces === "all" ? "all" : "list",
    interfaces: key.interfaces === "all" ? [] : [...key.interfaces],
    ip_whitelist: [...key.ip_whitelist],
    expires: key.expires_at ? localInput(key.expires_at) : "",
    rate_limits: key.rate_limits.map((limit) => ({ ...limit })),
  };
}

const BLANK = { name: "", account: "", enabled: true, apps: "all", interfaces: "all", ip_whitelist: [], expires_at: null, rate_limits: [] };

// the fields of the API's key object that the form's values stand for
function bodyOf(values) {
  return {
    name: values.name.trim(),
    account: values.account.trim(),
    enabled: values.enabled,
    apps: values.appsMode === "all" ? "all" : values.apps,
    interfaces: values.interfacesMode === "all" ? "all" : values.interfaces,
    ip_whitelist: values.ip_whitelist,
    expires_at: values.expires ? new Date(values.expires).toISOString() : null,
    rate_limits: WINDOWS.flatMap((per) => values.rate_limits.filter((limit) => limit.per === per)),
  };
}

function changes() {
  const before = bodyOf(state.original);
  const after = bodyOf(state.draft);
  const changed = {};
  for (const field of Object.keys(after)) {
    if (JSON.stringify(before[field]) !== JSON.stringify(after[field])) changed[field] = after[field];
  }
  if (state.editing === "new") {
    if (!changed.name) delete changed.name;
    if (!after.account) delete changed.account;
    else changed.account = after.account;
  } else {
    delete changed.account; // an account never changes
    if (changed.expires_at !== undefined && state.original.expires === state.draft.expires) delete changed.expires_at;
  }
  return changed;
}

const dirty = () => state.editing !== null && Object.keys(changes()).length > 0;

function localInput(iso) {
  const date = new Date(iso);
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 16);
}

// run `action` now, or after the user agreed to drop unsaved changes
function guarded(action) {
  if (!dirty()) {
    action();
    return;
  }
  confirmThen("confirm-discard", "discard", action);
}

function openEditor(key) {
  state.editing = key ? key.id : "new";
  state.editingKey = key;
  state.original = valuesOf(key || { ...BLANK });
  state.draft = valuesOf(key || { ...BLANK });
  state.fieldErrors.clear();
  for (const id of ERROR_TARGETS) clearError(id);
  $("detail").classList.toggle("creating", !key);
  $("detail").classList.toggle("readonly", !may("keys:write"));
  $("detail").hidden = false;
  renderForm();
  $("f-name").focus();
  if (key) loadHistory(key);
}

function closeEditor() {
  state.editing = null;
  state.editingKey = null;
  state.original = state.draft = null;
  $("detail").hidden = true;
}

function currentKey() {
  return state.editingKey;
}

function renderForm() {
  const draft = state.draft;
  const key = currentKey();
  const creating = state.editing === "new";
  $("detail-title").textContent = creating ? t("createTitle") : key ? key.name : "";
  $("save").textContent = creating ? t("create") : t("save");
  $("f-name").value = draft.name;
  $("f-account").value = draft.account;
  $("f-account").readOnly = !creating || Boolean(state.me.account);
  if (creating && state.me.account) $("f-account").value = draft.account = state.me.account;
  const switcher = $("f-enabled");
  switcher.setAttribute("aria-checked", String(draft.enabled));
  switcher.querySelector(".status").textContent = draft.enabled ? t("enabled") : t("disabled");
  for (const radio of document.querySelectorAll("input[name=apps-mode]")) radio.checked = radio.value === draft.appsMode;
  for (const radio of document.querySelectorAll("input[name=interfaces-mode]")) radio.checked = radio.value === draft.interfacesMode;
  $("f-expires").value = draft.expires;
  renderApps();
  renderCatalogue();
  renderWhitelist();
  renderRates();
  if (key) {
    $("detail-id").textContent = key.id;
    $("detail-masked").textContent = key.key_masked;
    $("u-count").textContent = String(key.request_count);
    $("u-last").textContent = when(key.last_used_at);
    $("u-created").textContent = when(key.created_at);
    $("u-updated").textContent = when(key.updated_at);
    $("u-previous").textContent = when(key.previous_expires_at);
    for (const node of document.querySelectorAll(".previous-only")) node.hidden = !key.previous_expires_at;
  }
  const readonly = !may("keys:write");
  for (const node of $("key-form").querySelectorAll("input, select, button")) node.disabled = readonly;
  $("save").disabled = readonly || (!creating && !dirty());
}

function chip(text, removeLabel, onRemove, invalid = false) {
  return el("li", { class: invalid ? "invalid" : null }, el("span", { text }),
    el("button", { type: "button", "aria-label": removeLabel, text: "×", on: { click: onRemove } }));
}

function edited() {
  $("save").disabled = state.editing !== "new" && !dirty();
}

function renderApps() {
  $("app-list").replaceChildren(...state.draft.apps.map((app) => chip(app, t("removeApp", { app }), () => {
    state.draft.apps = state.draft.apps.filter((a) => a !== app);
    renderApps();
    edited();
  })));
}

// A category box is ticked when the category itself is chosen, half-ticked when some of its
// interfaces are; ticking it chooses the whole category (and whatever it gains later).
function renderCatalogue() {
  const chosen = new Set(state.draft.interfaces);
  const setChosen = (next) => {
    state.draft.interfaces = [...next];
    state.draft.interfacesMode = "list";
    for (const radio of document.querySelectorAll("input[name=interfaces-mode]")) radio.checked = radio.value === "list";
    renderCatalogue();
    edited();
  };
  const known = new Set(state.catalogue.flatMap((category) => [category.id, ...category.interfaces]));
  $("catalogue").replaceChildren(...state.catalogue.map((category) => {
    const concrete = category.interfaces.filter((id) => !id.includes("{"));
    const templates = category.interfaces.filter((id) => id.includes("{"));
    const whole = chosen.has(category.id);
    const some = concrete.filter((id) => chosen.has(id));
    const head = el("input", { type: "checkbox", value: category.id, "aria-label": label(category.id) });
    head.checked = whole;
    head.indeterminate = !whole && some.length > 0;
    head.addEventListener("change", () => {
      const next = new Set([...chosen].filter((id) => !concrete.includes(id)));
      if (whole) next.delete(category.id);
      else next.add(category.id);
      setChosen(next);
    });
    const item = (id) => {
      const box = el("input", { type: "checkbox", value: id });
      box.checked = whole || chosen.has(id);
      box.addEventListener("change", () => {
        const next = new Set(chosen);
        if (whole) { // unticking one interface of a whole category: keep the others, by id
          next.delete(category.id);
          for (const other of concrete) if (other !== id) next.add(other);
        } else if (box.checked) next.add(id);
        else next.delete(id);
        if (!templates.length && concrete.length && concrete.every((other) => next.has(other))) {
          for (const other of concrete) next.delete(other); // all of them: the category itself
          next.add(category.id);
        }
        setChosen(next);
      });
      return el("label", { title: id }, box, ` ${label(id)}`, el("span", { class: "id", text: ` ${id}` }));
    };
    return el("div", { class: "category", dataset: { category: category.id } },
      el("label", { class: "category-head" }, head, ` ${label(category.id)}`, el("span", { class: "hint", text: ` (${t("everyInterface")})` })),
      el("div", { class: "items" }, ...concrete.map(item)),
      templates.length ? el("p", { class: "hint", text: t("templateHint", { ids: templates.join(", ") }) }) : null);
  }));
  const extra = state.draft.interfaces.filter((id) => !known.has(id));
  $("iface-extra").replaceChildren(...extra.map((id) => chip(id, t("removeInterface", { id }), () => {
    setChosen(new Set(state.draft.interfaces.filter((other) => other !== id)));
  })));
}

function renderWhitelist() {
  const list = state.draft.ip_whitelist;
  $("ip-count").textContent = `${list.length} / ${state.limits.ips_per_key}`;
  $("ip-list").replaceChildren(...list.map((entry, index) => chip(entry, t("removeIp", { entry }), () => {
    state.draft.ip_whitelist = list.filter((_, i) => i !== index);
    state.fieldErrors.clear();
    renderWhitelist();
    edited();
  }, state.fieldErrors.has(`ip_whitelist[${index}]`))));
}

function renderRates() {
  const perName = { second: t("perSecond"), minute: t("perMinute"), hour: t("perHour"), day: t("perDay") };
  const ordered = WINDOWS.flatMap((per) => state.draft.rate_limits.filter((limit) => limit.per === per));
  $("rate-list").replaceChildren(...ordered.map((limit) =>
    chip(t("rateChip", { requests: limit.requests, per: perName[limit.per] }), t("removeLimit", { per: perName[limit.per] }), () => {
      state.draft.rate_limits = state.draft.rate_limits.filter((other) => other.per !== limit.per);
      renderRates();
      edited();
    })));
}

// where each field's error is shown (the API names the field, e.g. ip_whitelist[3])
const ERROR_TARGETS = ["name-error", "account-error", "enabled-error", "apps-error", "interfaces-error", "ip-error",
  "expiry-error", "rate-error", "form-error"];
const FIELD_TARGETS = { name: "name-error", account: "account-error", enabled: "enabled-error", apps: "apps-error",
  interfaces: "interfaces-error", ip_whitelist: "ip-error", expires_at: "expiry-error", rate_limits: "rate-error" };

function showFieldError(err) {
  const field = err.field || "";
  const base = field.split(/[[.]/)[0];
  const target = FIELD_TARGETS[base] || "form-error";
  showError(target, err.message);
  if (field) state.fieldErrors.add(field);
  if (base === "ip_whitelist") renderWhitelist();
  $(target).closest(".field").scrollIntoView({ block: "nearest" });
}

async function save(event) {
  event.preventDefault();
  for (const id of ERROR_TARGETS) clearError(id);
  state.fieldErrors.clear();
  state.draft.name = $("f-name").value;
  state.draft.account = $("f-account").value;
  const body = changes();
  const creating = state.editing === "new";
  if (!creating && Object.keys(body).length === 0) {
    notify(t("nothingChanged"), false);
    return;
  }
  $("save").disabled = true;
  try {
    if (creating) {
      const created = await api("POST", "/api/v1/keys", body);
      closeEditor();
      showNewKey(created, t("newKeyCreated"));
      await loadSettings();
      await reloadPage();
    } else {
      const updated = await api("PATCH", keyPath(state.editing), body);
      state.original = valuesOf(updated);
      state.draft = valuesOf(updated);
      replaceKey(updated);
      loadHistory(updated);
      notify(t("saved"), false);
    }
  } catch (err) {
    showFieldError(err);
    $("save").disabled = false;
  }
}

async function loadHistory(key) {
  const list = $("history-list");
  $("history").hidden = !may("audit:read");
  if (!may("audit:read")) return;
  try {
    let entries = [];
    let cursor = null;
    for (let page = 0; page < 10; page += 1) { // the trail is oldest first: read to its end
      const params = new URLSearchParams({ key_id: key.id, limit: "500" });
      if (cursor) params.set("cursor", cursor);
      const answer = await api("GET", `/api/v1/audit?${params}`);
      entries = entries.concat(answer.items).slice(-20);
      cursor = answer.next_cursor;
      if (!cursor) break;
    }
    if (state.editing !== key.id) return;
    const items = entries.reverse(); // newest first
    list.replaceChildren(...(items.length ? items.map((entry) => {
      const fields = entry.changes ? Object.keys(entry.changes) : [];
      return el("li", {},
        el("span", { text: t("historyLine", { when: when(entry.at), actor: entry.actor, action: t(`action_${entry.action}`) }) }),
        fields.length ? el("span", { class: "hint", text: ` · ${t("fieldsChanged", { fields: fields.join(", ") })}` }) : null);
    }) : [el("li", { class: "hint", text: t("noHistory") })]));
  } catch (err) {
    list.replaceChildren(el("li", { class: "error", text: err.message }));
  }
}

function wireEditor() {
  $("new-key-button").addEventListener("click", () => guarded(() => openEditor(null)));
  $("detail-close").addEventListener("click", () => guarded(closeEditor));
  $("cancel").addEventListener("click", () => guarded(closeEditor));
  $("key-form").addEventListener("submit", save);
  $("key-form").addEventListener("input", (event) => {
    if (event.target.id === "f-name") state.draft.name = event.target.value;
    if (event.target.id === "f-account") state.draft.account = event.target.value;
    if (event.target.id === "f-expires") state.draft.expires = event.target.value;
    edited();
  });
  $("f-enabled").addEventListener("click", () => {
    state.draft.enabled = !state.draft.enabled;
    renderForm();
  });
  for (const radio of document.querySelectorAll("input[name=apps-mode]")) {
    radio.addEventListener("change", () => { state.draft.appsMode = radio.value; edited(); });
  }
  for (const radio of document.querySelectorAll("input[name=interfaces-mode]")) {
    radio.addEventListener("change", () => { state.draft.interfacesMode = radio.value; edited(); });
  }
  const addOnEnter = (input, button) => input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      $(button).click();
    }
  });
  addOnEnter($("app-input"), "app-add");
  addOnEnter($("ip-input"), "ip-add");
  addOnEnter($("iface-input"), "iface-add");
  // the Add buttons: a value into one of the draft's lists (and that scope becomes "listed")
  const adder = (input, field, mode) => () => {
    const value = $(input).value.trim();
    if (!value) return;
    if (!state.draft[field].includes(value)) state.draft[field].push(value);
    if (mode) state.draft[mode] = "list";
    $(input).value = "";
    renderForm();
  };
  $("app-add").addEventListener("click", adder("app-input", "apps", "appsMode"));
  $("iface-add").addEventListener("click", adder("iface-input", "interfaces", "interfacesMode"));
  $("ip-add").addEventListener("click", adder("ip-input", "ip_whitelist", null));
  $("f-expires-clear").addEventListener("click", () => {
    state.draft.expires = "";
    $("f-expires").value = "";
    edited();
  });
  $("rate-add").addEventListener("click", () => {
    const limit = { requests: Number($("rate-requests").value), per: $("rate-per").value };
    state.draft.rate_limits = [...state.draft.rate_limits.filter((other) => other.per !== limit.per), limit];
    $("rate-requests").value = "";
    renderRates();
    edited();
  });
  $("detail-delete").addEventListener("click", () => {
    const key = currentKey();
    if (key) askDelete(key);
  });
  window.addEventListener("beforeunload", (event) => {
    if (dirty()) event.preventDefault();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.editing && !document.querySelector("dialog[open]")) guarded(closeEditor);
  });
}

// ---- admin tokens ----------------------------------------------------------------------------

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
      el("td", { text: token.account || t("everyAccount") }),
      el("td", { text: token.permissions.join(", ") }),
      el("td", { text: when(token.last_used_at) }),
      el("td", {}, el("button", { type: "button", class: "revoke danger", text: t("revoke"),
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
    showError("token-error", err.message);
  }
}

async function revokeToken(token) {
  try {
    await api("DELETE", `/api/v1/tokens/${encodeURIComponent(token.id)}`);
    notify(t("revoked"), false);
    await loadTokens();
  } catch (err) {
    notify(err.message);
  }
}

// ---- start -----------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  const saved = localStorage.getItem(LANG_KEY);
  state.lang = saved || ((navigator.language || "").toLowerCase().startsWith("zh") ? "zh" : "en");
  translatePage();
  $("lang").addEventListener("change", () => setLanguage($("lang").value));
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => guarded(() => { closeEditor(); signOut(); }));
  $("new-key-close").addEventListener("click", () => {
    $("new-key").hidden = true;
    state.newKeyId = null;
  });
  $("new-key-copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("new-key-value").textContent);
      notify(t("copied"), false);
    } catch (err) {
      notify(t("noClipboard"));
    }
  });
  let typing = null;
  $("search").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(filtersChanged, 250);
  });
  $("filter-account").addEventListener("change", filtersChanged);
  $("filter-status").addEventListener("change", filtersChanged);
  $("page-next").addEventListener("click", () => state.next && loadPage(state.next).catch((err) => notify(err.message)));
  $("page-prev").addEventListener("click", () => {
    if (state.pages.length <= 1) return;
    state.pages.pop();
    reloadPage().catch((err) => notify(err.message));
  });
  $("show-tokens").addEventListener("click", () => guarded(() => { closeEditor(); showTokens(); }));
  $("tokens-close").addEventListener("click", hideTokens);
  $("token-form").addEventListener("submit", createToken);
  wireEditor();
  if (sessionStorage.getItem(TOKEN_KEY)) enter();
  else $("sign-in").hidden = false;
});
