// Upload panel: drag-and-drop or picker, requests of 25 files, an overall bar and a status line per file.
import { upload } from "../api.js";
import { h } from "../dom.js";

const PER_REQUEST = 25;

export function uploadPanel(datasetId, onDone) {
  const bar = h("progress", { max: 1, value: 0, hidden: true, "aria-label": "Upload progress" });
  const summary = h("p", { class: "muted", role: "status" });
  const list = h("ol", { class: "files", "aria-label": "Uploaded files" });
  const picker = h("input", { type: "file", multiple: true, accept: "image/png,image/jpeg", id: "picker",
                              class: "visually-hidden", onchange: () => send([...picker.files]) });

  async function send(files) {
    if (!files.length) return;
    const total = files.reduce((sum, f) => sum + f.size, 0);
    let done = 0, accepted = 0;
    const rejected = [];
    const rows = new Map(files.map((f) => [f, h("li", {}, `${f.name}: waiting`)]));
    list.replaceChildren(...rows.values());
    summary.textContent = `Uploading ${files.length} file(s)…`;
    bar.hidden = false;
    bar.max = total;
    for (let first = 0; first < files.length; first += PER_REQUEST) {
      const batch = files.slice(first, first + PER_REQUEST);
      const size = batch.reduce((sum, f) => sum + f.size, 0);
      batch.forEach((f) => (rows.get(f).textContent = `${f.name}: uploading`));
      let results;
      try {
        results = await upload(`/datasets/${datasetId}/images`, batch, (loaded, all) => {
          bar.value = done + (loaded / all) * size;
        });
      } catch (error) {
        results = batch.map((f) => ({ filename: f.name, error: error.message }));
      }
      done += size;
      bar.value = done;
      results.forEach((result, i) => {
        const row = rows.get(batch[i]);
        if (result.id) { accepted += 1; row.textContent = `${result.filename}: added`; row.className = "ok"; }
        else { rejected.push(result); row.textContent = `${result.filename}: ${result.error}`; row.className = "error"; }
      });
      summary.textContent = `${accepted} added, ${rejected.length} rejected, ${files.length - first - batch.length} to go`;
    }
    summary.textContent = `${accepted} of ${files.length} added` +
      (rejected.length ? `; rejected: ${rejected.map((r) => `${r.filename} (${r.error})`).join(", ")}` : "");
    // what needs a look stays listed; the files that went in are counted in the summary
    list.replaceChildren(...[...rows.values()].filter((row) => row.className === "error"));
    picker.value = "";
    onDone();
  }

  const zone = h("div", { class: "dropzone",
    ondragover: (e) => { e.preventDefault(); zone.classList.add("over"); },
    ondragleave: () => zone.classList.remove("over"),
    ondrop: (e) => { e.preventDefault(); zone.classList.remove("over"); send([...e.dataTransfer.files]); } },
  h("p", {}, "Drop PNG or JPEG images here (up to 1000 per dataset), or ",
    h("label", { for: "picker", style: "display:inline;color:var(--accent);cursor:pointer" }, "choose files"), "."),
  picker);
  return h("section", { class: "card", "aria-label": "Upload" }, h("h2", {}, "Upload"), zone, bar, summary, list);
}
