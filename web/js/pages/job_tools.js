// What one does with a job's epochs besides testing them: the epoch × weight sweep (choose epochs and weights,
// render the grid as one task with progress, look at any cell full size, download the labelled PNG; the newest
// sweep shows when the page opens) and continuing the training for more epochs.
import { get, post } from "../api.js";
import { field, h, splitList, zoomable } from "../dom.js";

const POLL_MS = 700;

export function sweepPanel(job) {
  const epochChoices = h("div", { class: "chips", role: "group", "aria-label": "Epochs to compare" });
  const weights = h("input", { type: "text", name: "weights", value: "0.2, 0.4, 0.6, 0.8, 1.0" });
  const prompt = h("input", { type: "text", name: "prompt", value: (job.sample_prompts[0] || job.name).replace(/<lora:[^>]*>/g, "").trim() });
  const seed = h("input", { type: "number", name: "seed", min: 0, value: 0 });
  const bar = h("progress", { max: 1, value: 0, "aria-label": "Sweep progress", hidden: true });
  const status = h("p", { class: "muted", role: "status" });
  const result = h("div", { class: "sweep" });
  const button = h("button", { type: "submit" }, "Render grid");
  let timer = null;

  function show(sweep) {
    const head = h("tr", {}, h("th", {}, "Epoch"), h("th", {}, "no LoRA"), sweep.weights.map((w) => h("th", {}, `weight ${w}`)));
    const rows = sweep.cells.map((row, r) => h("tr", {}, h("th", {}, sweep.epochs[r]), row.map((url, c) =>
      h("td", {}, zoomable(h("img", { src: url, alt: `epoch ${sweep.epochs[r]}, ${c ? `weight ${sweep.weights[c - 1]}` : "no LoRA"}` }))))));
    result.replaceChildren(h("table", { class: "compare", "aria-label": "Epoch × weight grid" }, h("thead", {}, head), h("tbody", {}, rows)),
      sweep.grid_url && h("a", { href: sweep.grid_url, download: "sweep.png" }, "Download the grid (PNG with labels)"));
  }

  async function follow(sweep) {
    clearTimeout(timer);
    bar.hidden = sweep.status === "succeeded" || sweep.status === "failed";
    bar.value = sweep.total ? sweep.done / sweep.total : 0;
    button.disabled = !bar.hidden;
    if (sweep.status === "failed") {
      status.textContent = sweep.error;
      status.className = "error";
    } else if (sweep.status === "succeeded") {
      status.textContent = `"${sweep.prompt}", seed ${sweep.seed}: ${sweep.total} images`;
      status.className = "muted";
      show(sweep);
    } else {
      status.textContent = sweep.status === "queued" ? `Queued: ${sweep.waiting_for || "waiting for the image worker"}`
        : `Rendering image ${sweep.done + 1} of ${sweep.total}…`;
      timer = setTimeout(async () => follow(await get(`/sweeps/${sweep.id}`)), POLL_MS);
    }
  }

  const form = h("form", { class: "card", "aria-label": "Compare epochs and weights", onsubmit: async (e) => {
    e.preventDefault();
    const epochs = [...epochChoices.querySelectorAll("input:checked")].map((i) => Number(i.value));
    try {
      await follow(await post(`/jobs/${job.id}/sweeps`, { epochs, weights: splitList(weights.value).map(Number),
                                                         prompt: prompt.value, seed: Number(seed.value) }));
    } catch (error) {
      status.textContent = error.message;
      status.className = "error";
    }
  } }, h("h2", {}, "Compare epochs × LoRA weights"),
  h("p", { class: "muted" }, "Same prompt and seed in every cell, plus the base model without the LoRA."),
  epochChoices, h("div", { class: "row" }, field("Weights (comma-separated)", weights), field("Prompt", prompt),
    field("Seed", seed), button), bar, status, result);

  const unchecked = new Set(); // epochs the user left out; new epochs come in checked
  epochChoices.addEventListener("change", (e) => {
    const n = Number(e.target.value);
    e.target.checked ? unchecked.delete(n) : unchecked.add(n);
  });
  form.setEpochs = (epochs) => {
    epochChoices.replaceChildren(...epochs.map((e) => h("label", { class: "chip" },
      h("input", { type: "checkbox", value: e.n, checked: !unchecked.has(e.n) }), ` epoch ${e.n}`)));
    if (!bar.hidden) return;
    button.disabled = !epochs.length;
    if (!epochs.length) status.textContent = "Nothing to compare yet: epochs appear here as they are stored.";
    else if (status.textContent.startsWith("Nothing to compare")) status.textContent = "";
  };
  form.load = async () => {
    const [latest] = await get(`/jobs/${job.id}/sweeps`);
    if (latest) await follow(latest);
  };
  form.stop = () => clearTimeout(timer);
  return form;
}

const FLAT = ["constant", "constant_with_warmup", "adafactor"];

// "Continue for N more epochs" on a succeeded or canceled job, with what each schedule choice does to this job's
// learning rate.
export function continuePanel(job, onContinued) {
  const epochs = h("input", { type: "number", name: "epochs", min: 1, max: 1000, value: 2 });
  const scheduler = job.params.lr_scheduler || "constant";
  const flat = FLAT.includes(scheduler);
  const choices = [
    ["extend", "Extend the schedule", flat ? `The ${scheduler} rate stays as it is.`
      : `The ${scheduler} schedule is recomputed over all epochs: the rate steps back up to where a run of the new ` +
        "length would be now, then falls to its end."],
    ["restart", "Restart the schedule", flat ? `The ${scheduler} rate stays as it is (both choices train the same).`
      : `The ${scheduler} schedule runs again over the added epochs only: the rate returns to its peak, then falls ` +
        "(like a cosine restart). Good for going on from an epoch that was nearly right."]];
  const radios = choices.map(([value, label, why], i) => h("label", {},
    h("input", { type: "radio", name: "schedule", value, checked: i === 0 }), ` ${label}: `, h("span", { class: "muted" }, why)));
  const status = h("p", { role: "status", class: "muted" });
  return h("form", { class: "card", "aria-label": "Continue training", onsubmit: async (e) => {
    e.preventDefault();
    const schedule = radios.map((r) => r.querySelector("input")).find((i) => i.checked).value;
    try {
      await post(`/jobs/${job.id}/continue`, { epochs: Number(epochs.value), schedule });
      onContinued();
    } catch (error) {
      status.textContent = error.message;
      status.className = "error";
    }
  } }, h("h2", {}, "Continue training"),
  h("p", { class: "muted" }, "From the last stored epoch, with its optimizer state: the new epochs keep numbering."),
  field("More epochs", epochs), h("fieldset", {}, h("legend", {}, "Learning-rate schedule"), radios),
  h("button", { type: "submit" }, "Continue"), status);
}
