"""Accept-header negotiation for DICOMweb (PS3.18 8.7): pure."""

from __future__ import annotations

from dataclasses import dataclass

EXPLICIT_LE = "1.2.840.10008.1.2.1"  # what this service sends: uncompressed Explicit VR Little Endian


@dataclass(frozen=True)
class MediaRange:
    type: str  # "multipart/related", "image/png", "*/*"
    params: dict
    q: float


def parse_accept(header: str | None) -> list[MediaRange]:
    """Media ranges, best first (by q, then as listed); an empty or missing header is */*."""
    out = []
    for position, item in enumerate((header or "").split(",")):
        item = item.strip()
        if not item:
            continue
        pieces = _split_params(item)
        params = {}
        for p in pieces[1:]:
            key, _, value = p.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        try:
            q = float(params.pop("q", 1))
        except ValueError:
            q = 0.0
        out.append((-q, position, MediaRange(pieces[0].strip().lower(), params, q)))
    ranges = [r for _, _, r in sorted(out, key=lambda t: t[:2]) if r.q > 0]
    return ranges or ([MediaRange("*/*", {}, 1.0)] if not out else [])


def _split_params(item: str) -> list[str]:
    """Split on ';' outside quotes (type="application/dicom" holds a slash, not a ';', but be safe)."""
    parts, current, quoted = [], [], False
    for ch in item:
        if ch == '"':
            quoted = not quoted
        if ch == ";" and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _syntax_ok(r: MediaRange) -> bool:
    return r.params.get("transfer-syntax", "*") in ("*", EXPLICIT_LE)


def choose_multipart(header: str | None, part_type: str) -> bool:
    """Whether a multipart/related response of `part_type` parts, in Explicit VR Little Endian,
    is acceptable (`*/*` and `multipart/related` without a type are)."""
    for r in parse_accept(header):
        if r.type == "*/*":
            return True
        if r.type == "multipart/related" and r.params.get("type", part_type).lower() == part_type and _syntax_ok(r):
            return True
        if r.type == part_type and _syntax_ok(r) and part_type == "application/octet-stream":
            return True  # single-frame bare octet-stream callers get multipart anyway
    return False


def choose_json(header: str | None) -> bool:
    return any(r.type in ("*/*", "application/*", "application/dicom+json", "application/json")
               for r in parse_accept(header))


def choose_image(header: str | None, offered: tuple[str, ...] = ("image/jpeg", "image/png")) -> str | None:
    """The rendered media type: the caller's first acceptable one; JPEG for */* and image/*
    (the standard's default for rendered images)."""
    for r in parse_accept(header):
        if r.type in ("*/*", "image/*"):
            return offered[0]
        if r.type in offered:
            return r.type
    return None
