"""A codec from names and digests: the weight store resolves them, the codec receives models.

The codec (codec/) never sees a path, a store or a name; this is the one place that turns
"model NAME@VERSION / a digest / a model file, adapter NAME" into loaded tensors for it.
"""

from __future__ import annotations

from pathlib import Path

from ..codec.codec import Codec, CodecConfig
from ..codec.format import EncodedImage
from ..errors import WeightsError
from .install import cached_model, ensure_default, load_adapter
from .model_file import load_model
from .store import WeightStore


def load_codec(model: str | Path | None = None, adapter: str | None = None, config: CodecConfig | None = None,
               device: str = "cpu", store: WeightStore | None = None, cls: type[Codec] = Codec) -> Codec:
    """A model from the weight store (default: the shipped one, installed on first use), by
    NAME, NAME@VERSION or SHA-256; a path to a model file is loaded directly. `adapter`
    names an installed adapter bound to that model."""
    store = store or WeightStore()
    if model is not None and Path(model).is_file():
        loaded = load_model(model)
    else:
        entry = ensure_default(store) if model is None else store.resolve("models", str(model))
        loaded = cached_model(str(store.blob_path(entry.sha256)), entry.sha256)
    codec = cls(loaded, config, device)
    if adapter is not None:
        use_adapter(codec, adapter, store)
    return codec


def codec_for_image(enc: EncodedImage, store: WeightStore | None = None, config: CodecConfig | None = None,
                    device: str = "cpu", cls: type[Codec] = Codec) -> Codec:
    """The codec an encoded image needs, found in the store by its recorded digests."""
    store = store or WeightStore()
    try:
        codec = load_codec(enc.model_sha256, config=config, device=device, store=store, cls=cls)
    except WeightsError:
        raise WeightsError(f"this image needs model {enc.model_sha256}: install it with "
                           "lowrank-batch weights install SRC --sha256 " + enc.model_sha256) from None
    if enc.adapter_sha256:
        try:
            use_adapter(codec, enc.adapter_sha256, store)
        except WeightsError:
            raise WeightsError(f"this image needs adapter {enc.adapter_sha256} for model {enc.model_sha256}: "
                               "install it with lowrank-batch adapters install SRC --base MODEL") from None
    return codec


def use_adapter(codec: Codec, ref: str, store: WeightStore | None = None, weight: float = 1.0) -> None:
    """Apply an installed adapter (bound to the codec's model) to its learned layers.

    The shared model stays untouched: the refiner is copied once, then adapters switch on it
    without reloading base weights."""
    adapter, entry = load_adapter(store or WeightStore(), ref, codec.model.sha256)
    codec.apply_adapter(adapter.layers, entry.sha256, weight)
    codec.adapter_provenance = adapter.provenance or {}  # training metadata, figures included
