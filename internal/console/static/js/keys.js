// API keys: list, create (the secret is shown once), edit budgets and limits, revoke.
import { api } from "./api.js";
import {
  banner, clear, confirm, copyButton, field, fmt, formError, h, input, modal, pageHead, pill, select, showError, table, tags,
} from "./ui.js";

const periods = [["", "No period (lifetime)"], ["daily", "Daily"], ["weekly", "Weekly"], ["monthly", "Monthly"]];

function keyStatus(k) {
  if (k.revoked_at) return pill("revoked", "bad");
  if (k.expires_at && k.expires_at * 1000 < Date.now()) return pill("expired", "warn");
  if (k.budget_usd !== null && k.period_spent_usd >= k.budget_usd) return pill("over budget", "warn");
  return pill("active", "ok");
}

function budgetCell(k) {
  if (k.budget_usd === null) {
    return [fmt.money(k.period_spent_usd), h("span", { class: "cell-sub" }, "no budget")];
  }
  const used = k.budget_usd > 0 ? Math.min(1, k.period_spent_usd / k.budget_usd) : 1;
  const bar = h("div", { class: "meter" + (used >= 1 ? " hot" : used >= 0.8 ? " warm" : "") }, h("i", {}));
  bar.firstChild.style.width = (used * 100).toFixed(1) + "%";
  return [fmt.money(k.period_spent_usd) + " / " + fmt.money(k.budget_usd),
    h("span", { class: "cell-sub" }, k.budget_period ? k.budget_period : "lifetime"), bar];
}

function limitsCell(k) {
  const parts = [];
  if (k.rpm !== null) parts.push(fmt.int(k.rpm) + " rpm");
  if (k.tpm !== null) parts.push(fmt.compact(k.tpm) + " tpm");
  if (k.max_concurrency !== null) parts.push(k.max_concurrency + " at once");
  return parts.length ? parts.join(" · ") : h("span", { class: "muted" }, "none");
}

// numOrNull reads a number input: "" is null (no limit).
function numOrNull(form, name, intOnly) {
  const v = form.elements[name].value.trim();
  if (v === "") return null;
  const n = Number(v);
  return intOnly ? Math.trunc(n) : n;
}

function listOrNull(v) {
  const list = v.split(",").map((s) => s.trim()).filter(Boolean);
  return list.length ? list : null;
}

function dateValue(unix) {
  if (!unix) return "";
  return new Date(unix * 1000).toISOString().slice(0, 10);
}

// keyForm opens the create or edit dialog; done is called with the saved key.
function keyForm(k, teams, done) {
  const editing = !!k;
  k = k || { name: "", budget_usd: null, budget_period: null, models: null, rpm: null, tpm: null, max_concurrency: null,
    expires_at: null, team_id: null, cache_ttl_s: null };
  const err = formError();
  const teamOptions = [["", "No team"], ...teams.map((t) => [t.id, t.name || t.id])];
  const form = h("form", { class: "form-grid", id: "key-form", method: "post" },
    field("Name", input("name", k.name, { placeholder: "e.g. backend-prod" }), null, true),
    field("Budget (USD)", input("budget_usd", k.budget_usd, { type: "number", min: 0, step: "any", placeholder: "no budget" })),
    field("Budget period", select("budget_period", periods, k.budget_period || "")),
    field("Requests per minute", input("rpm", k.rpm, { type: "number", min: 1, step: 1, placeholder: "no limit" })),
    field("Tokens per minute", input("tpm", k.tpm, { type: "number", min: 1, step: 1, placeholder: "no limit" })),
    field("Max concurrent requests", input("max_concurrency", k.max_concurrency, { type: "number", min: 1, step: 1, placeholder: "no limit" })),
    field("Expires on", input("expires", dateValue(k.expires_at), { type: "date" }), "Empty: never."),
    field("Models allowed", input("models", (k.models || []).join(", "), { placeholder: "every model" }),
      "Comma-separated; empty allows every model.", true),
    field("Team", select("team_id", teamOptions, k.team_id || "")),
    field("Cache TTL (s)", input("cache_ttl_s", k.cache_ttl_s, { type: "number", min: 1, step: 1, placeholder: "no caching" })),
    h("div", { class: "field full" }, err));
  const save = h("button", { type: "submit", class: "btn btn-primary", form: "key-form" }, editing ? "Save changes" : "Create key");
  const close = modal(editing ? "Edit key " + (k.name || k.id) : "New API key", form,
    [h("button", { type: "button", class: "btn", onclick: () => close() }, "Cancel"), save]);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const expires = form.elements.expires.value;
    const body = {
      name: form.elements.name.value.trim(),
      budget_usd: numOrNull(form, "budget_usd"),
      budget_period: form.elements.budget_period.value || null,
      rpm: numOrNull(form, "rpm", true),
      tpm: numOrNull(form, "tpm", true),
      max_concurrency: numOrNull(form, "max_concurrency", true),
      expires_at: expires ? Math.floor(new Date(expires + "T23:59:59").getTime() / 1000) : null,
      models: listOrNull(form.elements.models.value),
      team_id: form.elements.team_id.value || null,
      cache_ttl_s: numOrNull(form, "cache_ttl_s", true),
    };
    save.disabled = true;
    try {
      const saved = editing ? await api("PATCH", "/keys/" + encodeURIComponent(k.id), body) : await api("POST", "/keys", body);
      close();
      done(saved);
    } catch (e) {
      showError(err, e);
    } finally {
      save.disabled = false;
    }
  });
}

// showSecret shows a new key's secret, the one time it can be seen.
function showSecret(k) {
  const close = modal("Key created", [
    h("div", { class: "callout" }, "Copy the key now: Sluice stores only its hash, and it will not be shown again."),
    h("h3", {}, "API key"),
    h("div", { class: "secret-box" }, h("code", { id: "new-key-secret" }, k.key), copyButton(k.key)),
    h("h3", { class: "spaced" }, "Webhook signing secret"),
    h("div", { class: "secret-box" }, h("code", {}, k.webhook_secret), copyButton(k.webhook_secret)),
  ], [h("button", { type: "button", class: "btn btn-primary", onclick: () => close() }, "I have stored it")]);
}

export async function keysPage() {
  const body = h("div", { class: "panel flush" });
  const page = h("div", {},
    pageHead("API keys", "Keys callers use against /v1, with their budgets and rate limits.",
      h("button", { type: "button", class: "btn btn-primary", id: "new-key", onclick: () => create() }, "New key")),
    body);
  let teams = [];
  const load = async () => {
    const [keys, ts] = await Promise.all([api("GET", "/keys"), api("GET", "/teams").catch(() => ({ data: [] }))]);
    teams = ts.data;
    const teamName = Object.fromEntries(teams.map((t) => [t.id, t.name || t.id]));
    const rows = keys.data.slice().sort((a, b) => b.created_at - a.created_at);
    const cols = [
      { label: "Key", cell: (k) => [h("strong", { title: k.id }, k.name || "(unnamed)"), h("span", { class: "cell-sub mono" }, k.key_hint)] },
      { label: "Status", cell: keyStatus },
      { label: "Spend / budget", cell: budgetCell },
      { label: "Limits", cell: limitsCell },
      { label: "Models", class: "wrap", cell: (k) => tags(k.models) },
      teams.length ? { label: "Team", cell: (k) => (k.team_id ? teamName[k.team_id] || k.team_id : h("span", { class: "muted" }, "—")) } : null,
      { label: "Created", cell: (k) => [fmt.ago(k.created_at), k.expires_at ? h("span", { class: "cell-sub" }, "expires " + dateValue(k.expires_at)) : null] },
      { label: "", cell: (k) => (k.revoked_at ? h("span", { class: "muted small" }, "revoked " + fmt.ago(k.revoked_at)) : h("div", { class: "actions" },
        h("button", { type: "button", class: "btn btn-sm", onclick: () => keyForm(k, teams, () => reload()) }, "Edit"),
        h("button", { type: "button", class: "btn btn-sm btn-danger", onclick: () => revoke(k) }, "Revoke"))) },
    ].filter(Boolean);
    clear(body, table(cols, rows, "No keys yet. Create one to let a client call Sluice."));
  };
  const reload = () => load().catch((e) => banner(e.message));
  const create = () => keyForm(null, teams, (k) => { showSecret(k); reload(); });
  const revoke = async (k) => {
    const yes = await confirm("Revoke key?", `Requests with ${k.key_hint} (${k.name || k.id}) will be refused at once. This cannot be undone.`,
      "Revoke key", true);
    if (!yes) return;
    try {
      await api("DELETE", "/keys/" + encodeURIComponent(k.id));
      banner(`Key ${k.name || k.id} revoked.`, "ok");
      reload();
    } catch (e) {
      banner(e.message);
    }
  };
  await load();
  return page;
}
