"""lowrank_batch: archive large (medical) image sets as compact latent Parquet files.

The heavy names (Codec & co., which bring torch and numba) load on first use, so commands that
only read an archive's records (`lowrank-batch ls`, `runs`, `failures`) start in a fraction
of a second.
"""

__version__ = "0.1.0"

from .errors import (  # noqa: E402  (no heavy imports: errors.py is plain Python)
    ChecksumMismatchError,
    CorruptStreamError,
    InvalidImageError,
    InvalidParameterError,
    LowrankError,
    WeightsError,
)

_LAZY = {"Codec": ("api", "Codec"), "CodecConfig": ("codec.codec", "CodecConfig"),
         "EncodedImage": ("codec.format", "EncodedImage")}

__all__ = [
    "Codec", "CodecConfig", "EncodedImage", "LowrankError", "InvalidImageError", "InvalidParameterError",
    "CorruptStreamError", "ChecksumMismatchError", "WeightsError", "__version__",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
