// Browser notifications when one of the user's jobs ends, opt-in per browser: while a lorabake tab is open, the job
// list is read every few seconds and a job that moved to succeeded or failed is announced once.
import { getAll } from "./api.js";
import { h } from "./dom.js";

const KEY = "lorabake.notify";
const EVERY_MS = 5000;
const ENDS = { succeeded: "is trained", failed: "failed" };
let watching = false;

const wanted = () => localStorage.getItem(KEY) === "1" && "Notification" in window && Notification.permission === "granted";

let known = null; // id → status; the first list only learns where things stand
let fedAt = 0;

// Compares a fresh job list with the last one and announces the jobs that ended in between. The jobs page hands in
// the list it reads anyway, so the watcher does not read it a second time meanwhile.
export function seen(jobs) {
  fedAt = Date.now();
  if (!wanted()) {
    known = null;
    return;
  }
  for (const job of jobs) {
    if (known && known.get(job.id) !== job.status && job.status in ENDS) {
      const note = new Notification(`${job.name} ${ENDS[job.status]}`, { tag: `lorabake-${job.id}`,
        body: job.status === "failed" ? job.error || "" : "Its epochs are ready to test and publish." });
      note.onclick = () => { window.focus(); location.hash = `#/jobs/${job.id}`; };
    }
  }
  known = new Map(jobs.map((job) => [job.id, job.status]));
}

export function watchJobs() {
  if (watching) return;
  watching = true;
  const look = async () => {
    if (!wanted()) known = null;
    else if (Date.now() - fedAt >= EVERY_MS) {
      const jobs = await getAll("/jobs").catch(() => null);
      if (jobs) seen(jobs);
    }
    setTimeout(look, EVERY_MS);
  };
  look();
}

// The opt-in switch: asks the browser's permission the first time and says plainly when it was refused.
export function notifyToggle() {
  const say = h("span", { class: "muted", role: "status" });
  const box = h("input", { type: "checkbox", checked: wanted(), onchange: async () => {
    if (!box.checked) {
      localStorage.removeItem(KEY);
      say.textContent = "";
      return;
    }
    if (!("Notification" in window)) {
      box.checked = false;
      say.textContent = "This browser cannot show notifications.";
      return;
    }
    const permission = await Notification.requestPermission();
    box.checked = permission === "granted";
    if (box.checked) localStorage.setItem(KEY, "1");
    say.textContent = box.checked ? "On: you are told here while a lorabake tab is open."
      : "The browser blocked notifications for this site: allow them in its site settings, then try again.";
  } });
  return h("div", { class: "row" }, h("label", {}, box, " Notify me in this browser when a job ends"), say);
}
