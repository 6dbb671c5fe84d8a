"""The fastest preview of an archived image: the latents' linear reconstruction alone.

The codec's own preview runs the learned refiner over it, which costs ~0.5 s for a 512² image
on a CPU; a viewer's thumbnail or first paint does not need it. On a GPU replica the refined
preview is cheap, and is what is served.
"""

from __future__ import annotations

import numpy as np

from ..codec import pixels


def linear_preview(archive, image_id: str) -> np.ndarray:
    enc = archive.encoded(image_id, preview=True)  # reads the latent column only
    codec = archive.codec_for(enc)
    layout = enc.layout
    # the codec's latent decode (integer, bit-exact on any machine), without the refiner after it
    recon = np.clip(codec._decode_latents(enc), 0, layout.maxval)
    planes = pixels.ycocg_inverse(recon, layout.maxval) if enc.colour_transform == "ycocg" else recon
    return pixels.from_planes(planes, layout)
