"""The default model shipped in the package, pinned by digest."""

from pathlib import Path

DEFAULT_MODEL_NAME = "lowrank-base"
# Pinned: `lowrank-batch train base` (make train) prints the new digest when the shipped file changes.
DEFAULT_MODEL_SHA256 = "2f556e5235b490e5f1b735ad8eaf06291195e66801bd472643814395f54699bf"


def default_model_file() -> Path:
    return Path(__file__).resolve().parent / "default" / "lowrank-base.safetensors"


# Pinned like the model: `lowrank-batch train adapter` prints each new digest.
DEFAULT_ADAPTER_SHA256 = {
    "ct": "fcad12ad59221075dc9f36fdda3bcbec8ced696fc001a7e5f3852428a4143cf9",
    "mr": "a1f88c66cce9537d66958c7211af77f2c147454fcdf66d6c81a069b63d10f8bf",
    "xray": "5b81959c470eb30330e2b05f26a84735736cc6a2ca03663b8d239b855593ab88",
    "natural": "64617fe857733ccda2efaed8c6397be31eb464cca60259c1f9f282c224771d2f",
}


def default_adapter_file(modality: str) -> Path:
    return Path(__file__).resolve().parent / "default" / "adapters" / f"{modality}.safetensors"
