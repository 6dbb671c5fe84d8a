"""`--adapter auto` in a worker: per image, the base codec or the base with the adapter that
adapter_choice.py names for it. Each adapter is attached once per worker (the base model's
tensors shared); one that is missing, bound to another base or measured worse than the base
falls back to the base, said once in the notes."""

from __future__ import annotations

from typing import Callable

from ..codec.codec import Codec
from .adapter_choice import choose_adapter, measured_worse


class AdapterCodecs:
    def __init__(self, base: Codec, rules: tuple[tuple[str, str], ...], notes: list[str],
                 attach: Callable[[Codec, str], None]):
        """`attach(codec, name)` puts adapter `name` on a fresh codec of the base model, or raises."""
        self.base, self.rules, self.notes, self.attach = base, rules, notes, attach
        self._by_adapter: dict[str | None, Codec] = {None: base}
        self.names: dict[str | None, str] = {}  # adapter digest -> the name it was chosen by

    def codec_for(self, image_id: str, metadata: dict) -> Codec:
        name = choose_adapter(metadata, image_id, self.rules)
        if name not in self._by_adapter:
            self._by_adapter[name] = self._attach(name)
        return self._by_adapter[name]

    def _attach(self, name: str) -> Codec:
        try:
            codec = Codec(self.base.model, self.base.config, self.base.device)
            self.attach(codec, name)
        except Exception as exc:  # not installed, bound to another base, unreadable: the base alone, said once
            self.notes.append(f"--adapter auto: no usable adapter {name!r} for this model ({exc}); "
                              "those images were encoded with the base model")
            return self.base
        worse = measured_worse(codec.adapter_provenance)
        if worse is not None:
            self.notes.append(f"--adapter auto: adapter {name!r} measured worse than the base on its "
                              f"validation split (lossy BD-rate {worse:+.1f}%); not used")
            return self.base
        self.names[codec.adapter_sha256] = name
        return codec
