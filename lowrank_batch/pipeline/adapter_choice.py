"""`--adapter auto`: which adapter an image gets. Pure functions, no I/O.

Order: the DICOM Modality tag (CT -> ct; MR -> mr; CR/DX/DR/MG -> xray); otherwise the first
per-source rule whose glob matches the image id (rules come from the job's config, e.g.
"photos/*=natural"; the adapter "none" means no adapter); otherwise no adapter.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from ..errors import InvalidParameterError

AUTO = "auto"
NONE = "none"
DICOM_MODALITY_ADAPTERS = {"CT": "ct", "MR": "mr", "CR": "xray", "DX": "xray", "DR": "xray", "MG": "xray"}


def parse_rules(texts: list[str] | tuple[str, ...] | None) -> tuple[tuple[str, str], ...]:
    """"GLOB=ADAPTER" strings -> ((glob, adapter), ...), refusing malformed ones by name."""
    rules = []
    for text in texts or ():
        glob, sep, adapter = text.rpartition("=")
        if not sep or not glob or not adapter:
            raise InvalidParameterError(f"adapter rule {text!r} is not GLOB=ADAPTER (e.g. 'photos/*=natural')")
        rules.append((glob, adapter))
    return tuple(rules)


def choose_adapter(metadata: dict, image_id: str, rules: tuple[tuple[str, str], ...] = ()) -> str | None:
    """The adapter name for one image, or None."""
    modality = str(metadata.get("Modality", "")).strip().upper()
    if modality in DICOM_MODALITY_ADAPTERS:
        return DICOM_MODALITY_ADAPTERS[modality]
    for glob, adapter in rules:
        if fnmatchcase(image_id, glob):
            return None if adapter == NONE else adapter
    return None
