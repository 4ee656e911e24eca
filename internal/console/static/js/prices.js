// Prices: what each model costs per million tokens, which is what usage is charged at.
import { api } from "./api.js";
import { banner, clear, field, fmt, formError, h, input, pageHead, showError, table } from "./ui.js";

export async function pricesPage() {
  const err = formError();
  const form = h("form", { class: "inline-form", id: "price-form", method: "post" },
    field("Model", input("model", "", { placeholder: "e.g. gpt-4o-mini", required: true })),
    field("Input, USD per 1M tokens", input("input", "", { type: "number", min: 0, step: "any", required: true })),
    field("Output, USD per 1M tokens", input("output", "", { type: "number", min: 0, step: "any", required: true })),
    h("button", { type: "submit", class: "btn btn-primary" }, "Save price"));
  const list = h("div", { class: "panel flush" });
  const page = h("div", {},
    pageHead("Prices", "Per-model prices in USD per million tokens. A model without a price is charged the unpriced default."),
    h("div", { class: "panel" }, h("h2", {}, "Set a price"), form, err),
    list);
  const edit = (p) => {
    form.elements.model.value = p.model;
    form.elements.input.value = p.input_usd_per_1m;
    form.elements.output.value = p.output_usd_per_1m;
    form.elements.input.focus();
  };
  const load = async () => {
    const prices = await api("GET", "/prices");
    clear(list, h("div", { class: "panel-head" }, h("h2", {}, prices.data.length + " models priced")), table([
      { label: "Model", cell: (p) => h("strong", { class: "mono" }, p.model) },
      { label: "Input / 1M", num: true, cell: (p) => fmt.money(p.input_usd_per_1m) },
      { label: "Output / 1M", num: true, cell: (p) => fmt.money(p.output_usd_per_1m) },
      { label: "1K in + 1K out", num: true, cell: (p) => fmt.money((p.input_usd_per_1m + p.output_usd_per_1m) / 1000) },
      { label: "", cell: (p) => h("button", { type: "button", class: "btn btn-sm", onclick: () => edit(p) }, "Edit") },
    ], prices.data, "No prices yet."));
  };
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const model = form.elements.model.value.trim();
    try {
      await api("PUT", "/prices/" + model.split("/").map(encodeURIComponent).join("/"), {
        input_usd_per_1m: Number(form.elements.input.value), output_usd_per_1m: Number(form.elements.output.value),
      });
      showError(err, null);
      form.reset();
      banner(`Price of ${model} saved.`, "ok");
      await load();
    } catch (e) {
      showError(err, e);
    }
  });
  await load();
  return page;
}
