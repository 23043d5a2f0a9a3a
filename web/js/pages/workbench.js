// Dataset workbench: upload, a lazy thumbnail grid with selection, per-image tags/caption/repeats/reg, crop, batch
// tags and captions, captioning.
import { del, get, patch, post, getAll } from "../api.js";
import { field, h, mount, splitList, tabs } from "../dom.js";
import { batchCaptionPanel, captionLength, captionPanel } from "./captions.js";
import { batchTagPanel, frequencyList } from "./tags.js";
import { maskEditor, maskOverlay, maskPanel } from "./masks.js";
import { autotagPanel, duplicatesPanel, exportLinks, followOpenTasks, followTask } from "./tools.js";
import { uploadPanel } from "./upload.js";
import { virtualGrid } from "../virtual_grid.js";

function cropOverlay(image) {
  if (!image.crop) return null;
  const s = 1 / Math.max(image.width, image.height);
  const left = (1 - image.width * s) / 2 + image.crop.x * s, top = (1 - image.height * s) / 2 + image.crop.y * s;
  const pct = (v) => `${(v * 100).toFixed(2)}%`;
  return h("span", { class: "crop", title: "crop box", style: `left:${pct(left)};top:${pct(top)};` +
    `width:${pct(image.crop.width * s)};height:${pct(image.crop.height * s)}` });
}

export async function workbenchPage(datasetId) {
  const state = { dataset: null, images: [], frequencies: [], selected: new Set(), filter: null, last: null,
                  groupOf: new Map(), pending: null, saving: Promise.resolve() };
  const grid = virtualGrid({ tile: (image) => tile(image), key: (image) => image.id, label: "Images" });
  const side = h("div");
  const counter = h("p", { class: "muted", role: "status" });
  const message = h("p", { class: "error", role: "alert" });
  const selectedIds = () => [...state.selected];

  async function reload() {
    [state.dataset, state.images, state.frequencies] = await Promise.all([
      get(`/datasets/${datasetId}`), getAll(`/datasets/${datasetId}/images`), getAll(`/datasets/${datasetId}/tags`)]);
    const ids = new Set(state.images.map((i) => i.id));
    state.selected = new Set([...state.selected].filter((id) => ids.has(id)));
    render();
  }

  const SORTS = {
    upload: null,
    tags: (a, b) => b.tags.length - a.tags.length,
    size: (a, b) => b.width * b.height - a.width * a.height,
    aspect: (a, b) => a.width / a.height - b.width / b.height,
    // near-duplicates side by side, groups first; the rest keep upload order
    duplicates: (a, b) => (state.groupOf.get(a.id) ?? Infinity) - (state.groupOf.get(b.id) ?? Infinity),
  };
  async function sortBy(sort) {
    if (sort === "duplicates") {
      const { groups } = await get(`/datasets/${datasetId}/duplicates`);
      state.groupOf = new Map(groups.flatMap((group, g) => group.map((id) => [id, g])));
    }
    state.sort = sort;
    render();
  }
  function visible() {
    const shown = state.filter ? state.images.filter((i) => i.tags.includes(state.filter)) : state.images;
    const order = SORTS[state.sort || "upload"];
    return order ? [...shown].sort(order) : shown;
  }
  // smaller than the chosen family's training size on its short side: it will be upscaled (and look soft)
  const small = (image) => Math.min(image.width, image.height) < state.trainingSize;

  async function toggle(image, event) {
    if (state.pending) await state.pending(); // edits of the image being left are saved, never dropped
    const shown = visible();
    if (event.shiftKey && state.last) {
      const [a, b] = [shown.findIndex((i) => i.id === state.last), shown.findIndex((i) => i.id === image.id)].sort((x, y) => x - y);
      shown.slice(a, b + 1).forEach((i) => state.selected.add(i.id));
    } else if (event.ctrlKey || event.metaKey || state.selected.size > 1 || state.selected.has(image.id)) {
      state.selected.has(image.id) ? state.selected.delete(image.id) : state.selected.add(image.id);
    } else {
      state.selected = new Set([image.id]);
    }
    state.last = image.id;
    render();
  }

  const badges = (image) => [image.is_reg && "reg", small(image) && "small", image.mask_url && "mask",
    state.sort === "duplicates" && state.groupOf.has(image.id) && `≈ ${state.groupOf.get(image.id) + 1}`]
    .filter(Boolean).join(" · ");

  // what the site's screening says of an image, on its tile (the editor shows why)
  const SCREENING = { pending: "being screened", private: "private", held: "held for review", refused: "refused",
                      removed: "removed" };

  function tile(image) {
    const selected = state.selected.has(image.id);
    return h("button", { type: "button", class: "tile" + (selected ? " selected" : ""), role: "option",
                         "aria-selected": String(selected), title: [image.caption, image.tags.join(", ")]
                           .filter(Boolean).join("\n"), "data-id": image.id,
                         onclick: (e) => toggle(image, e) },
      h("div", { style: "position:relative" },
        h("img", { src: image.thumb_url, alt: image.filename, loading: "lazy", decoding: "async" }),
        maskOverlay(image), cropOverlay(image)),
      badges(image) && h("span", { class: "badge" }, badges(image)),
      image.screening !== "allowed" && h("span", { class: `screen screen-${image.screening}`,
                                                   title: image.screening_reason }, SCREENING[image.screening]),
      h("div", { class: "meta" }, image.filename),
      h("div", { class: "meta muted" }, state.readsSentences && image.caption ? image.caption
        : image.tags.slice(0, 4).join(", ") || (image.caption ? image.caption : "no tags")));
  }

  // The selected image's editor. Every change is saved as it is made (chips, repeats, the reg flag, after a short
  // pause); text typed without Enter becomes tags when another image is picked or the page is left. Saves run one
  // after another, each with the whole record, so the last one wins.
  function detail(image) {
    const tags = [...image.tags];
    const chips = h("div", { class: "chips" });
    const saved = h("span", { class: "muted", role: "status" });
    let timer = null;
    const changed = ({ typed = false } = {}) => {
      state.pending = flush;
      clearTimeout(timer);
      if (typed) {
        saved.textContent = "Typed tags are added when you press Enter, pick another image or leave the page.";
        return;
      }
      saved.textContent = "Saving…";
      timer = setTimeout(flush, 400);
    };
    const drawChips = () => chips.replaceChildren(...tags.map((tag, i) => h("span", { class: "chip" }, tag,
      h("button", { type: "button", "aria-label": `remove tag ${tag}`, onclick: () => { tags.splice(i, 1); drawChips(); changed(); } }, "×"))));
    drawChips();
    const takeTyped = () => {
      for (const tag of splitList(adder.value)) if (!tags.includes(tag)) tags.push(tag);
      adder.value = "";
      drawChips();
    };
    const adder = h("input", { type: "text", list: "dataset-tags",
      oninput: () => changed({ typed: true }),
      onkeydown: (e) => {
        if (e.key !== "Enter") return;
        e.preventDefault();
        takeTyped();
        changed();
      } });
    const length = h("span", { class: "muted", "aria-label": "Caption length" }, captionLength(image.caption));
    const caption = h("textarea", { rows: 4, maxlength: 5000,
      oninput: () => { length.textContent = captionLength(caption.value); changed(); } }, image.caption);
    const repeats = h("input", { type: "number", min: 1, max: 1000, value: image.repeats ?? "", oninput: () => changed() });
    const reg = h("input", { type: "checkbox", checked: image.is_reg, onchange: () => changed() });
    function flush() {
      clearTimeout(timer);
      if (state.pending === flush) state.pending = null;
      takeTyped();
      const record = { tags: [...tags], caption: caption.value, is_reg: reg.checked,
                       repeats: repeats.value ? Number(repeats.value) : null };
      state.saving = state.saving.then(async () => {
        try {
          await patch(`/datasets/${datasetId}/images/${image.id}`, record);
          Object.assign(image, record);
          if (!state.pending) saved.textContent = "Saved.";
        } catch (error) {
          saved.textContent = "";
          message.textContent = `${image.filename}: ${error.message}`;
        }
      });
      return state.saving;
    }
    const tagFields = h("div", {}, chips,
      field("Add tags", adder, "Enter adds them; commas separate tags. Changes are saved as you make them."));
    const captionField = h("div", {}, field("Caption (a sentence)", caption, state.readsSentences
      ? `${state.familyLabel} trains on this sentence when there is one (its tags otherwise).`
      : `${state.familyLabel} trains on the tags, then this sentence.`), length);
    return h("section", { class: "card editor", "aria-label": "Selected image" },
      h("div", { class: "editor-head" }, h("img", { src: image.thumb_url, alt: "", class: "editor-thumb" }),
        h("div", {}, h("h2", {}, image.filename), h("p", { class: "muted" }, `${image.width}×${image.height} ${image.format}`),
          image.screening !== "allowed" && h("p", { class: `screen-note screen-${image.screening}`, role: "note" },
            image.screening_reason)),
        h("button", { type: "button", class: "secondary close-editor", onclick: () => { state.selected.clear(); render(); } },
          "Done")),
      // a family that reads sentences shows the sentence first
      ...(state.readsSentences ? [captionField, tagFields] : [tagFields, captionField]),
      maskEditor(datasetId, image, (record) => { Object.assign(image, { mask_url: record.mask_url }); render(); },
        (text) => (message.textContent = `${image.filename}: ${text}`)),
      field("Repeats", repeats, `Empty: the dataset's default (${state.dataset.default_repeats}).`),
      h("label", {}, reg, " Regularization image"),
      h("div", { class: "row" }, saved));
  }

  // Crop sizes come from the server's family registry (GET /families), so a new family needs no change here.
  function cropPanel(families) {
    const family = h("select", { "aria-label": "Base family" }, families.map((f) => h("option", { value: f.name }, f.label)));
    const size = h("select", { "aria-label": "Crop size" });
    const sizes = () => families.find((f) => f.name === family.value).crop_sizes;
    const fill = () => size.replaceChildren(...sizes().map((s) => h("option", { value: s }, s)));
    const sizeOfFamily = () => {
      const chosen = families.find((f) => f.name === family.value);
      [state.trainingSize, state.familyLabel] = [chosen.resolution, chosen.label];
      state.readsSentences = chosen.captions === "sentences";
    };
    family.addEventListener("change", () => { fill(); sizeOfFamily(); render(); });
    state.pickFamily = (name) => { // the family the dataset's crops were made for, when it has one
      if (!families.some((f) => f.name === name)) return;
      family.value = name;
      fill();
      sizeOfFamily();
    };
    fill();
    sizeOfFamily();
    const progress = h("span", { role: "status" });
    const apply = async (mode) => {
      const [width, height] = size.value.split("x").map(Number);
      const ids = selectedIds();
      try {
        const answer = await post(`/datasets/${datasetId}/crop`, { mode, width, height, family: family.value,
                                                                   image_ids: ids.length ? ids : null });
        if (answer.kind) await followTask(answer, progress);
        else progress.textContent = `Center crop ${size.value}: ${answer.changed} image(s) boxed (nothing is cut; ` +
          "the box applies when training).";
        await reload();
      } catch (error) { message.textContent = error.message; }
    };
    return h("div", { class: "row" }, field("Crop for", family), field("Size", size),
      h("button", { type: "button", class: "secondary", onclick: () => apply("center") }, "Center crop"),
      h("button", { type: "button", class: "secondary", onclick: () => apply("focus"),
                    title: "Faces first, else the most salient region" }, "Focus crop"), progress);
  }

  async function each(action) {
    const ids = selectedIds();
    for (const id of ids) await action(id).catch((error) => (message.textContent = error.message));
    await reload();
  }

  function render() {
    const shown = visible();
    grid.show(shown);
    const smallCount = state.images.filter(small).length;
    counter.textContent = `${state.images.length} images` + (state.filter ? `, ${shown.length} tagged “${state.filter}”` : "") +
      `, ${state.selected.size} selected` + (smallCount ? ` · ${smallCount} smaller than ${state.trainingSize} px ` +
      `(the ${state.familyLabel} training size): they are upscaled and may look soft` : "");
    const one = state.selected.size === 1 ? state.images.find((i) => state.selected.has(i.id)) : null;
    if (state.pending) state.pending(); // a re-draw (a tag filter, a reload) saves the open edits first
    side.replaceChildren(...[one && detail(one), frequencyList(state.frequencies, state.filter, (tag) => {
      state.filter = tag;
      render();
    })].filter(Boolean));
    document.body.classList.toggle("editing", Boolean(one)); // on a phone the editor is a sheet over the grid
  }

  // The grid moves the keyboard (arrows, Home, End); Space or Enter selects; Delete deletes the selection.
  grid.element.addEventListener("keydown", (e) => {
    if (e.key !== "Delete" || !state.selected.size) return;
    e.preventDefault();
    deleteSelected();
  });
  const deleteSelected = () => state.selected.size && confirm(`Delete ${state.selected.size} image(s)?`) &&
    each((id) => del(`/datasets/${datasetId}/images/${id}`));

  const families = await get("/families");
  const bulkRepeats = h("input", { type: "number", min: 1, max: 1000 });
  const toolbar = h("section", { class: "card row", "aria-label": "Selection" },
    h("button", { type: "button", class: "secondary", onclick: () => { visible().forEach((i) => state.selected.add(i.id)); render(); } }, "Select all"),
    h("button", { type: "button", class: "secondary", onclick: () => { state.selected.clear(); render(); } }, "Select none"),
    h("button", { type: "button", class: "secondary", onclick: () => each((id) => patch(`/datasets/${datasetId}/images/${id}`, { is_reg: true })) }, "Mark as regularization"),
    h("button", { type: "button", class: "secondary", onclick: () => each((id) => patch(`/datasets/${datasetId}/images/${id}`, { is_reg: false })) }, "Mark as training"),
    h("button", { type: "button", class: "secondary", onclick: deleteSelected }, "Delete selected"),
    field("Repeats for the selection", bulkRepeats, "Empty: the dataset's default"), h("button", { type: "button", class: "secondary", onclick: () =>
      state.selected.size && each((id) => patch(`/datasets/${datasetId}/images/${id}`,
        { repeats: bulkRepeats.value ? Number(bulkRepeats.value) : null })) }, "Set repeats"),
    field("Sort by", h("select", { onchange: (e) => sortBy(e.target.value).catch((error) => (message.textContent = error.message)) },
      [["upload", "upload order"], ["tags", "tag count"], ["size", "size"], ["aspect", "aspect ratio"],
        ["duplicates", "near-duplicate group"]]
        .map(([value, label]) => h("option", { value }, label)))),
    cropPanel(families), h("p", { class: "hint" }, "The crop family is remembered: the train page " +
      "starts on a base model of it and warns when a job uses another."));

  state.dataset = await get(`/datasets/${datasetId}`);
  if (state.dataset.crop_family) state.pickFamily(state.dataset.crop_family);
  await reload();
  const serverTasks = h("div", { role: "status", "aria-label": "Tasks on this dataset" });
  const afterUpload = async () => {
    await reload();
    await followOpenTasks(datasetId, serverTasks, reload);
  };
  followOpenTasks(datasetId, serverTasks, reload).catch((error) => (message.textContent = error.message));
  const pick = (ids) => { state.selected = new Set(ids); render(); };
  const blocked = h("p", { class: "error", role: "alert", "aria-label": "Why the dataset stays" });
  const rename = h("form", { class: "row", "aria-label": "Dataset name", onsubmit: async (e) => {
    e.preventDefault();
    try {
      await patch(`/datasets/${datasetId}`, { name: rename.querySelector("input").value });
      window.dispatchEvent(new HashChangeEvent("hashchange"));
    } catch (error) { message.textContent = error.message; }
  } }, field("Rename", h("input", { type: "text", value: state.dataset.name, required: true, maxlength: 200 })),
  h("button", { type: "submit", class: "secondary" }, "Save name"),
  h("button", { type: "button", class: "secondary", onclick: async () => {
    if (!confirm(`Delete the dataset "${state.dataset.name}" and its ${state.images.length} images?`)) return;
    try {
      await del(`/datasets/${datasetId}`);
      location.hash = "#/datasets";
    } catch (error) {
      if (error.status !== 409) { blocked.textContent = error.message; return; }
      // what must go first, next to the button: the jobs trained on it, each a link to its page (and its Delete)
      const jobs = (await getAll("/jobs")).filter((j) => j.dataset_id === datasetId);
      blocked.replaceChildren("Trained on by ", ...jobs.flatMap((j, i) => [i ? ", " : "",
        h("a", { href: `#/jobs/${j.id}` }, j.name)]), ": delete those jobs first (a job with a published model " +
        "needs unpublishing first), then the dataset.");
    }
  } }, "Delete dataset"), blocked);
  // Leaving the page (a menu link, back) saves what is open; closing or reloading the tab with a save still to
  // make sends it on its way and asks the browser to warn.
  const unloading = (event) => {
    if (!state.pending) return;
    state.pending();
    event.preventDefault();
    event.returnValue = "";
  };
  window.addEventListener("beforeunload", unloading);
  // the tools share one place (tabs), so the grid starts near the top of the page
  mount(h("h1", {}, state.dataset.name), rename,
    h("p", { class: "row", style: "align-items:baseline" },
      h("a", { href: `#/datasets/${datasetId}/train`, class: "button" }, "Train a LoRA on this dataset →"),
      exportLinks(datasetId)),
    tabs("Dataset tools", [["Upload", uploadPanel(datasetId, afterUpload)],
      ["Auto-tag", await autotagPanel(datasetId, selectedIds, reload)],
      ["Batch tags", batchTagPanel(datasetId, selectedIds, reload)],
      ["Captions", h("div", {}, await captionPanel(datasetId, selectedIds, reload, families),
        batchCaptionPanel(datasetId, selectedIds, reload))],
      ["Masks", maskPanel(datasetId, selectedIds, reload)],
      ["Near-duplicates", duplicatesPanel(datasetId, () => state.images, pick)]]),
    serverTasks, toolbar, counter, message, h("div", { class: "layout" }, grid.element, side));
  return async () => {
    document.body.classList.remove("editing");
    window.removeEventListener("beforeunload", unloading);
    if (state.pending) state.pending();
    await state.saving;
  };
}
