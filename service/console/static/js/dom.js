// Small DOM helpers. Text always goes in as text nodes (never innerHTML): names and ids come from users.

import { ApiError } from "./api.js";

/** h("a", {href: "#/x", class: "y", onclick: fn}, "text", child, [more]) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "value") el.value = value;
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Tell screen-reader users what just happened (the page also shows it). */
export function announce(text) {
  const region = document.getElementById("announcer");
  region.textContent = "";
  window.setTimeout(() => {
    region.textContent = text;
  }, 30);
}

export function errorText(err) {
  if (err instanceof ApiError) {
    const code = err.code ? ` (${err.code})` : "";
    return `${err.message}${code}`;
  }
  if (err && err.name === "AbortError") return "Cancelled.";
  return err && err.message ? `${err.message}` : String(err);
}

export function errorBox(err) {
  return h("div", { class: "message error", role: "alert" }, errorText(err));
}

export function messageBox(kind, ...children) {
  return h("div", { class: `message ${kind}` }, ...children);
}

export function fmt(value, digits = 3) {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "—";
}

export function fmtDate(value) {
  if (!value) return "";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

const SOURCES = {
  model_card: "model card default",
  model_card_by_size: "model card default for this collection's size",
  settings: "server setting",
  collection: "set on this collection",
  calibration: "calibrated on this collection",
};

/** Where a threshold came from, in plain words; the size rule says the size it was read at. */
function sourceWords(threshold) {
  if (threshold.source === "model_card_by_size" && Number.isInteger(threshold.read_at_subjects)) {
    const n = threshold.read_at_subjects;
    return `model card default for ${n} ${n === 1 ? "subject" : "subjects"}, stricter as the collection grows`;
  }
  return SOURCES[threshold.source] || threshold.source || "";
}

/** {value, source, set_at} (or a bare number) → "1.399" plus where it came from. */
export function thresholdCell(threshold) {
  if (threshold === undefined || threshold === null) {
    return h("span", {}, "—", h("span", { class: "source" }, "not reported by this server"));
  }
  if (typeof threshold === "number") return h("span", {}, fmt(threshold));
  const source = sourceWords(threshold);
  const since = threshold.set_at ? `, ${fmtDate(threshold.set_at)}` : "";
  return h("span", {}, fmt(threshold.value), h("span", { class: "source" }, `${source}${since}`));
}

/** Where a threshold object came from, in words ("" when the server does not say). */
export function thresholdSource(threshold) {
  if (!threshold || typeof threshold !== "object") return "";
  const source = sourceWords(threshold);
  return threshold.set_at ? `${source}, ${fmtDate(threshold.set_at)}` : source;
}

export function thresholdText(threshold) {
  if (threshold === undefined || threshold === null) return "";
  if (typeof threshold === "number") return fmt(threshold);
  return `${fmt(threshold.value)} (${sourceWords(threshold)})`;
}

/**
 * Distance against the threshold: bar length = distance on a fixed [0, scale] axis, a tick at the
 * threshold; the text says the same for screen readers and grayscale.
 */
export function distanceBar(distance, threshold, scale) {
  const max = scale || Math.min(4, Math.max(2, threshold * 1.5));
  const within = distance <= threshold;
  const pct = (v) => `${Math.min(100, Math.max(0, (v / max) * 100)).toFixed(2)}%`;
  const fill = h("span", { class: "dbar-fill" });
  fill.style.width = pct(distance);
  const tick = h("span", { class: "dbar-threshold" });
  tick.style.left = pct(threshold);
  const label = `distance ${fmt(distance)} ${within ? "within" : "over"} threshold ${fmt(threshold)}`;
  return h("div", { class: `dbar ${within ? "within" : "over"}`, role: "img", "aria-label": label, title: label }, fill, tick);
}

/** A modal yes/no question; with `requireText` the user must type it to enable the confirm button. */
export function confirmDialog({ title, message, confirmLabel = "Delete", requireText = null }) {
  return new Promise((resolve) => {
    const input = requireText
      ? h("input", { type: "text", id: "confirm-input", autocomplete: "off", spellcheck: "false" })
      : null;
    const confirmButton = h("button", { type: "submit", value: "ok", class: "danger solid", disabled: Boolean(requireText) }, confirmLabel);
    const dialog = h(
      "dialog",
      { "aria-labelledby": "confirm-title", class: "confirm-dialog" },
      h(
        "form",
        { method: "dialog" },
        h("h2", { id: "confirm-title" }, title),
        h("p", {}, message),
        requireText
          ? [h("label", { for: "confirm-input" }, `Type ${requireText} to confirm`), input]
          : null,
        h("div", { class: "actions" }, confirmButton, h("button", { type: "submit", value: "cancel", formnovalidate: true }, "Cancel")),
      ),
    );
    if (input) {
      input.addEventListener("input", () => {
        confirmButton.disabled = input.value !== requireText;
      });
    }
    dialog.addEventListener("close", () => {
      const ok = dialog.returnValue === "ok" && (!input || input.value === requireText);
      dialog.remove();
      resolve(ok);
    });
    document.body.append(dialog);
    dialog.showModal();
    (input || confirmButton).focus();
  });
}

/** Object URLs made for a page, revoked when the page goes away. */
export class UrlBag {
  constructor() {
    this.urls = [];
  }
  add(blob) {
    const url = URL.createObjectURL(blob);
    this.urls.push(url);
    return url;
  }
  revokeAll() {
    for (const url of this.urls) URL.revokeObjectURL(url);
    this.urls = [];
  }
}

export const COLLECTION_PATTERN = "[A-Za-z0-9][A-Za-z0-9_.\\-]{0,63}";
export const SUBJECT_PATTERN = "[A-Za-z0-9][A-Za-z0-9_.@:+\\-]{0,127}";

/** The collection the user worked with last (this tab), to preselect it elsewhere. */
export function lastCollection(value) {
  if (value) sessionStorage.setItem("faces.collection", value);
  return sessionStorage.getItem("faces.collection");
}
