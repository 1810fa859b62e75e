// A collection's subjects: paginated, searchable by id prefix, with face thumbnails; delete a face
// or a whole subject.

import { api, ApiError, seg } from "../api.js";
import { announce, confirmDialog, errorBox, h, lastCollection, messageBox, replace, thresholdText } from "../dom.js";

const PAGE_SIZE = 12;
let thumbnailsOff = false; // the server said thumbnails_disabled: stop asking this session

export async function subjectsPage(view, { params, query, signal, urls, rerender }) {
  const [collection] = params;
  lastCollection(collection);
  const offset = Math.max(0, Number.parseInt(query.get("offset") || "0", 10) || 0);
  const prefix = (query.get("q") || "").trim();
  const [info, page] = await Promise.all([
    api.getCollection(collection, { signal }),
    api.listSubjects(collection, { offset, limit: PAGE_SIZE, id_prefix: prefix || undefined }, { signal }),
  ]);

  const link = (newOffset, q = prefix) => {
    const search = new URLSearchParams();
    if (newOffset) search.set("offset", String(newOffset));
    if (q) search.set("q", q);
    const s = search.toString();
    return `#/collections/${seg(collection)}${s ? `?${s}` : ""}`;
  };

  const searchInput = h("input", { type: "search", id: "subject-search", name: "q", value: prefix, autocomplete: "off", maxlength: 128 });
  const searchForm = h(
    "form",
    { class: "panel", role: "search", id: "subject-search-form" },
    h(
      "div",
      { class: "fields" },
      h("div", { class: "field" }, h("label", { for: "subject-search" }, "Find subjects whose id starts with"), searchInput),
      h("div", { class: "row-actions" }, h("button", { type: "submit", class: "primary" }, "Search"), prefix ? h("a", { class: "button", href: link(0, "") }, "Show all") : null),
    ),
  );
  searchForm.addEventListener("submit", (event) => {
    event.preventDefault();
    window.location.hash = link(0, searchInput.value.trim());
  });

  const identifyThreshold = thresholdText(info.identify_threshold);
  const summary = h(
    "p",
    { id: "collection-summary" },
    `${info.subject_count} subjects, ${info.face_count} faces.`,
    identifyThreshold ? ` Identify threshold ${identifyThreshold}.` : "",
    info.description ? ` ${info.description}` : "",
    " ",
    h("a", { href: `#/enroll?collection=${seg(collection)}` }, "Enroll photos"),
    " · ",
    h("a", { href: `#/identify?collection=${seg(collection)}` }, "Identify a photo"),
  );

  const first = page.total ? page.offset + 1 : 0;
  const last = page.offset + page.items.length;
  const range = prefix
    ? `${first}–${last} of ${page.total} subjects whose id starts with “${prefix}”`
    : `${first}–${last} of ${page.total} subjects`;
  const pager = () =>
    h(
      "nav",
      { class: "pager", "aria-label": "Pages of subjects" },
      page.offset > 0
        ? h("a", { class: "button", href: link(Math.max(0, page.offset - PAGE_SIZE)), rel: "prev" }, "← Previous")
        : h("button", { type: "button", disabled: true }, "← Previous"),
      h("span", { class: "range" }, range),
      last < page.total
        ? h("a", { class: "button", href: link(page.offset + PAGE_SIZE), rel: "next" }, "Next →")
        : h("button", { type: "button", disabled: true }, "Next →"),
    );

  const list = h("ul", { class: "subject-list", id: "subject-list", "aria-label": "Subjects" });
  for (const subject of page.items) list.append(subjectCard(collection, subject, { signal, urls, rerender }));

  view.append(
    h("p", {}, h("a", { href: "#/collections" }, "← Collections")),
    h("h1", {}, `Collection ${collection}`),
    summary,
    searchForm,
    ...(page.items.length
      ? [pager(), list, pager()]
      : [
          messageBox(
            "info",
            prefix ? `No subject id starts with “${prefix}”.` : "No subjects yet. ",
            prefix ? null : h("a", { href: `#/enroll?collection=${seg(collection)}` }, "Enroll someone"),
          ),
        ]),
  );
}

function subjectCard(collection, subject, { signal, urls, rerender }) {
  const thumbs = h("ul", { class: "thumbs", "aria-label": `Faces of ${subject.subject_id}` });
  const status = h("div");
  const removeSubject = h("button", { type: "button", class: "danger", "aria-label": `Delete subject ${subject.subject_id}` }, "Delete subject");
  removeSubject.addEventListener("click", async () => {
    const ok = await confirmDialog({
      title: `Delete subject ${subject.subject_id}?`,
      message: `${subject.face_count} enrolled faces go with it (store, index and thumbnails).`,
      confirmLabel: "Delete subject",
    });
    if (!ok) return;
    try {
      await api.deleteSubject(collection, subject.subject_id);
      announce(`Subject ${subject.subject_id} deleted.`);
      await rerender();
    } catch (err) {
      replace(status, errorBox(err));
    }
  });
  const card = h(
    "li",
    { class: "subject-card", dataset: { subject: subject.subject_id } },
    h("h3", {}, subject.subject_id),
    subject.name ? h("p", { class: "hint" }, subject.name) : null,
    h("p", { class: "hint face-count" }, `${subject.face_count} face${subject.face_count === 1 ? "" : "s"}`),
    thumbs,
    h(
      "div",
      { class: "row-actions" },
      h("a", { class: "button", href: `#/enroll?collection=${seg(collection)}&subject=${seg(subject.subject_id)}`, "aria-label": `Enroll more photos of ${subject.subject_id}` }, "Enroll more"),
      removeSubject,
    ),
    status,
  );
  loadFaces(collection, subject, thumbs, status, { signal, urls, rerender });
  return card;
}

async function loadFaces(collection, subject, thumbs, status, { signal, urls, rerender }) {
  if (!subject.face_count) return;
  try {
    const { faces } = await api.listFaces(collection, subject.subject_id, { signal });
    for (const [i, face] of faces.entries()) {
      const label = `face ${i + 1} of ${subject.subject_id}`;
      const picture = h("div", { class: "no-thumb" }, thumbnailsOff ? "no thumbnail" : "…");
      const remove = h("button", { type: "button", class: "danger", "aria-label": `Delete ${label}` }, "Delete");
      remove.addEventListener("click", async () => {
        const ok = await confirmDialog({
          title: `Delete ${label}?`,
          message: "The face is removed from the store and the index; the subject stays.",
          confirmLabel: "Delete face",
        });
        if (!ok) return;
        try {
          await api.deleteFace(collection, face.face_id);
          announce(`Deleted ${label}.`);
          await rerender();
        } catch (err) {
          replace(status, errorBox(err));
        }
      });
      thumbs.append(h("li", { class: "thumb", dataset: { faceId: face.face_id } }, picture, remove));
      if (!thumbnailsOff) loadThumbnail(collection, face, picture, label, { signal, urls });
    }
  } catch (err) {
    if (!signal.aborted) replace(status, errorBox(err));
  }
}

async function loadThumbnail(collection, face, placeholder, label, { signal, urls }) {
  try {
    // Fetched (not an <img src>) so that the X-API-Key header goes with it.
    const blob = await api.thumbnail(collection, face.face_id, { signal });
    const img = h("img", { src: urls.add(blob), alt: label, width: 112, height: 112, class: "thumbnail" });
    placeholder.replaceWith(img);
  } catch (err) {
    if (signal.aborted) return;
    if (err instanceof ApiError && err.code === "thumbnails_disabled") thumbnailsOff = true;
    placeholder.textContent = "no thumbnail";
    placeholder.title = err.message;
  }
}
