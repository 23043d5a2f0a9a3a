"""The floor for read latency: a bare FastAPI app with one async route, served the same way as the API."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/ping")
async def ping() -> dict[str, str]:
    return {"status": "ok"}
