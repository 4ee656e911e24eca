// Channels: the upstreams Sluice routes to — create and edit, enable and disable (with the
// reason a channel was disabled), and each one's recent health and circuit breaker.
import { api } from "./api.js";
import {
  banner, clear, confirm, field, fmt, formError, h, input, modal, pageHead, pill, select, showError, table, tags,
} from "./ui.js";

const providers = [["openai", "OpenAI-compatible"], ["anthropic", "Anthropic"], ["azure", "Azure OpenAI"],
  ["gemini", "Google Gemini"], ["fake", "Fake (built-in test model)"]];

const circuitPill = {
  closed: ["closed", "ok"], half_open: ["half-open", "warn"], open: ["open", "bad"], cooling: ["cooling", "info"],
  unknown: ["unknown", ""],
};

function statusCell(c) {
  if (c.enabled) return pill("enabled", "ok");
  return [pill("disabled", "bad"), c.disabled_reason ? h("span", { class: "cell-sub wrap" }, c.disabled_reason) : null];
}

function healthCell(hl) {
  if (!hl || hl.jobs === 0) return h("span", { class: "muted" }, "no traffic in the last hour");
  const rate = hl.error_rate || 0;
  const sub = [hl.last_success_at ? "last ok " + fmt.ago(hl.last_success_at) : "no success",
    hl.last_failure_at ? "last failure " + fmt.ago(hl.last_failure_at) : null].filter(Boolean);
  return [h("span", {}, fmt.int(hl.jobs) + (hl.jobs === 1 ? " job · " : " jobs · "),
    h("strong", { class: rate > 0.2 ? "text-bad" : "" }, fmt.pct(rate) + " failed")), h("span", { class: "cell-sub" }, sub.join(" · "))];
}

function circuitCell(ch, hl) {
  if (!ch.enabled) return h("span", { class: "muted" }, "not routed");
  const c = hl ? hl.circuit : { state: "unknown" };
  const [text, kind] = circuitPill[c.state] || [c.state, ""];
  const sub = [];
  if (c.consecutive_failures) sub.push(c.consecutive_failures + " failures in a row");
  if (c.until) sub.push("until " + new Date(c.until * 1000).toLocaleTimeString());
  const where = (c.workers || []).map((w) => w.process + ": " + w.state).join("\n");
  return [pill(text, kind), sub.length ? h("span", { class: "cell-sub", title: where || null }, sub.join(" · ")) : null];
}

function limits(c) {
  const parts = [];
  if (c.max_concurrency !== null) parts.push(c.max_concurrency + " at once");
  if (c.rpm !== null) parts.push(fmt.int(c.rpm) + " rpm");
  if (c.tpm !== null) parts.push(fmt.compact(c.tpm) + " tpm");
  return parts.length ? parts.join(" · ") : "no limits";
}

function mapText(m) {
  return Object.entries(m || {}).map(([a, u]) => a + " = " + u).join("\n");
}

function parseMap(text) {
  const out = {};
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const [alias, ...rest] = line.split("=");
    out[alias.trim()] = rest.join("=").trim();
  }
  return out;
}

function intOrNull(form, name) {
  const v = form.elements[name].value.trim();
  return v === "" ? null : Math.trunc(Number(v));
}

// channelForm opens the create or edit dialog; done is called once saved. remove, when
// editing, deletes the channel.
function channelForm(c, done, remove) {
  const editing = !!c;
  c = c || { name: "", provider: "openai", base_url: "", models: [], model_map: {}, priority: 0, weight: 1, enabled: true,
    max_concurrency: null, rpm: null, tpm: null, api_key: "" };
  const err = formError();
  const form = h("form", { class: "form-grid", id: "channel-form", method: "post" },
    field("Name", input("name", c.name, { placeholder: "e.g. openai-primary", required: true })),
    field("Provider", select("provider", providers, c.provider)),
    field("Base URL", input("base_url", c.base_url, { placeholder: "https://api.openai.com/v1" }),
      "The URL the provider's SDK takes. The fake provider takes fake://?latency=20ms.", true),
    field("Upstream API key", input("api_key", "", { type: "password", autocomplete: "off",
      placeholder: editing && c.api_key ? "unchanged (" + c.api_key + ")" : "" }),
    editing ? "Leave empty to keep the stored key." : "Stored encrypted; only a hint is ever shown.", true),
    field("Models", input("models", (c.models || []).join(", "), { placeholder: "gpt-4o-mini, gpt-4o" }),
      "Comma-separated model names this channel serves.", true),
    field("Model map", h("textarea", { id: "f-model-map", name: "model_map", placeholder: "alias = upstream-model" }, mapText(c.model_map)),
      "One per line: the name callers send = the name sent upstream.", true),
    field("Priority", input("priority", c.priority, { type: "number", step: 1 }), "Higher tiers are tried first."),
    field("Weight", input("weight", c.weight, { type: "number", min: 1, step: 1 }), "Share of traffic within a tier."),
    field("Max concurrent calls", input("max_concurrency", c.max_concurrency, { type: "number", min: 1, step: 1, placeholder: "no cap" })),
    field("Requests per minute", input("rpm", c.rpm, { type: "number", min: 1, step: 1, placeholder: "no quota" })),
    field("Tokens per minute", input("tpm", c.tpm, { type: "number", min: 1, step: 1, placeholder: "no quota" })),
    h("label", { class: "check field" }, h("input", { type: "checkbox", name: "enabled", checked: c.enabled }), "Enabled"),
    h("div", { class: "field full" }, err));
  const save = h("button", { type: "submit", class: "btn btn-primary", form: "channel-form" }, editing ? "Save changes" : "Create channel");
  const del = editing ? h("button", { type: "button", class: "btn btn-danger", id: "delete-channel",
    onclick: () => { close(); remove(c); } }, "Delete channel") : null;
  const close = modal(editing ? "Edit channel " + c.name : "New channel", form,
    [del, h("span", { class: "grow" }), h("button", { type: "button", class: "btn", onclick: () => close() }, "Cancel"), save], true);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const el = form.elements;
    const body = {
      name: el.name.value.trim(), provider: el.provider.value, base_url: el.base_url.value.trim(),
      models: el.models.value.split(",").map((s) => s.trim()).filter(Boolean), model_map: parseMap(el.model_map.value),
      priority: intOrNull(form, "priority") ?? 0, weight: intOrNull(form, "weight") ?? 1, enabled: el.enabled.checked,
      max_concurrency: intOrNull(form, "max_concurrency"), rpm: intOrNull(form, "rpm"), tpm: intOrNull(form, "tpm"),
    };
    if (el.api_key.value.trim() !== "" || !editing) body.api_key = el.api_key.value.trim();
    save.disabled = true;
    try {
      if (editing) {
        await api("PATCH", "/channels/" + encodeURIComponent(c.id), body);
      } else {
        await api("POST", "/channels", body);
      }
      close();
      done();
    } catch (e) {
      showError(err, e);
    } finally {
      save.disabled = false;
    }
  });
}

export async function channelsPage() {
  const body = h("div", { class: "panel flush" });
  const note = h("p", { class: "muted small" });
  const page = h("div", {},
    pageHead("Channels", "Upstream accounts Sluice routes each model to, by priority tier and weight.",
      h("button", { type: "button", class: "btn", onclick: () => reload() }, "Refresh"),
      h("button", { type: "button", class: "btn btn-primary", id: "new-channel", onclick: () => channelForm(null, () => reload()) }, "New channel")),
    body, note);
  const load = async () => {
    const [chs, health] = await Promise.all([api("GET", "/channels"),
      api("GET", "/channels/health").catch(() => ({ data: [], workers: null }))]);
    const byID = Object.fromEntries(health.data.map((x) => [x.channel_id, x]));
    const rows = chs.data.slice().sort((a, b) => b.priority - a.priority || a.name.localeCompare(b.name));
    clear(body, table([
      { label: "Channel", cell: (c) => [h("strong", { title: c.id }, c.name), h("span", { class: "cell-sub" }, c.provider + " · " + c.base_url)] },
      { label: "Models", class: "wrap", cell: (c) => tags([...c.models, ...Object.keys(c.model_map || {})]) },
      { label: "Routing", cell: (c) => ["tier " + c.priority + " · weight " + c.weight, h("span", { class: "cell-sub" }, limits(c))] },
      { label: "Status", class: "wrap", cell: statusCell },
      { label: "Last hour", cell: (c) => healthCell(byID[c.id]) },
      { label: "Circuit", cell: (c) => circuitCell(c, byID[c.id]) },
      { label: "", cell: (c) => h("div", { class: "actions" },
        h("button", { type: "button", class: "btn btn-sm", onclick: () => channelForm(c, () => reload(), remove) }, "Edit"),
        h("button", { type: "button", class: "btn btn-sm", onclick: () => toggle(c) }, c.enabled ? "Disable" : "Enable")) },
    ], rows, "No channels yet. Add one so that models have somewhere to go."));
    const workers = health.workers;
    note.textContent = workers === null ? "Circuit state unknown: the workers could not be asked." :
      `Circuit state from ${workers.length} worker${workers.length === 1 ? "" : "s"}; outcomes from the jobs of the last hour.`;
  };
  const reload = () => load().catch((e) => banner(e.message));
  const toggle = async (c) => {
    try {
      await api("PATCH", "/channels/" + encodeURIComponent(c.id), { enabled: !c.enabled });
      banner(`Channel ${c.name} ${c.enabled ? "disabled" : "enabled"}.`, "ok");
      reload();
    } catch (e) {
      banner(e.message);
    }
  };
  const remove = async (c) => {
    if (!await confirm("Delete channel?", `Channel ${c.name} will stop serving ${c.models.join(", ")} at once.`, "Delete channel", true)) return;
    try {
      await api("DELETE", "/channels/" + encodeURIComponent(c.id));
      banner(`Channel ${c.name} deleted.`, "ok");
      reload();
    } catch (e) {
      banner(e.message);
    }
  };
  await load();
  return page;
}
