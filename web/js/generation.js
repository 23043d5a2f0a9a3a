// Follows a queued generation ("test an epoch", "test" on a model page) until it ends, saying in `status` what it
// waits for; resolves to the finished generation, or throws with the reason it failed.
import { get } from "./api.js";

export async function rendered(gen, status) {
  while (!["succeeded", "failed"].includes(gen.status)) {
    status.textContent = gen.status === "queued" && gen.waiting_for ? `Queued: ${gen.waiting_for}` : "Rendering…";
    await new Promise((r) => setTimeout(r, 700));
    gen = await get(`/generations/${gen.id}`);
  }
  if (gen.status === "failed") throw new Error(gen.error);
  return gen;
}
