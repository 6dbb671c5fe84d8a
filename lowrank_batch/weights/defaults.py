"""The default model shipped in the package, pinned by digest."""

from pathlib import Path

DEFAULT_MODEL_NAME = "lowrank-base"
# Pinned: jobs/fit_default.py prints the new digest when the shipped file changes.
DEFAULT_MODEL_SHA256 = "0fa63b825df3740b7207b22a493ce992b33e137bc8e40735ca84bf06b31fd41c"


def default_model_file() -> Path:
    return Path(__file__).resolve().parent / "default" / "lowrank-base.safetensors"


# Pinned like the model: `lowrank-batch train adapter` prints each new digest.
DEFAULT_ADAPTER_SHA256 = {}


def default_adapter_file(modality: str) -> Path:
    return Path(__file__).resolve().parent / "default" / "adapters" / f"{modality}.safetensors"
