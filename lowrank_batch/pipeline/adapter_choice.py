"""`--adapter auto`: which adapter an image gets. Pure functions, no I/O.

Order: the DICOM Modality tag (CT -> ct; MR -> mr; CR/DX/DR/MG -> xray); otherwise the first
per-source rule whose glob matches the image id (rules come from the job's config, e.g.
"photos/*=natural"; the adapter "none" means no adapter); otherwise no adapter.
An adapter whose own training figures show it worse than the base on its modality's
validation split (BD-rate > 0) is not used by auto: it is there to be tried, not imposed.
"""

from __future__ import annotations

import json
from fnmatch import fnmatchcase

from ..codec.metrics import bd_rate
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


def measured_worse(provenance: dict) -> float | None:
    """The adapter's lossy BD-rate against its base at equal latent bits, from its recorded
    validation curves, when positive (worse); else None."""
    try:
        lossy = json.loads(provenance.get("figures", "{}"))["validation"]["lossy"]
        reference = lossy["reference"]
        trained = [{**t, "bpp": r["bpp"]} for r, t in zip(reference, lossy["trained"])]  # same latents
        bd = bd_rate(reference, trained)
    except (ValueError, KeyError, TypeError, AttributeError, ArithmeticError):
        return None
    return bd if bd > 0 else None
