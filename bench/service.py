"""Service benchmarks on this machine, against the API under uvicorn (embedded settings, a separate process).

1. Ingest: 1000 generated ~1-megapixel JPEGs uploaded through the API in requests of 25 files (target ≤ 60 s).
   Reference in the same run: the same validation (decode, EXIF, re-encode, thumbnail) called in-process.
2. Read endpoints: p50/p99 latency with 100 concurrent clients (target p99 ≤ 100 ms), against a bare FastAPI app
   served and loaded the same way as the reference. The user has the 1000-image dataset and 12 jobs (seeded).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.load import get_latencies

ROOT = Path(__file__).resolve().parents[1]


def make_jpegs(count: int, size: tuple[int, int] = (1152, 864)) -> list[bytes]:
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, size[0], dtype=np.float32)[None, :, None].repeat(size[1], 0).repeat(3, 2)
    out = []
    for i in range(count):
        noise = rng.normal(0, 12, (size[1] // 8, size[0] // 8, 3)).repeat(8, 0).repeat(8, 1)
        pixels = np.clip(base * ((i % 7) + 1) / 7 + noise, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def start_server(app: list[str], ready_path: str, settings: dict[str, str], port: int,
                 workers: int) -> subprocess.Popen:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LORABAKE_")},
           **{f"LORABAKE_{name.upper()}": value for name, value in settings.items()}}
    process = subprocess.Popen([sys.executable, "-m", "uvicorn", *app, "--port", str(port), "--workers",
                                str(workers), "--log-level", "warning"], cwd=ROOT, env=env)
    for _ in range(200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}{ready_path}").status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("API did not start")


def seed_jobs(db_url: str, owner_id: str, dataset_id: str, count: int = 12) -> list[str]:
    """Jobs as a user accumulates them (most finished with their loss history, one running, a few queued), written
    straight to the database: training them is not what this benchmark measures."""
    from core.db import session_factory
    from core.models import Job, JobStatus, utcnow
    from trainer.job.presets import preset_values

    statuses = [JobStatus.succeeded] * (count - 5) + [JobStatus.running] + [JobStatus.queued] * 3 + [JobStatus.canceled]
    history = [[step, 0.12 - step * 1e-5, 1e-4] for step in range(0, 2000, 10)]
    with session_factory(db_url)() as session:
        jobs = [Job(owner_id=owner_id, dataset_id=dataset_id, name=f"bench-{i}", base_model="tiny-sd15",
                    preset="anime_character", params=preset_values("anime_character", "sd15"),
                    sample_prompts=["a photo of bench"], status=status, step=2000 if status == "succeeded" else 500,
                    total_steps=2000, epochs_total=10, loss=0.1, estimated_s=1800.0, queued_at=utcnow(),
                    history=history, log_tail=[f"epoch {n} done" for n in range(10)])
                for i, status in enumerate(statuses)]
        session.add_all(jobs)
        session.commit()
        return [job.id for job in jobs]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1000, q))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--per-client", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--postgres", metavar="ADMIN_URL",
                        help="serve from a fresh database on this PostgreSQL server instead of the embedded SQLite")
    args = parser.parse_args()
    from api.uploads import clean_image
    from core.db import fresh_database
    from core.settings import Settings

    jpegs = make_jpegs(args.images)
    megabytes = sum(map(len, jpegs)) / 1e6
    start = time.perf_counter()
    for blob in jpegs:
        clean_image(blob, 40 * 2**20, 40_000_000)
    reference = time.perf_counter() - start

    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        port = 18000 + os.getpid() % 1000
        settings = {"var_dir": tmp}
        if args.postgres:
            settings["database_url"] = fresh_database(args.postgres)
        db_url = Settings(**settings).db_url
        print(f"database: {db_url.split('://')[0]}, API processes: {args.workers}")
        bare = start_server(["bench.reference_app:app"], "/ping", settings, port + 1, args.workers)
        try:
            times = asyncio.run(get_latencies(f"http://127.0.0.1:{port + 1}", "/ping", {}, args.clients,
                                              args.per_client))
            floor = percentile(times, 99)
            print(f"GET /ping, bare FastAPI app (reference): p50 {percentile(times, 50):6.1f} ms  p99 {floor:6.1f} ms")
        finally:
            bare.terminate()
            bare.wait(timeout=30)
        api = start_server(["api.main:create_app", "--factory"], "/api/v1/healthz", settings, port, args.workers)
        url = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=url, timeout=300) as client:
                client.post("/api/v1/auth/register", json={"email": "b@e.co", "password": "benchmark pw"})
                token = client.post("/api/v1/auth/login", data={"username": "b@e.co", "password": "benchmark pw"})
                headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
                dataset = client.post("/api/v1/datasets", json={"name": "bench"}, headers=headers).json()["id"]
                start = time.perf_counter()
                accepted = 0
                for first in range(0, len(jpegs), 25):
                    files = [("files", (f"{i}.jpg", jpegs[i], "image/jpeg")) for i in range(first,
                                                                                       min(first + 25, len(jpegs)))]
                    results = client.post(f"/api/v1/datasets/{dataset}/images", files=files, headers=headers).json()
                    accepted += sum(1 for r in results if r["id"])
                ingest = time.perf_counter() - start
                owner = client.get("/api/v1/me", headers=headers).json()["id"]
            job_id = seed_jobs(db_url, owner, dataset)[0]
            print(f"ingest: {accepted}/{len(jpegs)} JPEGs ({megabytes:.0f} MB) in {ingest:.1f} s "
                  f"({accepted / ingest:.1f} images/s); in-process validation alone {reference:.1f} s "
                  f"→ ratio {ingest / reference:.2f}")
            for path in ("/api/v1/healthz", "/api/v1/me", f"/api/v1/datasets/{dataset}", "/api/v1/datasets",
                         "/api/v1/jobs", f"/api/v1/jobs/{job_id}"):
                times = asyncio.run(get_latencies(url, path, headers, args.clients, args.per_client))
                shown = path.replace(dataset, "{id}").replace(job_id, "{id}")
                print(f"GET {shown:<28} {args.clients} clients × {args.per_client}: "
                      f"p50 {percentile(times, 50):6.1f} ms  p99 {percentile(times, 99):6.1f} ms  "
                      f"mean {statistics.mean(times) * 1000:6.1f} ms  p99 ratio to reference "
                      f"{percentile(times, 99) / floor:4.1f}")
        finally:
            api.terminate()
            api.wait(timeout=30)


if __name__ == "__main__":
    main()
