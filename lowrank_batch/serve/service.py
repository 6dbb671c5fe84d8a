"""One DICOMweb request against an archive: routing, access token, negotiation, QIDO-RS and
WADO-RS. No Ray here (app.py wraps it), so tests can drive it directly too.

Status codes (PS3.18 8.5/10.4/10.6): 400 malformed query or frame list, 401 missing/wrong
token, 404 unknown path, UID or frame number, 405 any method but GET/HEAD (read-only), 406 no
acceptable media type, 500 an image that cannot be decoded. No log line holds a query's values
or an element's: a failure is logged by its type and the image's id (UIDs) only.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..archive.dicom_export import export_dicom
from ..pipeline.decoding import ArchiveDecoder
from ..sources.multipart import join_parts
from . import query as qido
from .index import Instance, build_index
from .negotiate import EXPLICIT_LE, choose_image, choose_json, choose_multipart
from .preview import linear_preview
from .render import encode_image, parse_window, to_display

log = logging.getLogger("lowrank_batch.serve")
# rendered with ?quality=Q, Q <= this: a preview from the latents alone (linear on CPU replicas, refined
# on GPU ones; preview.py), not a decode of the whole image
PREVIEW_QUALITY = 60
_UID = r"([0-9A-Za-z.%_-]+)"
ROUTES = [(re.compile(p.replace("{uid}", _UID)), name) for p, name in [
    (r"^/studies$", "search_studies"),
    (r"^/series$", "search_series"),
    (r"^/instances$", "search_instances"),
    (r"^/studies/{uid}/series$", "search_series"),
    (r"^/studies/{uid}/instances$", "search_instances"),
    (r"^/studies/{uid}/series/{uid}/instances$", "search_instances"),
    (r"^/studies/{uid}$", "retrieve"),
    (r"^/studies/{uid}/series/{uid}$", "retrieve"),
    (r"^/studies/{uid}/series/{uid}/instances/{uid}$", "retrieve"),
    (r"^/studies/{uid}/metadata$", "metadata"),
    (r"^/studies/{uid}/series/{uid}/metadata$", "metadata"),
    (r"^/studies/{uid}/series/{uid}/instances/{uid}/metadata$", "metadata"),
    (r"^/studies/{uid}/series/{uid}/instances/{uid}/frames/([^/]+)$", "frames"),
    (r"^/studies/{uid}/series/{uid}/instances/{uid}/rendered$", "rendered"),
    (r"^/studies/{uid}/series/{uid}/instances/{uid}/frames/([^/]+)/rendered$", "rendered"),
]]


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict = field(default_factory=dict)


def _error(status: int, message: str) -> Response:
    # a short reason: the UIDs of the path at most, never a query's values
    return Response(status, json.dumps({"error": message}).encode(), "application/json")


class _NotFound(Exception):
    pass


class ServingArchive(ArchiveDecoder):
    """An archive whose codecs run on the replica's device (a GPU where the replica holds one):
    the decoder's `device`, set once opened."""


class DicomwebService:
    def __init__(self, archive_uri: str, token: str | None = None, device: str = "cpu",
                 refresh_seconds: float = 60.0, warm: bool = True):
        self.archive_uri, self.token, self.device = archive_uri, token, device
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._load()
        if warm and self.index.instances:  # compile and load the decoders now, not on a viewer's first click
            first = next(iter(self.index.instances.values()))
            self.archive.get(first.frame_ids[0])
            linear_preview(self.archive, first.frame_ids[0])

    # -- the archive, reloaded when new commits have landed (a nightly run while serving) --
    def _load(self) -> None:
        archive = ServingArchive.open(self.archive_uri)
        archive.device = self.device
        index = build_index(archive.rows(["image_id", "metadata_json"]))
        self.archive, self.index, self._checked = archive, index, time.monotonic()

    def _maybe_reload(self) -> None:
        # what open would read on top of its checkpoint: one listing after the marker, not every record
        if time.monotonic() - self._checked < self.refresh_seconds:
            return
        with self._lock:
            self._checked = time.monotonic()
            if self.archive.changed_since_open():
                self._load()

    # -- one request --
    def handle(self, method: str, path: str, params: list[tuple[str, str]], headers: dict[str, str]) -> Response:
        """headers: lower-case names. path: below the service root (/studies/...)."""
        if self.token is not None and not self._authorized(headers.get("authorization", "")):
            r = _error(401, "a valid access token is required (Authorization: Bearer TOKEN)")
            r.headers["WWW-Authenticate"] = 'Bearer realm="dicom-web"'
            return r
        if method not in ("GET", "HEAD"):
            r = _error(405, "this DICOMweb service is read-only")
            r.headers["Allow"] = "GET, HEAD"
            return r
        for pattern, name in ROUTES:
            m = pattern.match(path)
            if m:
                break
        else:
            return _error(404, "no such DICOMweb resource")
        self._maybe_reload()
        accept = headers.get("accept")
        try:
            response = getattr(self, name)(list(m.groups()), params, accept, self._base(headers))
        except qido.QueryError as exc:
            return _error(400, str(exc))
        except _NotFound as exc:
            return _error(404, str(exc))
        except Exception as exc:  # an archive or decode fault: its type in the log, nothing of the data
            log.error("DICOMweb %s failed: %s", name, type(exc).__name__)
            return _error(500, f"the archive could not answer ({type(exc).__name__})")
        if method == "HEAD":
            response.body = b""
        return response

    def _authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.token.encode())

    @staticmethod
    def _base(headers: dict[str, str]) -> str:
        return f"http://{headers.get('host', 'localhost')}/dicom-web"

    # -- lookups: 404 for any UID the archive does not hold under the given parents --
    def _study(self, uid: str) -> str:
        if uid not in self.index.studies:
            raise _NotFound("no such study")
        return uid

    def _series(self, study: str, uid: str) -> str:
        if uid not in self.index.studies.get(self._study(study), []):
            raise _NotFound("no such series in this study")
        return uid

    def _instance(self, study: str, series: str, uid: str) -> Instance:
        inst = self.index.instances.get(uid)
        if inst is None or inst.series != self._series(study, series):
            raise _NotFound("no such instance in this series")
        return inst

    def _instances(self, uids: list[str]) -> list[Instance]:
        if len(uids) >= 3:
            return [self._instance(*uids[:3])]
        if len(uids) == 2:
            return [self.index.instances[s] for s in self.index.series[self._series(*uids)]]
        return [self.index.instances[s] for se in self.index.studies[self._study(uids[0])]
                for s in self.index.series[se]]

    # -- QIDO-RS --
    def _search(self, params, accept) -> qido.Query | Response:
        if not choose_json(accept):
            return _error(406, "search results are application/dicom+json")
        return qido.parse_query(params)

    def _json(self, payload) -> Response:
        return Response(200, json.dumps(payload).encode(), "application/dicom+json")

    def search_studies(self, uids, params, accept, base):
        q = self._search(params, accept)
        return q if isinstance(q, Response) else self._json(qido.search_studies(self.index, q, base))

    def search_series(self, uids, params, accept, base):
        q = self._search(params, accept)
        if isinstance(q, Response):
            return q
        study = self._study(uids[0]) if uids else None
        return self._json(qido.search_series(self.index, q, base, study))

    def search_instances(self, uids, params, accept, base):
        q = self._search(params, accept)
        if isinstance(q, Response):
            return q
        study = self._study(uids[0]) if uids else None
        series = self._series(uids[0], uids[1]) if len(uids) > 1 else None
        return self._json(qido.search_instances(self.index, q, base, study, series))

    # -- WADO-RS --
    def metadata(self, uids, params, accept, base):
        if not choose_json(accept):
            return _error(406, "metadata is application/dicom+json")
        return self._json([inst.dataset for inst in self._instances(uids)])

    def retrieve(self, uids, params, accept, base):
        if not choose_multipart(accept, "application/dicom"):
            return _error(406, 'instances are sent as multipart/related; type="application/dicom" in '
                               f"Explicit VR Little Endian ({EXPLICIT_LE})")
        parts = [({"Content-Type": f"application/dicom; transfer-syntax={EXPLICIT_LE}"},
                  export_dicom(self.archive, inst.file_id, inst.frame_ids)) for inst in self._instances(uids)]
        return multipart(parts, "application/dicom")

    def _frame_numbers(self, text: str, inst: Instance) -> list[int]:
        try:
            numbers = [int(n) for n in text.split(",")]
        except ValueError:
            raise qido.QueryError("a frame list is comma-separated frame numbers from 1") from None
        if not numbers or min(numbers) < 1:
            raise qido.QueryError("frame numbers start at 1")
        if max(numbers) > len(inst.frame_ids):
            raise _NotFound(f"the instance has {len(inst.frame_ids)} frames")
        return numbers

    def frames(self, uids, params, accept, base):
        if not choose_multipart(accept, "application/octet-stream"):
            return _error(406, 'frames are sent as multipart/related; type="application/octet-stream", '
                               f"uncompressed ({EXPLICIT_LE})")
        inst = self._instance(*uids[:3])
        numbers = self._frame_numbers(uids[3], inst)
        parts = [({"Content-Type": f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"},
                  frame_bytes(self.archive.get(inst.frame_ids[n - 1]), inst)) for n in numbers]
        return multipart(parts, "application/octet-stream")

    def rendered(self, uids, params, accept, base):
        media = choose_image(accept)
        if media is None:
            return _error(406, "rendered images are image/jpeg or image/png")
        inst = self._instance(*uids[:3])
        number = self._frame_numbers(uids[3], inst)[0] if len(uids) > 3 else 1
        if len(uids) > 3 and "," in uids[3]:
            raise qido.QueryError("a rendered frame is one frame number")
        options = dict(params)
        unknown = set(options) - {"window", "quality", "viewport", "annotation", "accept"}
        if unknown:
            raise qido.QueryError("rendered takes window, quality and viewport only")
        try:
            window = parse_window(options["window"]) if "window" in options else None
            quality = int(options["quality"]) if "quality" in options else None
        except ValueError as exc:
            raise qido.QueryError(f"bad rendering parameter ({exc})") from None
        if quality is not None and not 1 <= quality <= 100:
            raise qido.QueryError("quality is 1..100")
        preview = quality is not None and quality <= PREVIEW_QUALITY
        frame_id = inst.frame_ids[number - 1]
        if preview and self.device == "cpu":
            pixels = linear_preview(self.archive, frame_id)
        else:
            pixels = self.archive.get(frame_id, preview=preview)
        display = to_display(pixels, inst.dataset, inst.photometric, window)
        return Response(200, encode_image(display, media, quality), media)


def multipart(parts: list[tuple[dict, bytes]], media_type: str) -> Response:
    body, content_type = join_parts(parts, media_type)
    return Response(200, body, content_type)


def frame_bytes(pixels: np.ndarray, inst: Instance) -> bytes:
    """A frame's pixel data as the rebuilt file holds it: native little-endian samples,
    colour interleaved (PlanarConfiguration 0), 1-bit data packed."""
    if pixels.dtype.itemsize == 1 and _bits_allocated(inst) == 1:
        from pydicom.pixels import pack_bits

        return pack_bits(pixels.astype(np.uint8))
    return np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes()


def _bits_allocated(inst: Instance) -> int:
    values = (inst.dataset.get("00280100") or {}).get("Value") or [8]
    return int(values[0])
