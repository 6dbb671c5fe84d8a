"""The package's public `Codec`: the pure codec plus conveniences that find weights by name.

`lowrank_batch.Codec.load("ct-model", adapter="ct")` and `Codec.for_image(enc)` stay one call
for users; they live here, outside codec/, so that the codec itself never imports the store.
"""

from __future__ import annotations

from pathlib import Path

from .codec import codec as pure
from .codec.format import EncodedImage
from .weights import loading


class Codec(pure.Codec):
    """`codec.codec.Codec` with the weight store's lookups as class methods."""

    @classmethod
    def load(cls, model: str | Path | None = None, adapter: str | None = None,
             config: pure.CodecConfig | None = None, device: str = "cpu", store=None) -> "Codec":
        return loading.load_codec(model, adapter, config, device, store, cls=cls)  # type: ignore[return-value]

    @classmethod
    def for_image(cls, enc: EncodedImage, store=None, config: pure.CodecConfig | None = None,
                  device: str = "cpu") -> "Codec":
        return loading.codec_for_image(enc, store, config, device, cls=cls)  # type: ignore[return-value]

    def use_adapter(self, ref: str, store=None, weight: float = 1.0) -> None:
        loading.use_adapter(self, ref, store, weight)
