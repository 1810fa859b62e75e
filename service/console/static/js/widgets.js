// Building blocks shared by pages: image drop zones, photos with face boxes, the collection picker.

import { api } from "./api.js";
import { h, lastCollection } from "./dom.js";

export const IMAGE_TYPES = ["image/jpeg", "image/png", "image/webp"];

// A file dropped outside a drop zone must not make the browser navigate away from the console.
for (const type of ["dragover", "drop"]) {
  window.addEventListener(type, (event) => {
    if (!event.target.closest || !event.target.closest(".dropzone")) event.preventDefault();
  });
}

/**
 * A labelled file input that also takes drag and drop. The native input stays visible: it is the
 * keyboard path (Tab to it, Enter or Space opens the picker).
 */
export function dropZone({ id, label, hint, multiple = false, onFiles }) {
  const input = h("input", {
    type: "file",
    id,
    name: id,
    accept: IMAGE_TYPES.join(","),
    multiple,
    "aria-describedby": `${id}-hint`,
  });
  const zone = h(
    "div",
    { class: "dropzone" },
    h("label", { for: id }, label),
    input,
    h("p", { class: "hint", id: `${id}-hint` }, hint || (multiple ? "Drop photos here or choose them (JPEG, PNG, WebP)." : "Drop a photo here or choose one (JPEG, PNG, WebP).")),
  );
  input.addEventListener("change", () => {
    if (input.files.length) onFiles([...input.files]);
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", (event) => {
    if (!zone.contains(event.relatedTarget)) zone.classList.remove("dragging");
  });
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const files = [...event.dataTransfer.files];
    if (files.length) onFiles(multiple ? files : files.slice(0, 1));
  });
  return { element: zone, input };
}

/**
 * A photo with a box per face. `faces`: [{box: [x, y, w, h] in image pixels, name, matched}].
 * Boxes are placed in percent of the image, so they follow it when the layout scales it.
 */
export function photoWithBoxes(url, alt, faces, { numbered = true } = {}) {
  const img = h("img", { src: url, alt });
  const boxes = h("ol", { class: "faceboxes", "aria-label": "Faces found" });
  const frame = h("div", { class: "photo-frame" }, img, boxes);
  const place = () => {
    const width = img.naturalWidth;
    const height = img.naturalHeight;
    if (!width || !height) return;
    boxes.replaceChildren();
    faces.forEach((face, i) => {
      const [x, y, w, hgt] = face.box;
      const name = face.matched ? face.name : "unknown";
      const item = h(
        "li",
        {
          class: `facebox ${face.matched ? "matched" : "unknown"}${(x + w) / width > 0.8 ? " label-right" : ""}`,
          dataset: { face: String(i + 1), label: name },
        },
        h(
          "span",
          { class: "facebox-label" },
          numbered ? h("span", { class: "facebox-number", "aria-hidden": "true" }, String(i + 1)) : null,
          numbered ? h("span", { class: "visually-hidden" }, `Face ${i + 1}: `) : null,
          h("span", { class: "facebox-name" }, name),
        ),
      );
      item.style.left = `${(x / width) * 100}%`;
      item.style.top = `${(y / height) * 100}%`;
      item.style.width = `${(w / width) * 100}%`;
      item.style.height = `${(hgt / height) * 100}%`;
      boxes.append(item);
    });
    frame.dataset.boxesDrawn = String(faces.length);
  };
  if (img.complete && img.naturalWidth) place();
  else img.addEventListener("load", place, { once: true });
  return frame;
}

/**
 * A <select> of the collections this key may use; resolves with {element, select, refresh} or, with
 * select null, an element explaining that there is none yet or that the collection asked for by name
 * (`?collection=`) does not exist: never silently another one. `refresh()` re-reads the counts.
 */
export async function collectionPicker(id, preferred) {
  const { collections } = await api.listCollections();
  if (!collections.length) {
    return {
      element: h("p", { class: "message info" }, "No collection yet. ", h("a", { href: "#/collections" }, "Create one first"), "."),
      select: null,
      collections,
    };
  }
  if (preferred && !collections.some((c) => c.name === preferred)) {
    return { element: missingCollection(preferred, collections), select: null, collections };
  }
  const wanted = preferred || lastCollection();
  const select = h(
    "select",
    { id, name: id, required: true },
    collections.map((c) => h("option", { value: c.name, selected: c.name === wanted }, collectionLabel(c))),
  );
  select.addEventListener("change", () => lastCollection(select.value));
  const refresh = async () => {
    const { collections: now } = await api.listCollections();
    const byName = new Map(now.map((c) => [c.name, c]));
    for (const option of select.options) {
      const c = byName.get(option.value);
      if (c) option.textContent = collectionLabel(c);
    }
  };
  return {
    element: h("div", { class: "field" }, h("label", { for: id }, "Collection"), select),
    select,
    collections,
    refresh,
  };
}

function collectionLabel(c) {
  return `${c.name} (${c.subject_count} subject${c.subject_count === 1 ? "" : "s"})`;
}

/** The page asked for a collection by name and there is none: say so, and offer the ones there are. */
function missingCollection(name, collections) {
  const [path] = window.location.hash.replace(/^#/, "").split("?");
  const here = (c) => `#${path}?${new URLSearchParams({ collection: c.name })}`;
  return h(
    "p",
    { class: "message error", id: "collection-missing", role: "alert" },
    `Collection “${name}” does not exist (or this API key may not use it). Use `,
    collections.slice(0, 10).flatMap((c, i) => [i ? ", " : "", h("a", { href: here(c) }, c.name)]),
    collections.length > 10 ? ", …" : "",
    " or see ",
    h("a", { href: "#/collections" }, "all collections"),
    ".",
  );
}
