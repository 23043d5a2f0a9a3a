"""Storage keys, as DESIGN.md lays them out; original file names live only in the database."""


def image(user_id: str, dataset_id: str, image_id: str, ext: str) -> str:
    return f"u/{user_id}/ds/{dataset_id}/img/{image_id}.{ext}"


def thumb(user_id: str, dataset_id: str, image_id: str) -> str:
    return f"u/{user_id}/ds/{dataset_id}/thumb/{image_id}.webp"


def mask(user_id: str, dataset_id: str, image_id: str) -> str:
    """An image's mask for masked loss (core/masks.py)."""
    return f"u/{user_id}/ds/{dataset_id}/mask/{image_id}.png"


def dataset_prefix(user_id: str, dataset_id: str) -> str:
    return f"u/{user_id}/ds/{dataset_id}/"


def jobs_prefix(user_id: str) -> str:
    return f"u/{user_id}/jobs/"


def job_prefix(user_id: str, job_id: str) -> str:
    return f"{jobs_prefix(user_id)}{job_id}/"


def epoch_file(user_id: str, job_id: str, n: int, ext: str = "safetensors", attempt: int = 1) -> str:
    """Each attempt writes its own key: a superseded attempt can never overwrite the file an epoch row points at."""
    return f"{job_prefix(user_id, job_id)}epoch-{n:06d}-a{attempt}.{ext}"


def preview(user_id: str, job_id: str, n: int, prompt: int, k: int) -> str:
    return f"{job_prefix(user_id, job_id)}previews/e{n:06d}-p{prompt:02d}-{k}.png"


def state(user_id: str, job_id: str, name: str) -> str:
    return f"{job_prefix(user_id, job_id)}state/{name}/"


def generation(user_id: str, generation_id: str, k: int) -> str:
    return f"u/{user_id}/gen/{generation_id}-{k}.png"


def sweep_prefix(user_id: str, sweep_id: str) -> str:
    return f"u/{user_id}/sweep/{sweep_id}/"


def sweep_cell(user_id: str, sweep_id: str, column: str) -> str:
    return f"{sweep_prefix(user_id, sweep_id)}{column}.png"


def sweep_grid(user_id: str, sweep_id: str) -> str:
    return f"{sweep_prefix(user_id, sweep_id)}grid.png"


def conversion(user_id: str, conversion_id: str) -> str:
    return f"u/{user_id}/plain/{conversion_id}.safetensors"


def showcase(user_id: str, model_id: str, item_id: str, ext: str) -> str:
    return f"u/{user_id}/models/{model_id}/{item_id}.{ext}"
