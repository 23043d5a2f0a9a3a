// The user's own settings: notifications (in this browser, and a webhook for their tools) and their limits.
import { get, post, put } from "../api.js";
import { field, h, mount, showErrors } from "../dom.js";
import { notifyToggle } from "../notify.js";

export function limitsLine(limits) {
  return `Your jobs: ${limits.running} of ${limits.max_running} training at once, ` +
    `${limits.waiting} of ${limits.max_waiting} waiting to start.`;
}

function webhookForm(hook) {
  const url = h("input", { type: "url", name: "url", size: 50, value: hook.url || "", placeholder: "https://…" });
  const secret = h("code", { class: "snippet" }, hook.secret || "made when you save a URL");
  const box = h("p", { class: "error", role: "alert" });
  const said = h("p", { role: "status" });
  const save = async (newSecret) => {
    try {
      const saved = await put("/me/webhook", { url: url.value || null, new_secret: newSecret });
      showErrors(form, box, null);
      secret.textContent = saved.secret || "made when you save a URL";
      said.textContent = saved.url ? "Saved: finished and failed jobs are posted there." : "Removed: nothing is posted.";
    } catch (error) { showErrors(form, box, error); }
  };
  const form = h("form", { class: "card", "aria-label": "Webhook", onsubmit: (e) => { e.preventDefault(); save(false); } },
    h("h2", {}, "Webhook"),
    h("p", { class: "hint" }, "When a job succeeds or fails, lorabake posts JSON to this address ",
      "(events job.succeeded and job.failed), tried again with growing pauses until it answers 2xx. ",
      "X-Lorabake-Signature is sha256= and the HMAC-SHA256, with the secret below, of the X-Lorabake-Timestamp ",
      "header, a dot and the body."),
    field("Webhook URL", url, "Empty: no webhook."),
    h("p", {}, "Signing secret: ", secret),
    h("div", { class: "row" }, h("button", { type: "submit" }, "Save webhook"),
      h("button", { type: "button", class: "secondary", onclick: () => save(true) }, "New secret"),
      h("button", { type: "button", class: "secondary", onclick: async () => {
        said.textContent = "Sending a test…";
        try {
          const answer = await post("/me/webhook/test");
          said.textContent = `${answer.delivered ? "Delivered" : "Not delivered"}: ${answer.message}`;
        } catch (error) { said.textContent = error.message; }
      } }, "Send a test")),
    box, said);
  return form;
}

export async function settingsPage() {
  const [hook, limits] = await Promise.all([get("/me/webhook"), get("/me/limits")]);
  mount(h("h1", {}, "Settings"),
    h("section", { class: "card", "aria-label": "Notifications" }, h("h2", {}, "Notifications"), notifyToggle()),
    webhookForm(hook),
    h("section", { class: "card", "aria-label": "Limits" }, h("h2", {}, "Limits"), h("p", {}, limitsLine(limits)),
      h("p", { class: "hint" }, "More jobs than may train at once wait in the queue; past the waiting limit new jobs are refused until one starts.")));
}
