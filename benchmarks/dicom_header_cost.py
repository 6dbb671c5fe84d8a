"""What keeping each DICOM file's own bytes costs: kept header bytes per file against its
encoded pixels, on the dev corpus's DICOM files (lossless, the default model, CPU or GPU).

    python -m benchmarks.dicom_header_cost [--out benchmarks/results/dicom_header_cost.json]

Per file: the file's size, its non-pixel bytes as received, the kept header as stored
(compressed, with any residue), the DICOM JSON (stored per frame, as before), the encoded
pixel bytes of all its frames, and whether the rebuilt file is byte-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the dev corpus's DICOM files (lowrank_batch/devcorpus.py), all of their frames
FILES = ["693_UNCR.dcm", "eCT_Supplemental.dcm", "CT_small.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm",
         "emri_small.dcm", "MR_small.dcm", "RG3_UNCR.dcm"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dicom_header_cost.json")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from pydicom.data import get_testdata_file

    from lowrank_batch import Codec
    from lowrank_batch.images.decode import metadata_json
    from lowrank_batch.images.dicom import read_dicom_file
    from lowrank_batch.images.dicom_bytes import KeptFile
    from lowrank_batch.images.dicom_file import rebuild_dicom

    codec = Codec.load()
    rows = []
    start = time.perf_counter()
    for name in FILES:
        data = Path(get_testdata_file(name)).read_bytes()
        dicom = read_dicom_file(name, data)
        encoded, decoded = 0, []
        for _, pixels, bits, _ in dicom.frames:
            enc = codec.encode(pixels, bits, "lossless")
            latent, residual = enc.split()
            encoded += len(latent) + len(residual or b"")
            decoded.append(codec.decode(enc))
        kept = KeptFile.unpack(dicom.header, name)
        rebuilt = rebuild_dicom(decoded, dicom.header, dicom.sha256, dicom.frames[0][3], "lossless", None, name)
        json_bytes = sum(len(metadata_json(meta).encode()) for *_, meta in dicom.frames)
        rows.append({"file": name, "frames": len(dicom.frames), "file_bytes": len(data),
                     "non_pixel_bytes": len(kept.shell), "kept_header_bytes": len(dicom.header),
                     "residue_bytes": len(kept.residue), "dicom_json_bytes_all_frames": json_bytes,
                     "encoded_pixel_bytes": encoded,
                     "kept_header_per_encoded_pixels": round(len(dicom.header) / encoded, 4),
                     "byte_identical": rebuilt.identical and hashlib.sha256(rebuilt.data).hexdigest() == dicom.sha256})
    total_kept = sum(r["kept_header_bytes"] for r in rows)
    total_encoded = sum(r["encoded_pixel_bytes"] for r in rows)
    result = {"device": str(codec.device), "seconds": round(time.perf_counter() - start, 1), "files": rows,
              "total_kept_header_bytes": total_kept, "total_encoded_pixel_bytes": total_encoded,
              "kept_header_share_of_archive": round(total_kept / (total_kept + total_encoded), 4)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
