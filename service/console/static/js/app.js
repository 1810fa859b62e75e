// The console shell: hash routes, the navigation, and the API-key prompt.

import { apiKey, onKeyChange, setApiKey, setKeyPrompt } from "./api.js";
import { errorBox, h, replace, UrlBag } from "./dom.js";
import { collectionsPage } from "./pages/collections.js";
import { enrollPage } from "./pages/enroll.js";
import { identifyPage } from "./pages/identify.js";
import { subjectsPage } from "./pages/subjects.js";
import { verifyPage } from "./pages/verify.js";

const ROUTES = [
  { pattern: /^\/?$/, nav: "collections", page: collectionsPage },
  { pattern: /^\/collections\/?$/, nav: "collections", page: collectionsPage },
  { pattern: /^\/collections\/([^/]+)\/?$/, nav: "collections", page: subjectsPage },
  { pattern: /^\/enroll\/?$/, nav: "enroll", page: enrollPage },
  { pattern: /^\/identify\/?$/, nav: "identify", page: identifyPage },
  { pattern: /^\/verify\/?$/, nav: "verify", page: verifyPage },
];

const main = document.getElementById("main");
let current = null; // {controller, urls} of the page on screen

function parseHash() {
  const raw = window.location.hash.replace(/^#/, "");
  const [path, search = ""] = raw.split("?");
  return { path: path || "/", query: new URLSearchParams(search) };
}

async function render() {
  if (current) {
    current.controller.abort();
    current.urls.revokeAll();
  }
  const { path, query } = parseHash();
  const route = ROUTES.find((r) => r.pattern.test(path));
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (route && link.dataset.nav === route.nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const controller = new AbortController();
  const urls = new UrlBag();
  current = { controller, urls };
  replace(main, h("p", { class: "loading" }, "Loading…"));
  if (!route) {
    replace(main, h("h1", { tabindex: "-1" }, "Not found"), h("p", {}, h("a", { href: "#/collections" }, "Back to the collections")));
    focusHeading();
    return;
  }
  const params = path.match(route.pattern).slice(1).map(decodeURIComponent);
  const view = h("div", { class: "page" });
  try {
    await route.page(view, { params, query, signal: controller.signal, urls, rerender: render });
  } catch (err) {
    if (controller.signal.aborted) return;
    view.replaceChildren(h("h1", { tabindex: "-1" }, "Something went wrong"), errorBox(err));
  }
  if (controller.signal.aborted) return;
  replace(main, view);
  const heading = view.querySelector("h1");
  document.title = heading ? `${heading.textContent} · Faces console` : "Faces console";
  focusHeading();
}

function focusHeading() {
  const heading = main.querySelector("h1");
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: true });
  }
}

// ------------------------------------------------------------------ API key

const keyDialog = document.getElementById("key-dialog");
const keyInput = document.getElementById("key-input");
const keyReason = document.getElementById("key-dialog-reason");
let pendingPrompt = null;

function promptForKey(problem) {
  if (pendingPrompt) return pendingPrompt; // several calls failing at once share one prompt
  pendingPrompt = new Promise((resolve) => {
    keyReason.textContent = (problem && problem.detail) || "This server requires an API key.";
    keyInput.value = "";
    const onClose = () => {
      keyDialog.removeEventListener("close", onClose);
      pendingPrompt = null;
      const key = keyDialog.returnValue === "ok" ? keyInput.value.trim() : "";
      keyInput.value = "";
      resolve(key || null);
    };
    keyDialog.addEventListener("close", onClose);
    keyDialog.returnValue = "";
    keyDialog.showModal();
    keyInput.focus();
  });
  return pendingPrompt;
}

function showKeyStatus(hasKey) {
  document.getElementById("key-status").hidden = !hasKey;
}

setKeyPrompt(promptForKey);
onKeyChange(showKeyStatus);
showKeyStatus(Boolean(apiKey()));
document.getElementById("key-forget").addEventListener("click", () => {
  setApiKey(null);
  render();
});

window.addEventListener("hashchange", render);
render();
