// DOM helpers, formatters, the banner and the modal. Text always goes in as text nodes
// (no HTML string is ever parsed), so nothing the API returns is read as markup.

// h makes an element: h("div", {class: "x", onclick: fn, "data-id": 1}, child, "text", …).
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") {
      el.addEventListener(k.slice(2), v);
    } else if (k === "class") {
      el.className = v;
    } else if (k === "text") {
      el.textContent = v;
    } else if (k === "value") {
      el.value = v;
    } else if (k === "checked" || k === "selected" || k === "disabled" || k === "hidden") {
      el[k] = true;
    } else {
      el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// svg makes an SVG element with attributes.
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const usd = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 2 });
const usdFine = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 6 });
const int = new Intl.NumberFormat("en-US");
const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });

export const fmt = {
  // money: dollars with cents, and more digits below a dollar (LLM calls cost fractions of a cent).
  money(v) {
    if (v === null || v === undefined) return "—";
    return Math.abs(v) >= 1 || v === 0 ? usd.format(v) : usdFine.format(v);
  },
  int(v) {
    return v === null || v === undefined ? "—" : int.format(v);
  },
  compact(v) {
    return v === null || v === undefined ? "—" : compact.format(v);
  },
  // time: a Unix-seconds time as local date and time.
  time(unix) {
    if (!unix) return "—";
    const d = new Date(unix * 1000);
    return d.toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" }) + " " +
      d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  },
  // ago: how long ago a Unix-seconds time was, roughly.
  ago(unix) {
    if (!unix) return "never";
    const s = Math.round(Date.now() / 1000 - unix);
    if (s < 0) return "in " + fmt.span(-s);
    return fmt.span(s) + " ago";
  },
  span(s) {
    if (s < 60) return s + "s";
    if (s < 3600) return Math.round(s / 60) + " min";
    if (s < 86400) return Math.round(s / 3600) + " h";
    return Math.round(s / 86400) + " d";
  },
  // duration: seconds between two Unix times.
  duration(from, to) {
    if (!from || !to) return "—";
    return to - from < 1 ? "<1s" : fmt.span(to - from);
  },
  pct(v) {
    return (v * 100).toFixed(v > 0 && v < 0.1 ? 1 : 0) + "%";
  },
};

// pill is a small status label; kind is ok, bad, warn, info or "" (neutral).
export function pill(text, kind) {
  return h("span", { class: "pill " + (kind || "") }, text);
}

export function tags(list) {
  if (!list || list.length === 0) return h("span", { class: "muted" }, "any");
  return list.map((m) => h("span", { class: "tag" }, m));
}

// table renders rows as a table; cols are {label, num?, cell(row) → node|text, class?}.
// onRow, if set, makes rows clickable.
export function table(cols, rows, empty, onRow) {
  if (!rows || rows.length === 0) return h("div", { class: "empty" }, empty || "Nothing here yet.");
  return h("div", { class: "table-wrap" },
    h("table", {},
      h("thead", {}, h("tr", {}, cols.map((c) => h("th", { class: c.num ? "num" : "" }, c.label)))),
      h("tbody", {}, rows.map((r) => h("tr", {
        class: onRow ? "clickable" : "",
        onclick: onRow ? (ev) => { if (!ev.target.closest("button, a")) onRow(r); } : null,
        "data-id": r.id,
      }, cols.map((c) => h("td", { class: (c.num ? "num " : "") + (c.class || "") }, c.cell(r))))))));
}

// banner shows a message over the page (an error unless kind is "ok"); "" hides it.
export function banner(message, kind) {
  const el = document.getElementById("banner");
  if (!message) {
    el.hidden = true;
    return;
  }
  el.className = "banner " + (kind || "");
  clear(el, h("span", {}, message), h("button", { type: "button", "aria-label": "Dismiss", onclick: () => banner("") }, "×"));
  el.hidden = false;
}

// modal opens a dialog; body and foot are nodes. It returns close().
export function modal(title, body, foot, wide) {
  const root = document.getElementById("modal-root");
  const close = () => {
    root.replaceChildren();
    document.removeEventListener("keydown", onKey);
  };
  const onKey = (ev) => { if (ev.key === "Escape") close(); };
  document.addEventListener("keydown", onKey);
  const box = h("div", { class: "modal" + (wide ? " wide" : ""), role: "dialog", "aria-modal": "true", "aria-label": title },
    h("div", { class: "modal-head" }, h("h2", {}, title), h("button", { type: "button", class: "close", "aria-label": "Close", onclick: close }, "×")),
    h("div", { class: "modal-body" }, body),
    foot ? h("div", { class: "modal-foot" }, foot) : null);
  const backdrop = h("div", { class: "backdrop", onmousedown: (ev) => { if (ev.target === backdrop) close(); } }, box);
  clear(root, backdrop);
  const first = box.querySelector("input, select, textarea");
  if (first) first.focus();
  return close;
}

// confirm asks a yes/no question in a modal and resolves to the answer.
export function confirm(title, message, yes, danger) {
  return new Promise((resolve) => {
    let done = false;
    const finish = (v) => { if (!done) { done = true; close(); resolve(v); } };
    const close = modal(title, h("p", {}, message), [
      h("button", { type: "button", class: "btn", onclick: () => finish(false) }, "Cancel"),
      h("button", { type: "button", class: "btn " + (danger ? "btn-danger solid" : "btn-primary"), onclick: () => finish(true) }, yes),
    ]);
  });
}

// field is a labelled form control.
export function field(label, control, hint, full) {
  return h("div", { class: "field" + (full ? " full" : "") }, h("label", { for: control.id }, label), control,
    hint ? h("span", { class: "hint" }, hint) : null);
}

let seq = 0;
export function input(name, value, props) {
  return h("input", { id: "f-" + name + "-" + (++seq), name, value: value ?? "", ...(props || {}) });
}

export function select(name, options, value, props) {
  return h("select", { id: "f-" + name + "-" + (++seq), name, ...(props || {}) },
    options.map(([v, label]) => h("option", { value: v, selected: String(v) === String(value ?? "") }, label)));
}

// formError is the element a form shows the API's error in.
export function formError() {
  return h("p", { class: "form-error", role: "alert", hidden: true });
}

export function showError(el, err) {
  el.textContent = err ? (err.param ? err.param + ": " : "") + err.message : "";
  el.hidden = !err;
}

export function pageHead(title, sub, ...actions) {
  return h("div", { class: "page-head" }, h("div", {}, h("h1", {}, title), sub ? h("p", {}, sub) : null),
    h("div", { class: "actions" }, actions));
}

export function copyButton(text) {
  const b = h("button", { type: "button", class: "btn btn-sm" }, "Copy");
  b.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      b.textContent = "Copied";
    } catch {
      b.textContent = "Select and copy";
    }
  });
  return b;
}
