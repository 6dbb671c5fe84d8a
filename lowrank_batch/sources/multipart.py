"""multipart/related bodies (RFC 2387), as DICOMweb's WADO-RS uses them: pure, no I/O."""

from __future__ import annotations

import re
import uuid

_BOUNDARY = re.compile(r'boundary="?([^";,]+)"?', re.I)


def boundary_of(content_type: str) -> str | None:
    m = _BOUNDARY.search(content_type or "")
    return m.group(1) if m else None


def split_parts(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """(headers, payload) of each part; ValueError when the body is not multipart as declared."""
    boundary = boundary_of(content_type)
    if not boundary:
        raise ValueError("multipart response without a boundary")
    delimiter = b"--" + boundary.encode()
    chunks = body.split(delimiter)
    if len(chunks) < 3:
        raise ValueError("multipart response without parts")
    parts = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):  # the closing delimiter
            break
        chunk = chunk.removeprefix(b"\r\n")
        head, sep, payload = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("multipart part without a header block")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            if ":" in line:
                key, value = line.split(":", 1)
                headers[key.strip().lower()] = value.strip()
        parts.append((headers, payload.removesuffix(b"\r\n")))
    return parts


def join_parts(parts: list[tuple[dict[str, str], bytes]], media_type: str) -> tuple[bytes, str]:
    """(body, Content-Type header) of a multipart/related message with `type` = media_type."""
    boundary = uuid.uuid4().hex
    out = []
    for headers, payload in parts:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        out.append(f"--{boundary}\r\n{head}\r\n".encode("latin-1") + payload + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f'multipart/related; type="{media_type}"; boundary={boundary}'
