"""The newcomer's first run: the main job on the embedded default. The bundled samples (CT, MR,
CR, a photograph) are archived by the Ray encode job (local Ray, local files, the shipped
weights and adapters) into a latent Parquet archive; each image is then decoded back by id and
checked against its source, and a table of sizes, quality and timings is printed."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .pipeline.decoding import ArchiveDecoder
from .codec import metrics
from .images import write_image
from .images.read import read_image_bytes
from .pipeline.adapter_choice import AUTO
from .pipeline.job import JobOptions, run_encode
from .pipeline.worker import EncodeSettings
from .weights.defaults import DEFAULT_ADAPTER_SHA256

DEMO_ADAPTERS = {"ct": "ct", "mr": "mr", "cr": "xray", "natural": "natural"}  # sample modality -> shipped adapter
HEADER = (f"{'image':22} {'shape':>11} {'bits':>4} {'raw B':>9} {'coded B':>9} {'ratio':>6} {'bpp':>6} "
          f"{'PSNR dB':>8} {'maxerr':>6} {'prev dB':>7} {'dec ms':>7} adapter")


@dataclass(frozen=True)
class DemoOptions:
    mode: str = "lossless"
    max_error: int | None = None
    quality: float | None = None
    model: str | None = None  # None: the shipped default
    adapter: str | None = None  # None or "auto": the shipped adapter of each sample's modality
    out: str | None = None  # keep the sources, the archive and the decoded images here


def run_demo(options: DemoOptions, log=print) -> int:
    """0 when every image came back within its mode's bound, 1 otherwise."""
    samples = resources.files("lowrank_batch") / "samples"
    manifest = json.loads((samples / "manifest.json").read_text())
    work = Path(options.out) if options.out else Path(tempfile.mkdtemp(prefix="lowrank-demo-"))
    src, dst = work / "src", work / "archive"
    src.mkdir(parents=True, exist_ok=True)
    for item in manifest:
        (src / item["file"]).write_bytes((samples / item["file"]).read_bytes())
    log(f"lowrank-batch demo: mode={options.mode}" + (f" max_error={options.max_error}" if options.max_error else "")
        + f"; archiving {len(manifest)} samples with the Ray encode job: {src} -> {dst}")
    summary = run_encode(str(src), str(dst), _settings(options, manifest), JobOptions(batch_size=1), log=log)
    log(f"job: {summary.encoded} encoded, {summary.failed} failed, {summary.seconds:.1f} s "
        f"(Ray start and weight loading included)")
    failures = summary.failed
    for f in summary.failures:
        log(f"  failed {f.image_id} [{f.stage}] {f.error}: {f.message}")
    decoder = ArchiveDecoder.open(str(dst))
    names = {sha: name for name, sha in DEFAULT_ADAPTER_SHA256.items()}
    log(HEADER)
    total_raw = total_coded = 0
    archived = set(decoder.ids())
    for item in manifest:
        if item["file"] not in archived:  # its failure is listed above
            continue
        ok, raw, coded = _check_one(decoder, src, item["file"], options, names, work if options.out else None, log)
        failures += not ok
        total_raw, total_coded = total_raw + raw, total_coded + coded
    ratio = total_raw / total_coded if total_coded else float("nan")
    log(f"total: {total_raw} raw bytes -> {total_coded} coded bytes, ratio {ratio:.3f}; "
        f"{'all checks passed' if not failures else f'{failures} images FAILED'}")
    if options.out:
        log(f"kept in {work}: src/, archive/ (try `lowrank-batch ls {dst}`), decoded/")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if not failures else 1


def _settings(options: DemoOptions, manifest: list[dict]) -> EncodeSettings:
    """Each sample gets its modality's shipped adapter (as --adapter auto gives DICOM its own),
    unless a model or a fixed adapter is asked for."""
    auto = options.adapter in (None, AUTO) and options.model is None
    rules = tuple((item["file"], DEMO_ADAPTERS[item["modality"]]) for item in manifest) if auto else ()
    adapter = AUTO if auto else (None if options.adapter == AUTO else options.adapter)
    return EncodeSettings(options.mode, options.max_error, options.quality, options.model, adapter, rules)


def _check_one(decoder: ArchiveDecoder, src: Path, image_id: str, options: DemoOptions, adapter_names: dict,
               keep: Path | None, log) -> tuple[bool, int, int]:
    """Decode one image by id, compare it with its source, print its line: (ok, raw, coded bytes)."""
    (source,) = read_image_bytes(image_id, (src / image_id).read_bytes())
    original, bits = source.pixels, source.bits_stored
    row = decoder.row(image_id, ["encoded_bytes", "adapter_sha256"])
    t0 = time.perf_counter()
    decoded = decoder.get(image_id)
    dec_ms = 1e3 * (time.perf_counter() - t0)
    preview = decoder.get(image_id, preview=True)
    err = metrics.max_abs_error(original, decoded)
    ok = {"lossless": err == 0, "near-lossless": err <= (options.max_error or 0)}.get(options.mode, True)
    raw, coded = original.size * ((bits + 7) // 8), row["encoded_bytes"]
    pixels = original.shape[0] * original.shape[1]
    shape = "x".join(map(str, original.shape))
    adapter = adapter_names.get(row["adapter_sha256"], "-" if not row["adapter_sha256"] else "other")
    log(f"{image_id:22} {shape:>11} {bits:>4} {raw:>9} {coded:>9} {raw / coded:>6.2f} {8 * coded / pixels:>6.3f} "
        f"{metrics.psnr(original, decoded, bits):>8.2f} {err:>6} {metrics.psnr(original, preview, bits):>7.2f} "
        f"{dec_ms:>7.0f} {adapter}" + ("" if ok else "  <- missed its bound"))
    if keep:
        (keep / "decoded").mkdir(exist_ok=True)
        write_image(keep / "decoded" / image_id, decoded, bits)
    return ok, raw, coded
