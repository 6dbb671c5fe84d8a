"""The project's exceptions. Every message names the input and says what is wrong."""


class LowrankError(Exception):
    """Base class of every error lowrank_batch raises on purpose."""


class InvalidImageError(LowrankError, ValueError):
    """An input array cannot be encoded as given (dtype, shape, values, bit depth)."""


class InvalidParameterError(LowrankError, ValueError):
    """A codec parameter (mode, max_error, quality, bits_stored...) is out of range."""


class CorruptStreamError(LowrankError, ValueError):
    """An encoded byte string is truncated, foreign or damaged."""


class ChecksumMismatchError(CorruptStreamError):
    """Decoded pixels do not hash to the SHA-256 recorded at encode time."""


class WeightsError(LowrankError):
    """Weights are missing, malformed or do not match the model."""
