"""The package's layers import one way (GUIDE § 1): a scan of every import statement, and the
imports that light commands must not pay for (torch, numba), checked in fresh interpreters."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lowrank_batch"

# package (or top-level module) -> what it must never import, at any depth, even inside functions
FORBIDDEN = {
    "codec": {"weights", "pipeline", "archive", "report", "images", "training", "api", "decode", "cli",
              "cli_archive", "cli_weights", "cli_serve", "demo", "storage", "ray_session", "serve", "sources"},
    "archive": {"codec", "weights", "pipeline", "report", "training", "api", "decode", "cli", "demo", "serve"},
    "images": {"codec", "weights", "pipeline", "archive", "report", "training", "api", "decode", "serve"},
    "weights": {"pipeline", "archive", "report", "training", "decode", "cli", "demo", "serve", "sources"},
    "sources": {"codec", "weights", "pipeline", "archive", "report", "training", "decode", "serve"},
    "pipeline": {"report", "training", "cli", "demo", "serve"},
    "report": {"training", "cli", "demo", "serve"},
}
FORBIDDEN_EXTERNAL = {"archive": {"torch", "numba"}, "images": {"torch", "numba"}}
# known exceptions, each a lazy import inside one convenience method (never at import time):
# Archive.to_ray_dataset / torch_dataset hand the archive to pipeline/dataset.py, which decodes
ALLOWED = {("lowrank_batch/archive/reader.py", "lowrank_batch.pipeline.dataset"),
           ("lowrank_batch/archive/reader.py", "lowrank_batch.pipeline.dataset.to_ray_dataset"),
           ("lowrank_batch/archive/reader.py", "lowrank_batch.pipeline.dataset.torch_dataset")}


def _imports(path: Path) -> set[str]:
    """Absolute names of everything a module imports (relative imports resolved)."""
    module = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = module[:-1] if module[-1] != "__init__" else module[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            found.add(name)
            found |= {f"{name}.{a.name}" for a in node.names}  # `from . import lora`
    return found


def _layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if parts[0] == "lowrank_batch" and len(parts) > 1 else None


def test_no_module_imports_a_layer_above_it():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for name in sorted(_imports(path)):
            if (str(path.relative_to(PACKAGE.parent)), name) in ALLOWED:
                continue
            if _layer(name) in FORBIDDEN.get(own, ()):
                problems.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
            if name.split(".")[0] in FORBIDDEN_EXTERNAL.get(own, ()):
                problems.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not problems, "\n".join(problems)


def test_packages_form_no_import_cycle():
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        rel = str(path.relative_to(PACKAGE.parent))
        graph.setdefault(own, set()).update(
            layer for name in _imports(path) if (layer := _layer(name)) and layer != own and layer != "__init__"
            and (rel, name) not in ALLOWED)
    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen
    cycles = sorted(p for p in graph if p in reach(p))
    assert not cycles, f"packages in an import cycle: {cycles} ({ {p: sorted(graph[p]) for p in cycles} })"


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, cwd=PACKAGE.parent)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_reading_an_archive_imports_no_torch():
    modules = _modules_after("import lowrank_batch.archive")
    assert not {"torch", "numba"} & modules


@pytest.mark.parametrize("command", ["ls", "failures", "runs"])
def test_record_commands_import_no_torch_or_numba(tmp_path, command):
    from lowrank_batch.archive import UnitWriter
    from lowrank_batch.archive.writer import put_atomic

    import fsspec

    fs = fsspec.filesystem("file")
    row = {"image_id": "a.png", "source_uri": "/src/a.png", "source_etag": "e", "source_size": 3, "shape": [2, 2],
           "dtype": "uint8", "bits_stored": 8, "mode": "lossless", "max_error": 0, "latent": b"x", "residual": b"y",
           "pixel_sha256": "0" * 64, "model_sha256": "0" * 64, "adapter_sha256": None, "psnr": None,
           "encoded_bytes": 2, "codec_version": "t", "metadata_json": "{}", "run_id": "r", "unit_id": "u"}
    UnitWriter(fs, str(tmp_path), "u", "r").write([row])
    put_atomic(fs, f"{tmp_path}/runs/r.json", json.dumps({"run_id": "r", "encoded": 1, "skipped": 0, "failed": 0,
                                                          "bytes_in": 4, "bytes_out": 2, "seconds": 1.0}).encode())
    modules = _modules_after(f"from lowrank_batch.cli import main\nassert main([{command!r}, {str(tmp_path)!r}]) == 0")
    assert not {"torch", "numba"} & modules
