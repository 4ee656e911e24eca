// The console's shell: sign-in, navigation and the page router (#/keys, #/channels, …).
import { api, clearToken, setToken, token, whenUnauthorized } from "./api.js";
import { banner, clear, h } from "./ui.js";
import { keysPage } from "./keys.js";
import { channelsPage } from "./channels.js";
import { pricesPage } from "./prices.js";
import { usagePage } from "./usage.js";
import { jobsPage } from "./jobs.js";

const pages = { keys: keysPage, channels: channelsPage, prices: pricesPage, usage: usagePage, jobs: jobsPage };

const $ = (id) => document.getElementById(id);

function showSignin(message) {
  $("app").hidden = true;
  $("signin").hidden = false;
  const err = $("signin-error");
  err.textContent = message || "";
  err.hidden = !message;
  $("signin-token").value = "";
  $("signin-token").focus();
}

function showApp() {
  $("signin").hidden = true;
  $("app").hidden = false;
  route();
}

let rendering = 0;

// route renders the page the location's hash names (#/page?param=value).
async function route() {
  if (!token()) {
    showSignin();
    return;
  }
  const [name, qs] = (location.hash.replace(/^#\/?/, "") || "keys").split("?");
  const page = pages[name] ? name : "keys";
  for (const a of $("nav").querySelectorAll("a")) {
    a.classList.toggle("active", a.dataset.page === page);
  }
  document.title = $("nav").querySelector(`a[data-page="${page}"]`).textContent + " · Sluice console";
  banner("");
  const root = $("page");
  const mine = ++rendering;
  clear(root, h("div", { class: "empty" }, "Loading…"));
  const params = new URLSearchParams(qs || "");
  try {
    const node = await pages[page](params);
    if (mine === rendering) clear(root, node);
  } catch (err) {
    if (mine !== rendering) return;
    clear(root);
    banner(err.message || String(err));
  }
}

$("signin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const tok = $("signin-token").value.trim();
  const btn = $("signin-submit");
  btn.disabled = true;
  try {
    await api("GET", "/keys", undefined, tok); // checks the token before keeping it
    setToken(tok);
    $("signin-token").value = "";
    showApp();
  } catch (err) {
    showSignin(err.status === 401 ? "That admin token was refused." : err.message);
  } finally {
    btn.disabled = false;
  }
});

$("signout").addEventListener("click", () => {
  clearToken();
  showSignin();
});

whenUnauthorized(() => {
  clearToken();
  showSignin("The admin token was refused; sign in again.");
});

window.addEventListener("hashchange", route);

if (token()) {
  showApp();
} else {
  showSignin();
}
