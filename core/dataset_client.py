"""`lorabake datasets import`: a kohya folder or zip sent to a lorabake server's dataset import.

A folder is packed into a zip in memory (regular files only: links and special files are left out and listed),
so the server applies exactly the checks it applies to an uploaded zip."""

from __future__ import annotations

import io
import json
import mimetypes
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib import error, request


@dataclass
class PackedFolder:
    data: bytes
    left_out: list[str] = field(default_factory=list)  # "relative/path: reason"


def pack_folder(folder: Path) -> PackedFolder:
    buffer, left_out = io.BytesIO(), []
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder).as_posix()
            if path.is_symlink():
                left_out.append(f"{relative}: symbolic link")
            elif path.is_file():
                archive.write(path, relative)
            elif not path.is_dir():
                left_out.append(f"{relative}: not a regular file")
    return PackedFolder(buffer.getvalue(), left_out)


def multipart(fields: dict[str, str], file_field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    kind = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"\r\n'
                 f"Content-Type: {kind}\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class ImportFailed(RuntimeError):
    """The server refused the import; the message carries its reasons."""


def import_dataset(source: Path, server: str, token: str, name: str | None = None) -> tuple[dict, list[str]]:
    """POSTs the folder or zip; returns the server's answer and what was left out of a folder."""
    if source.is_dir():
        packed = pack_folder(source)
        data, left_out, filename = packed.data, packed.left_out, f"{source.name}.zip"
    else:
        data, left_out, filename = source.read_bytes(), [], source.name
    body, content_type = multipart({"name": name or source.stem}, "file", filename, data)
    call = request.Request(f"{server.rstrip('/')}/api/v1/datasets/import", data=body, method="POST",
                           headers={"Content-Type": content_type, "Authorization": f"Bearer {token}"})
    try:
        with request.urlopen(call, timeout=600) as response:
            return json.loads(response.read()), left_out
    except error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("detail", exc.reason)
        if isinstance(detail, dict):
            reasons = [f"{e['field']}: {e['message']}" for e in detail.get("errors", [])]
            detail = "\n  ".join([detail.get("message", ""), *reasons])
        raise ImportFailed(f"HTTP {exc.code}: {detail}") from None
    except error.URLError as exc:
        raise ImportFailed(f"cannot reach {server}: {exc.reason}") from None
