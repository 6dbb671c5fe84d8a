"""Every benchmark in one run: `python -m benchmarks` (= `make bench`).

    python -m benchmarks [--only codec,heldout,job,nightly,adapters,dicomweb] [--from-results]

Each benchmark runs in its own process (they start their own Ray / S3 servers) and writes its
JSON under benchmarks/results/; this runner then prints one Markdown table of the headline
figures and writes benchmarks/results/summary.json. --from-results only composes the table
from the JSON already there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = {
    "codec": ["benchmarks.codec_vs_classic"],
    "heldout": ["benchmarks.codec_vs_classic", "--heldout", "--skip-lossy", "--out", str(RESULTS / "heldout.json")],
    "job": ["benchmarks.job_and_archive"],
    "nightly": ["benchmarks.nightly"],
    "adapters": ["benchmarks.adapters"],
    "dicomweb": ["benchmarks.dicomweb"],
}


def run(names: list[str]) -> dict[str, float]:
    seconds = {}
    for name in names:
        start = time.perf_counter()
        print(f"== {name}: python -m {' '.join(RUNS[name])}", flush=True)
        subprocess.run([sys.executable, "-m", *RUNS[name]], check=True)
        seconds[name] = round(time.perf_counter() - start, 1)
    return seconds


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def headline() -> list[tuple[str, str, str]]:
    """(area, figure, value) rows from whatever results exist."""
    rows = []
    codec = _load("codec_vs_classic")
    if codec:
        for mod, s in codec["summary"]["lossless"].items():
            rows.append(("lossless ratio (dev corpus)", f"{mod}: ours / JPEG 2000 / JPEG-LS / JPEG XL",
                         f"{s['ours']:.3f} / {s['j2k']:.3f} / {s['jpegls']:.3f} / {s['jxl']:.3f}"))
        near = codec["summary"]["near_lossless"].get("all")
        if near:
            rows.append(("near-lossless bpp (all)", "δ=1, 2, 4: ours vs JPEG-LS",
                         ", ".join(f"{near[f'ours_{d}']:.3f} vs {near[f'jpegls_{d}']:.3f}" for d in (1, 2, 4))))
        for mod, s in codec["summary"].get("lossy", {}).items():
            rows.append(("lossy bpp at 45 dB", f"{mod}: ours vs JPEG 2000", f"{s['ours_45']:.3f} vs {s['j2k_45']:.3f}"))
        sp = codec["summary"]["speed"]
        rows.append(("speed, 1 core (MP/s)", "lossless encode / decode: ours vs OpenJPEG",
                     f"{sp['ours_encode_MPps']:.1f} / {sp['ours_decode_MPps']:.1f} vs "
                     f"{sp['j2k_encode_MPps']:.1f} / {sp['j2k_decode_MPps']:.1f}"))
    held = _load("heldout")
    if held:
        for mod, s in held["summary"]["lossless"].items():
            if mod != "all":
                rows.append(("lossless ratio (held-out RG1/MR2)", f"{mod}: ours / JPEG 2000 / JPEG-LS",
                             f"{s['ours']:.3f} / {s['j2k']:.3f} / {s['jpegls']:.3f}"))
    job = _load("job_and_archive")
    if job:
        t, d, m = job["throughput"], job["decode_by_id"], job["peak_memory"]
        rows += [("job", "steady MP/s 1 / 2 workers (2 cores)", f"{t['ray1_steady_MPps']:.2f} / {t['ray2_steady_MPps']:.2f}"),
                 ("job", "2-worker scaling vs ideal; Ray overhead", f"{t['scaling_2_vs_ideal']:.2f}; {t['ray1_overhead_pct']:.1f}%"),
                 ("decode by id (S3)", f"median ms, bytes read for {d['encoded_bytes']} B, archive of {d['archive_images']}",
                  f"{d['get_median_ms']:.0f} ms, {d['bytes_read']} B in {d['range_requests']} ranges"),
                 ("memory", "peak RSS, 4096² 16-bit lossless encode", f"{m['peak_encode_MiB']:.0f} MiB")]
    nightly = _load("nightly")
    if nightly:
        rows.append(("nightly", f"{nightly['images']} images: first run / no-change rerun",
                     f"{nightly['first_run_seconds']:.1f} s / {nightly['rerun_seconds']:.1f} s "
                     f"({nightly['rerun_requests']} requests)"))
    adapters = _load("adapters")
    if adapters:
        for mod, r in adapters.items():
            fmt = lambda v: "n/a" if v is None else f"{v:+.1f}%"  # noqa: E731
            rows.append(("trained layers (lossy BD-rate)", f"{mod}: trained base vs linear; adapter vs base",
                         f"{fmt(r['trained_vs_linear']['bd_rate_percent'])}; {fmt(r['adapter_vs_base']['bd_rate_percent'])}"))
    web = _load("dicomweb")
    if web:
        lat, thr = web["latency"], web["throughput"]
        rows += [("DICOMweb (Ray Serve)", "median ms: study metadata / first frame 512² CT / rendered preview",
                  f"{lat['study_metadata']['median_ms']} / {lat['first_frame_512_ct']['median_ms']} / "
                  f"{lat['rendered_preview_jpeg']['median_ms']}"),
                 ("DICOMweb (Ray Serve)", "concurrent frame requests/s, 1 / 2 replicas",
                  f"{thr['1_replicas']['requests_per_second']} / {thr['2_replicas']['requests_per_second']}")]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(RUNS), help=f"comma-separated: {', '.join(RUNS)}")
    parser.add_argument("--from-results", action="store_true", help="do not run, only compose the table")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - set(RUNS)
    if unknown:
        parser.error(f"unknown benchmarks {sorted(unknown)}")
    seconds = {} if args.from_results else run(names)
    rows = headline()
    print("\n| area | figure | value |\n|---|---|---|")
    for area, figure, value in rows:
        print(f"| {area} | {figure} | {value} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps({"rows": rows, "seconds": seconds}, indent=1))


if __name__ == "__main__":
    main()
