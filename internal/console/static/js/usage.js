// Usage: cost and tokens by day and by model, from the ledger (GET /admin/v1/usage).
import { api, query } from "./api.js";
import { bars, columns } from "./charts.js";
import { banner, clear, field, fmt, h, pageHead, select, table } from "./ui.js";

const ranges = [["7", "Last 7 days"], ["30", "Last 30 days"], ["90", "Last 90 days"]];

// days lists the UTC dates (YYYY-MM-DD) from n-1 days ago to today.
function days(n) {
  const out = [];
  const today = new Date();
  for (let i = n - 1; i >= 0; i--) {
    const d = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - i));
    out.push(d.toISOString().slice(0, 10));
  }
  return out;
}

function stat(label, value, id) {
  return h("div", { class: "stat" }, h("div", { class: "label" }, label), h("div", { class: "value", id }, value));
}

const short = (d) => new Date(d + "T00:00:00Z").toLocaleDateString(undefined, { month: "short", day: "numeric", timeZone: "UTC" });

export async function usagePage(params) {
  const keys = await api("GET", "/keys");
  const range = select("range", ranges, params.get("days") || "30");
  const key = select("key", [["", "All keys"], ...keys.data.map((k) => [k.id, (k.name || k.id) + " (" + k.key_hint + ")"])],
    params.get("key_id") || "");
  const content = h("div", {});
  const page = h("div", {},
    pageHead("Usage", "What callers spent and the tokens they used, from the ledger Sluice charges keys by (UTC days)."),
    h("div", { class: "panel flush" }, h("div", { class: "filters" }, field("Period", range), field("Key", key))),
    content);
  const load = async () => {
    const n = Number(range.value);
    const from = Math.floor(Date.now() / 1000) - n * 86400;
    const base = { from, key_id: key.value };
    const [byDay, byModel] = await Promise.all([
      api("GET", "/usage" + query({ ...base, group_by: "day" })),
      api("GET", "/usage" + query({ ...base, group_by: "model" })),
    ]);
    const labels = days(n);
    const at = Object.fromEntries(byDay.data.map((r) => [r.group, r]));
    const col = (f) => labels.map((d) => (at[d] ? f(at[d]) : 0));
    const models = byModel.data.slice().sort((a, b) => b.cost_usd - a.cost_usd || b.prompt_tokens - a.prompt_tokens);
    const sum = (f) => byModel.data.reduce((a, r) => a + f(r), 0);
    const tokensOf = (r) => r.prompt_tokens + r.completion_tokens;
    clear(content,
      h("div", { class: "stats" },
        stat("Requests", fmt.int(sum((r) => r.requests)), "stat-requests"),
        stat("Tokens", fmt.compact(sum(tokensOf)), "stat-tokens"),
        stat("Cost", fmt.money(sum((r) => r.cost_usd)), "stat-cost"),
        stat("Cache hits", fmt.int(sum((r) => r.cache_hits)), "stat-cache")),
      h("div", { class: "grid grid-2" },
        h("div", { class: "panel" }, h("h2", {}, "Cost by day"),
          columns({ id: "chart-cost-day", labels, shortLabel: short, format: fmt.money,
            series: [{ name: "Cost", values: col((r) => r.cost_usd) }] })),
        h("div", { class: "panel" }, h("h2", {}, "Tokens by day"),
          columns({ id: "chart-tokens-day", labels, shortLabel: short, format: fmt.compact,
            series: [{ name: "Prompt tokens", values: col((r) => r.prompt_tokens) },
              { name: "Completion tokens", values: col((r) => r.completion_tokens) }] })),
        h("div", { class: "panel" }, h("h2", {}, "Cost by model"),
          bars({ id: "chart-cost-model", labels: models.map((r) => r.group), format: fmt.money,
            series: [{ name: "Cost", values: models.map((r) => r.cost_usd) }] })),
        h("div", { class: "panel" }, h("h2", {}, "Tokens by model"),
          bars({ id: "chart-tokens-model", labels: models.map((r) => r.group), format: fmt.compact,
            series: [{ name: "Prompt tokens", values: models.map((r) => r.prompt_tokens) },
              { name: "Completion tokens", values: models.map((r) => r.completion_tokens) }] }))),
      h("div", { class: "panel flush" }, h("div", { class: "panel-head" }, h("h2", {}, "By model")), table([
        { label: "Model", cell: (r) => h("strong", { class: "mono" }, r.group) },
        { label: "Requests", num: true, cell: (r) => fmt.int(r.requests) },
        { label: "Prompt tokens", num: true, cell: (r) => fmt.int(r.prompt_tokens) },
        { label: "Completion tokens", num: true, cell: (r) => fmt.int(r.completion_tokens) },
        { label: "Cache hits", num: true, cell: (r) => fmt.int(r.cache_hits) },
        { label: "Cost", num: true, cell: (r) => fmt.money(r.cost_usd) },
      ], models, "No usage in this period.")));
  };
  const reload = () => {
    const q = new URLSearchParams({ days: range.value });
    if (key.value) q.set("key_id", key.value);
    history.replaceState(null, "", "#/usage?" + q.toString());
    load().catch((e) => banner(e.message));
  };
  range.addEventListener("change", reload);
  key.addEventListener("change", reload);
  await load();
  return page;
}
