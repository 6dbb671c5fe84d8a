"""lowrank_batch: archive large (medical) image sets as compact latent Parquet files."""

__version__ = "0.1.0"

from .codec.codec import Codec, CodecConfig  # noqa: E402
from .codec.format import EncodedImage  # noqa: E402
from .errors import (  # noqa: E402
    ChecksumMismatchError,
    CorruptStreamError,
    InvalidImageError,
    InvalidParameterError,
    LowrankError,
    WeightsError,
)

__all__ = [
    "Codec", "CodecConfig", "EncodedImage", "LowrankError", "InvalidImageError", "InvalidParameterError",
    "CorruptStreamError", "ChecksumMismatchError", "WeightsError", "__version__",
]
