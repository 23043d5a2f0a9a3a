// Masks for masked loss on the workbench: shown over the thumbnails (what is left out is darkened), sent or removed
// per image in the editor, and made from each image's subject or faces by a task on the server's cpu queue.
import { api, post } from "../api.js";
import { field, h } from "../dom.js";
import { taskForm } from "./tools.js";

// The mask drawn over a thumbnail: multiplying by it darkens what training leaves out and keeps the rest.
export function maskOverlay(image, className = "mask") {
  return image.mask_url ? h("img", { src: image.mask_url, alt: "", class: className, loading: "lazy",
                                     title: "mask: the dark part is left out of masked-loss training" }) : null;
}

// The editor's part: the image with its mask, and the buttons that change it. `changed(image)` gets the new record.
export function maskEditor(datasetId, image, changed, fail) {
  const path = `/datasets/${datasetId}/images/${image.id}/mask`;
  const file = h("input", { type: "file", accept: "image/png,image/jpeg", class: "visually-hidden",
    "aria-label": "Mask file", onchange: async () => {
      if (!file.files.length) return;
      const body = new FormData();
      body.append("file", file.files[0]);
      file.value = ""; // the same file chosen again is sent again
      try { changed(await api("PUT", path, body, { form: true })); } catch (error) { fail(error.message); }
    } });
  const remove = async () => {
    try { changed(await api("DELETE", path)); } catch (error) { fail(error.message); }
  };
  return h("div", { class: "mask-editor" },
    h("div", { class: "masked" }, h("img", { src: image.thumb_url, alt: "" }), maskOverlay(image)),
    h("div", {},
      h("p", { class: "hint" }, image.mask_url
        ? "Masked loss trains the light part only (pro mode: masked_loss)."
        : "No mask: the whole image is trained. A mask is a black-and-white picture of the image's shape, " +
          "white where it is trained; a transparent PNG brings its own."),
      h("div", { class: "row" }, file,
        h("button", { type: "button", class: "secondary", onclick: () => file.click() },
          image.mask_url ? "Replace mask…" : "Upload mask…"),
        image.mask_url && h("button", { type: "button", class: "secondary", onclick: remove }, "Remove mask"))));
}

// The tools tab: masks for the selected images (or all) from their subject or their faces.
export function maskPanel(datasetId, selectedIds, onDone) {
  const source = h("select", { name: "source" }, [["subject", "the subject (as the focus crop finds it)"],
    ["faces", "the faces"]].map(([value, label]) => h("option", { value }, label)));
  const mode = h("select", { name: "mode" }, [["skip_masked", "only images without a mask"],
    ["overwrite", "replace masks"]].map(([value, label]) => h("option", { value }, label)));
  const status = h("p", { role: "status" });
  const run = h("button", { type: "submit" }, "Make masks");
  return h("section", { class: "card", "aria-label": "Masks" }, h("h2", {}, "Masks"),
    h("p", { class: "hint" }, "With masked loss (pro mode) a job learns from the white part of each mask only: the " +
      "subject, not its background. Images without a mask are trained whole."),
    taskForm({ run, status, selectedIds, onDone, start: (imageIds) => post(`/datasets/${datasetId}/masks`,
      { source: source.value, mode: mode.value, image_ids: imageIds }) },
    h("div", { class: "row" }, field("Keep", source), field("Mode", mode), run), status));
}
