"""Write the small sample set bundled with the package (lowrank_batch/samples/), from the dev corpus.

    python jobs/make_samples.py

Signed CT is shifted to unsigned (+2**(bits-1)) so it fits a 16-bit PNG; the manifest records
each file's bits_stored and modality.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from lowrank_batch.devcorpus import dev_images  # noqa: E402
from lowrank_batch.images import write_image  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "lowrank_batch" / "samples"
PICK = {
    "693_UNCR.dcm": ("ct_693.png", None),
    "MR-SIEMENS-DICOM-WithOverlays.dcm": ("mr_siemens.png", None),
    "RG3_UNCR.dcm": ("cr_rg3_crop.png", (slice(496, 1264), slice(496, 1264))),
    "camera": ("natural_camera.png", None),
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    manifest = []
    for im in dev_images():
        if im.name not in PICK:
            continue
        name, crop = PICK[im.name]
        a = im.pixels[crop] if crop else im.pixels
        if a.dtype.kind == "i":
            a = (a.astype(np.int32) + (1 << (im.bits_stored - 1))).astype(np.uint16)
        write_image(OUT / name, np.ascontiguousarray(a))
        manifest.append({"file": name, "modality": im.modality, "bits_stored": im.bits_stored, "source": im.name})
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {len(manifest)} samples to {OUT}")


if __name__ == "__main__":
    main()
