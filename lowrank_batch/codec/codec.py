"""Codec: encode an image into latents (+ residual) and decode it back.

    planes --project--> quantised latents --entropy code--> latent stream
             \\                 | integer reconstruction R (bit-exact anywhere)
              \\                v
               +--> causal context coder guided by R --> residual stream (lossless / near-lossless)

Preview (any mode) and lossy decode use the latents alone, refined by the learned layers.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ChecksumMismatchError, CorruptStreamError, InvalidParameterError, WeightsError
from . import blend
from . import context_model as cm
from . import lora, lowrank, metrics, pixels, trials
from .format import FORMAT_VERSION, MODES, READABLE_VERSIONS, EncodedImage
from .plane_header import PlaneInfo, plane_predictor_weights
from .linear_fit import as_class_table
from .loaded import LowRankModel
from .planes import coded_planes, decoder_side_information, stack_latents
from .refine import refine_planes
from .plane_v4 import encode_plane_v4
from .residual_coder import (V1_TABLES, V3_TABLES, V4_TABLES, V5_TABLES, ContextTables, decode_plane, encode_plane,
                             encode_plane_strips, split_strips, strip_count, with_parity_context, with_value_classes)
from .threads import run_all

LATENT_LIMIT = 1 << 20  # |latent| bound; a corrupt stream claiming more is refused
QUALITY_RANGE = (10.0, 90.0)  # lossy quality: nominal PSNR in dB
V1_REMAP_MAX_DENSITY = 0.2  # what formats 1 and 2 were released with (their encoders keep it)
LINEAR_TRIAL_MIN_SIZE = 128  # smallest side of the linear / remap trial crop (largest: CodecConfig.linear_trial_size)
# format 5: a 25th of the plane, at least 96 on a side, for every trial (the guidance trial too,
# which then reuses the linear trial's unguided size): the 512^2 CT encodes 2.5 ms faster, and
# the dev corpus (ct, mr, cr) comes out 10 bytes larger in all
V5_TRIAL_MIN_SIZE, V5_TRIAL_SHARE = 96, 25


@dataclass(frozen=True)
class CodecConfig:
    """Tunable choices of the codec (saved with each run by the jobs that use it)."""

    # latents kept in lossless / near-lossless modes and their step (a fraction of the image's
    # value span). Measured on the dev corpus: rank 4, step 1/8 (before Dec 2026) cost 1.5-6% of
    # a lossless file; rank 3, step 1/4 saves 1.1% on CT, 0.6% on MR, 0.2% on CR for previews
    # 1-2 dB lower (rank 2 saved 0.5% more but cost 5 dB on fine texture): benchmarks/lossless_options.py
    preview_rank: int = 3
    preview_step: float = 1 / 4
    # format 3: where the residual doesn't use the preview, a coarser one is chosen when the
    # default costs more than this fraction of the file (CT slices: 3-4%, see _preview_within_budget)
    preview_budget: float = 0.01
    strip_pixels: int = 1 << 20  # format 3: planes are cut into independent strips of about this many pixels
    # format 4: planes of at least this many pixels try intensity bands (plane_v4.choose_value_classes);
    # on smaller ones each band's histograms learn too little (dev corpus: +0.3-1% below 64K pixels)
    band_min_pixels: int = 1 << 16
    # ... and keep them only if they save this fraction of the plane's bits: more histograms cost
    # decode time (one core, dev corpus: 2 bands +7%, 4 +15%, 8 +16%), and they saved 0.3-0.7% on
    # CT slices against 2.2% on the 3 MP radiograph (benchmarks/lossless_options.py)
    band_min_gain: float = 0.01
    # code sparse-valued planes as indices when used/span is below this (format 3; its run-coded
    # table is cheap). Measured: the 512^2 CT with 55% of its span used (padding -2000, body
    # -1000..2500) is 3.6% smaller, a 64^2 MR at 56% 3.1%; at 80-90% gains fall to 0-0.7%.
    # Formats 1 and 2 stored one varint per value, so their encoders keep 0.2 (V1_REMAP_MAX_DENSITY).
    remap_max_density: float = 0.9
    lossy_deadzone: float = 0.15  # measured: -16% bits at 45 dB on MR, +1% on natural images
    guidance_trial_size: int = 128  # side of the crop that decides whether guided prediction pays
    # format 4: ... and it must save this fraction of that crop. A guided plane needs the full
    # preview latents (unguided ones shrink to preview_budget) and their decode, and two more
    # predictors per pixel. Dev corpus, images the bare "smaller crop" rule guided (crop gains
    # 0.05-0.75%): all but one came out 0.1-0.9% larger in total; the exception, RG3, was 0.06%
    # smaller guided but decoded 13% slower (624 vs 541 ms), so the gate trades those 0.06%
    guidance_min_gain: float = 0.01
    # largest side of the crop that decides whether the fitted linear predictor (and a sparse
    # plane's remap) pays; smaller planes get a crop of 1/16 of their pixels, at least 128 on a
    # side, so the four trial passes cost a quarter of the final one (a 512^2 CT: 128^2, encode
    # -12 ms; dev corpus ct/mr/cr: 7 of 1,061,798 bytes change; 96^2 would cost 0.5%)
    linear_trial_size: int = 256
    # Previews of lossless / near-lossless images run the refiner on CPU only up to this many
    # pixels: it adds 0.2-7 dB but costs ~3-11 us/px on one core, 10-100x the linear preview
    # and more than the full lossless decode above ~64K pixels (3 MP CR: 35 s refined, 0.18 s
    # linear, 2.3 s lossless). On a GPU it always runs; lossy decode always runs it.
    cpu_preview_refine_max_pixels: int = 1 << 16
    default_quality: float = 45.0
    # format 5: how much the residual predictor's blend trusts each predictor, by role (the plain
    # ones, the guided pair, the linear one); trained on the dev corpus (blend.py)
    predictor_weights: tuple[int, ...] = blend.TRAINED_PREDICTOR_WEIGHTS

    def __post_init__(self) -> None:
        if not 1 <= self.preview_rank:
            raise InvalidParameterError(f"preview_rank must be >= 1, got {self.preview_rank}")
        if not 0 < self.preview_step <= 1:
            raise InvalidParameterError(f"preview_step must be in (0, 1], got {self.preview_step}")
        weights = tuple(self.predictor_weights)
        if len(weights) != cm.NUM_PREDICTORS or not all(
                isinstance(w, (int, np.integer)) and 1 <= w <= blend.MAX_PREDICTOR_WEIGHT for w in weights):
            raise InvalidParameterError(f"predictor_weights must be {cm.NUM_PREDICTORS} integers from 1 to "
                                        f"{blend.MAX_PREDICTOR_WEIGHT}, got {self.predictor_weights!r}")
        object.__setattr__(self, "predictor_weights", tuple(int(w) for w in weights))  # a list from JSON, say


def quality_to_step(quality: float) -> float:
    """Lossy quality is the nominal PSNR (dB) of the latent quantisation: step**2 / 12 = 10**(-Q/10)."""
    return math.sqrt(12.0) * 10.0 ** (-quality / 20.0)


class Codec:
    """Encoder/decoder bound to one model (and optionally one adapter)."""

    def __init__(self, model: LowRankModel, config: CodecConfig | None = None, device: str = "cpu"):
        if next(model.refiner.parameters()).device != torch.device(device):
            # models are cached and shared per process: a codec on another device gets its own
            # copy of the learned layers, or moving them would break every other codec (seen on
            # an H200: a CPU codec's refiner moved to CUDA by a GPU codec built after it)
            model = dataclasses.replace(model, refiner=copy.deepcopy(model.refiner).to(device))
        self.model = model
        self.config = config or CodecConfig()
        self.device = device
        self.adapter_sha256: str | None = None
        self.adapter_provenance: dict = {}  # the adapter's training metadata (set by whoever loads it)

    def apply_adapter(self, layers: dict, name: str, weight: float = 1.0) -> None:
        """Attach LoRA weights (module path -> LoraWeights) under `name` and make them the active
        adapter. `weights.loading.use_adapter` is the way in for installed adapters; this is for
        fresh ones."""
        refiner = copy.deepcopy(self.model.refiner) if not lora.lora_layers(self.model.refiner) else self.model.refiner
        if name not in {n for layer in lora.lora_layers(refiner) for n in layer.adapters}:
            lora.attach(refiner, name, layers)
        lora.set_active(refiner, {name: weight})
        self.model = dataclasses.replace(self.model, refiner=refiner.to(self.device))
        self.adapter_sha256 = name

    # ---------------------------------------------------------------- encode
    def encode(self, array: np.ndarray, bits_stored: int, mode: str = "lossless", max_error: int | None = None,
               quality: float | None = None, rank: int | None = None,
               format_version: int | None = None) -> EncodedImage:
        """`format_version` (default: the current one) writes an older released version's bytes."""
        version = FORMAT_VERSION if format_version is None else format_version
        if version not in READABLE_VERSIONS:
            raise InvalidParameterError(f"format_version must be one of {READABLE_VERSIONS}, got {format_version!r}")
        layout = pixels.validate(array, bits_stored)
        mode, delta, quality = self._check_mode(mode, max_error, quality, layout)
        tables_sha = None  # format 1's built-in tables; format 2 picks trained ones per image below
        core = self.model.core
        if layout.channels % core.channels:
            raise InvalidParameterError(
                f"model has {core.channels} channels per patch; image has {layout.channels}"
            )
        planes = pixels.to_planes(array, layout)
        maxval = layout.maxval
        asked_rank = rank
        _, colour, rank, step, latents, recon = self._latents(planes, layout, mode, quality, rank)
        if mode == "lossy" and version == 2:  # no residual: the tables only name a valid set
            tables_sha = self._candidate_tables()[0]
        residuals: list[bytes] = []
        if mode == "lossy":
            infos = [PlaneInfo(0, maxval) for _ in range(layout.channels)]
            decoded_sha = pixels.pixel_sha256(recon)  # the deterministic part of a lossy decode
        else:
            residuals, infos, colour, tables_sha, decoded_sha, psnr = self._code_residuals(
                array, planes, recon, layout, mode, delta, version)
        latent_stream, _ = encode_plane(stack_latents(latents), int(latents.min()), int(latents.max()))
        if version >= 3 and mode != "lossy" and asked_rank is None and not any(i.guided for i in infos):
            # nothing in the residual depends on the latents: shrink the preview to its budget
            rank, step, latents, recon, latent_stream = self._preview_within_budget(
                planes, layout, mode, quality, sum(map(len, residuals)), (rank, step, latents, recon, latent_stream))
        latent_range = (int(latents.min()), int(latents.max()))
        pixel_sha = decoded_sha if mode == "lossless" else pixels.pixel_sha256(array)  # lossless: hashed once
        if mode == "lossy":  # the refined output is the result: its PSNR is the image's
            preview_psnr = metrics.psnr(planes, self._finish_preview(recon, colour, maxval, step, rank),
                                        layout.bits_stored)
            psnr = preview_psnr
        else:  # archival modes record the linear preview's PSNR: running the refiner over every
            # image just for this figure made lossless encoding ten times slower
            preview_psnr = metrics.psnr(planes, recon, layout.bits_stored)
        return EncodedImage(
            layout=layout, mode=mode, max_error=delta, quality=quality, rank=rank, latent_step=step,
            colour_transform=colour, planes=infos, latent_range=latent_range, latent_stream=latent_stream,
            residual_streams=residuals, pixel_sha256=pixel_sha, decoded_sha256=decoded_sha,
            model_sha256=self.model.sha256, adapter_sha256=self.adapter_sha256, psnr=psnr, preview_psnr=preview_psnr,
            version=version, tables_sha256=tables_sha,
        )

    # coarser previews, tried in order when the default one costs more than its budget
    PREVIEW_FALLBACKS = ((2, 1 / 4), (2, 1 / 2), (1, 1 / 2), (1, 1.0))

    def _preview_within_budget(self, planes, layout, mode, quality, residual_bytes: int, default):
        """Format 3, archival modes: the default preview (rank 3, step 1/4 of the span) costs
        3-4% of a lossless CT slice's file; take the first coarser setting that fits in
        `preview_budget` of the file (or the coarsest). The preview stays a whole-image
        thumbnail; its PSNR is recorded in the header."""
        best = default
        budget = self.config.preview_budget
        for rank, step_fraction in self.PREVIEW_FALLBACKS:
            if len(best[4]) <= budget * (residual_bytes + len(best[4])):
                break
            if rank > self.model.core.max_rank:
                continue
            if rank <= default[0] and self._preview_step(planes, layout, step_fraction) == default[1]:
                # fewer components at the default's step: its first latents, exactly (each latent
                # is its own column of an exact integer product in lowrank.project)
                step, latents = default[1], np.ascontiguousarray(default[2][..., :rank])
                recon = self._reconstruct(latents, step, layout)
            else:
                _, _, rank, step, latents, recon = self._latents(planes, layout, mode, quality, rank, step_fraction)
            stream, _ = encode_plane(stack_latents(latents), int(latents.min()), int(latents.max()))
            if len(stream) < len(best[4]):
                best = (rank, step, latents, recon, stream)
        return best

    def _code_residuals(self, array: np.ndarray, planes: np.ndarray, recon: np.ndarray,
                        layout: pixels.PixelLayout, mode: str, delta: int, version: int):
        """Archival modes: each plane's residual stream, coded against the reconstruction.

        Returns (streams, plane infos, colour transform, tables digest, decoded digest, PSNR)."""
        density = self.config.remap_max_density if version >= 3 else V1_REMAP_MAX_DENSITY
        coded, side, infos, colour = coded_planes(planes, recon, layout, mode, density)
        plain_trial: dict[int, int] = {}  # plane -> bytes of its unguided trial crop (shared by the trials)
        if version >= 3:
            for c, info in enumerate(infos):
                if info.remap is not None:
                    crop = self._linear_trial_crop(planes[c].shape, version)
                    pays, plain_trial[c] = trials.remap_pays(planes[c], coded[c], info, layout.maxval, crop,
                                                             self._encoder_tables(version, None))
                    if not pays:
                        coded[c], side[c], infos[c] = planes[c], recon[c], PlaneInfo(0, layout.maxval)
                        del plain_trial[c]
        decoded = np.empty_like(coded) if mode == "near-lossless" else None  # lossless: equals coded
        patch = self.model.core.patch
        tables_sha = self._choose_tables(coded[0], infos[0], delta) if version == 2 else None
        tables = self._encoder_tables(version, tables_sha)
        streams: list[bytes] = []
        for c, info in enumerate(infos):
            crop = self._linear_trial_crop(coded[c].shape, version)
            guidance_crop = crop if version >= 5 else self._trial_crop(coded[c].shape)  # format 5: one crop
            unguided_bytes = None  # the guidance crop's size as chosen, when the linear trial coded that crop
            if version >= 3:
                info.linear, chosen_bytes = trials.fitted_linear_predictor(coded[c], info, delta, crop,
                                                                           plain_trial.get(c), tables,
                                                                           parity=version >= 4, wide=version >= 5)
                if crop == guidance_crop:
                    unguided_bytes = chosen_bytes
            plane_tables = self._plane_tables(tables, info)
            info.guided = trials.guidance_helps(coded[c], side[c], info, delta, plane_tables, guidance_crop, patch,
                                                self.config.guidance_min_gain if version >= 4 else 0.0,
                                                unguided_bytes)
            guide = side[c] if info.guided else None
            strips = strip_count(*coded[c].shape, self.config.strip_pixels)
            if version >= 4:
                stream, values, info.value_classes = encode_plane_v4(
                    coded[c], info.lo, info.hi, delta, guide, patch,
                    self._plane_tables(tables, info, parity_context=version >= 6), strips,
                    choose_bands=coded[c].size >= self.config.band_min_pixels,
                    band_min_gain=self.config.band_min_gain)
            elif version == 3:
                stream, values = encode_plane_strips(coded[c], info.lo, info.hi, delta, guide, patch, plane_tables,
                                                     strips)
            else:
                stream, values = encode_plane(coded[c], info.lo, info.hi, delta, guide, patch, plane_tables)
            if version >= 5:
                info.predictor_weights = plane_predictor_weights(self.config.predictor_weights, info.guided,
                                                                 info.linear is not None)
            if decoded is not None:
                decoded[c] = values
            streams.append(stream)
        if mode == "lossless":
            return streams, infos, colour, tables_sha, pixels.pixel_sha256(array), math.inf
        out = pixels.from_planes(decoded, layout)
        psnr = metrics.psnr(array, out, layout.bits_stored)
        return streams, infos, colour, tables_sha, pixels.pixel_sha256(out), psnr

    def _latents(self, planes: np.ndarray, layout: pixels.PixelLayout, mode: str, quality: float,
                 rank: int | None, preview_step: float | None = None):
        """Quantised latents and their integer reconstruction, as the decoder will see them.

        Returns (latent planes, colour transform, rank, step, latents, reconstruction)."""
        core = self.model.core
        maxval = layout.maxval
        if mode == "lossy":
            rank = core.check_rank(rank or core.max_rank)
            step = quality_to_step(quality)
        else:
            rank = core.check_rank(rank or min(self.config.preview_rank, core.max_rank))
            step = self._preview_step(planes, layout, preview_step)
        # lossy colour images: decorrelate colours before the latents (as JPEG 2000 does)
        colour = "ycocg" if mode == "lossy" and layout.channels == 3 else "none"
        latent_planes = pixels.ycocg_forward(planes, maxval) if colour == "ycocg" else planes
        deadzone = self.config.lossy_deadzone if mode == "lossy" else 0.0
        latents = self._project(latent_planes, maxval, rank, step, deadzone)
        return latent_planes, colour, rank, step, latents, self._reconstruct(latents, step, layout)

    def _preview_step(self, planes: np.ndarray, layout: pixels.PixelLayout, preview_step: float | None) -> float:
        """An archival mode's latent step: a fraction of the planes' span, at least one grey level."""
        span = int(planes.max()) - int(planes.min())
        return max(1.0, (preview_step or self.config.preview_step) * span) / layout.maxval

    def refiner_inputs(self, array: np.ndarray, bits_stored: int, mode: str = "lossless",
                       quality: float | None = None) -> tuple[np.ndarray, np.ndarray, float, float]:
        """What the learned layers see for an image and what they should give back.

        Returns (reconstruction planes, target planes, latent step, rank fraction), the planes in
        the latent colour space. The training job builds its pairs here, so the refiner learns
        on exactly the decoder's inputs (the same quantised latents encode() stores).
        """
        layout = pixels.validate(array, bits_stored)
        mode, _, quality = self._check_mode(mode, 1 if mode == "near-lossless" else None, quality, layout)
        planes = pixels.to_planes(array, layout)
        target, _, rank, step, _, recon = self._latents(planes, layout, mode, quality, None)
        return recon, target, step, rank / self.model.core.max_rank

    def _check_mode(self, mode, max_error, quality, layout):
        if mode not in MODES:
            raise InvalidParameterError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        delta = 0
        if mode == "near-lossless":
            if max_error is None or isinstance(max_error, bool) or not isinstance(max_error, (int, np.integer)):
                raise InvalidParameterError(f"near-lossless needs an integer max_error >= 1, got {max_error!r}")
            delta = int(max_error)
            if not 1 <= delta <= layout.maxval // 2:
                raise InvalidParameterError(
                    f"max_error must be from 1 to {layout.maxval // 2} for {layout.bits_stored}-bit data, got {delta}"
                )
        elif max_error not in (None, 0):
            raise InvalidParameterError(f"max_error applies to near-lossless mode only (mode is {mode})")
        if quality is None:
            quality = self.config.default_quality
        lo, hi = QUALITY_RANGE
        if not isinstance(quality, (int, float, np.integer, np.floating)) or not lo <= float(quality) <= hi:
            raise InvalidParameterError(f"quality must be a number of dB from {lo:g} to {hi:g}, got {quality!r}")
        return mode, delta, float(quality)

    def _finish_preview(self, recon: np.ndarray, colour: str, maxval: int, step: float, rank: int) -> np.ndarray:
        """Latent reconstruction -> displayable planes: learned refinement, then colours back."""
        fraction = rank / self.model.core.max_rank
        refined = refine_planes(self.model.refiner, recon, maxval, step, fraction, self.device)
        return pixels.ycocg_inverse(refined, maxval) if colour == "ycocg" else refined

    def _coder_tables(self):
        """The trained context tables the model came with (weights/ attaches them on load): the
        codec looks them up by digest, it never opens their files."""
        if self.model.coder_tables is None:
            raise WeightsError("this codec's model came without the coder's trained context tables (format 2): "
                               "load the model through the weight store or an archive (weights/)")
        return self.model.coder_tables

    def _candidate_tables(self) -> list[str]:
        return self._coder_tables().candidates()

    def _choose_tables(self, plane: np.ndarray, info: PlaneInfo, delta: int) -> str:
        """Format 2: the shipped table set that codes this image's trial crop smallest (the
        trained context quantisation helps CT most; MR and radiographs often prefer format 1's
        activity buckets, with the same trained linear predictor)."""
        crop = self._trial_crop(plane.shape)
        best, best_len = None, None
        for sha in self._candidate_tables():
            blob, _ = encode_plane(plane[crop], info.lo, info.hi, delta, None, self.model.core.patch,
                                   self.context_tables(sha))
            if best_len is None or len(blob) < best_len:
                best, best_len = sha, len(blob)
        return best

    def _linear_trial_crop(self, shape: tuple[int, int], version: int = 4) -> tuple[slice, slice]:
        smallest, share = (V5_TRIAL_MIN_SIZE, V5_TRIAL_SHARE) if version >= 5 else (LINEAR_TRIAL_MIN_SIZE, 16)
        side = min(self.config.linear_trial_size, max(smallest, math.isqrt(shape[0] * shape[1] // share)))
        return self._trial_crop(shape, side)

    def _trial_crop(self, shape: tuple[int, int], size: int | None = None) -> tuple[slice, slice]:
        return trials.trial_crop(shape, size or self.config.guidance_trial_size, self.model.core.patch)

    def context_tables(self, sha256: str | None) -> ContextTables:
        """The residual coder's tables: format 1's built-in ones (None) or trained ones by digest."""
        if sha256 is None:
            return V1_TABLES
        return self._coder_tables().get(sha256)

    def _version_tables(self, version: int, tables_sha: str | None) -> ContextTables:
        """The residual coder's tables of a format version (before each plane's own additions)."""
        if version >= 4:
            return V5_TABLES if version >= 5 else V4_TABLES
        return V3_TABLES if version == 3 else self.context_tables(tables_sha)

    def _encoder_tables(self, version: int, tables_sha: str | None) -> ContextTables:
        """The tables the encoder codes (and tries) a format version's planes with: format 5's
        with the configured predictor weights, which each plane's header then records."""
        tables = self._version_tables(version, tables_sha)
        if version >= 5:
            tables = dataclasses.replace(tables, weight_table=blend.weight_table(self.config.predictor_weights))
        return tables

    @staticmethod
    def _plane_tables(tables: ContextTables, info: PlaneInfo, parity_context: bool = False) -> ContextTables:
        """The residual coder's tables for one plane: with its own linear predictor (format 3),
        intensity bands (format 4), predictor weights (format 5) and, with `parity_context`
        (format 6), histograms per position parity where its linear predictor has weights per
        parity. The encoder's trials leave parity_context off (format 5's choices, from
        crops too small for 4x the histograms to learn) and code the plane with it on."""
        if info.linear is not None:  # one weight set for all activity classes, or (format 4) one per parity
            lin = info.linear if info.linear.ndim == 2 else as_class_table(info.linear)
            tables = dataclasses.replace(tables, lin=lin)
            if parity_context and lin.shape[0] == cm.LIN_PARITY_CLASSES:
                tables = with_parity_context(tables)
        if info.predictor_weights is not None:
            tables = dataclasses.replace(tables, weight_table=blend.weight_table(info.predictor_weights))
        return with_value_classes(tables, info.value_classes)

    # ---------------------------------------------------------------- decode
    def decode(self, enc: EncodedImage, preview: bool = False, max_side: int | None = None,
               threads: int | None = None) -> np.ndarray:
        """Decode to the original shape and dtype; preview=True uses the latents alone.

        `threads` decodes the image's independent residual streams (its planes, and format 3's
        strips of each plane) at once: None is threads.default_threads() (one per available
        core, at most 8 and $OMP_NUM_THREADS), 1 is serial; the pixels are the same for any count.

        `max_side` (previews only) gives a thumbnail/viewport straight from the latents: the
        integer reconstruction box-averaged down by the smallest integer factor that fits,
        without the refiner (its detail is finer than the averaging).
        """
        if max_side is not None:
            return self._small_preview(enc, max_side)
        if enc.model_sha256 != self.model.sha256:
            raise WeightsError(
                f"image was encoded with model {enc.model_sha256[:12]}..., this codec holds "
                f"{self.model.sha256[:12]}...: load the matching model"
            )
        layout = enc.layout
        if not (preview or enc.mode == "lossy" or any(info.guided for info in enc.planes)):
            # nothing in the residual depends on the latents (most CT and MR): skip them. Their
            # stream is then not decoded here; the image's CRC-32 covers its bytes, the pixel
            # digest every returned pixel, and previews decode the latents on their own
            return self._decode_exact(enc, None, threads)
        recon = self._decode_latents(enc)
        if preview or enc.mode == "lossy":
            self._check_adapter(enc)
            if enc.mode == "lossy" and pixels.pixel_sha256(recon) != enc.decoded_sha256:
                raise ChecksumMismatchError("lossy latents do not decode to the recorded reconstruction digest")
            if not self._refines(enc):
                planes = pixels.ycocg_inverse(recon, layout.maxval) if enc.colour_transform == "ycocg" else recon
                return pixels.from_planes(planes, layout)
            planes = self._finish_preview(recon, enc.colour_transform, layout.maxval, enc.latent_step, enc.rank)
            return pixels.from_planes(planes, layout)
        return self._decode_exact(enc, recon, threads)

    def _decode_exact(self, enc: EncodedImage, recon: np.ndarray | None, threads: int | None) -> np.ndarray:
        """Lossless / near-lossless decode; `recon` (the latent reconstruction) is needed only
        by guided planes. The result must match the digest recorded at encode time."""
        if len(enc.residual_streams) != len(enc.planes):
            raise CorruptStreamError(f"{enc.mode} image has {len(enc.residual_streams)} residual streams, "
                                     f"expected {len(enc.planes)}")
        planes = self._decode_residuals(enc, recon, threads)
        out = pixels.from_planes(planes, enc.layout)
        if pixels.pixel_sha256(out) != enc.decoded_sha256:
            raise ChecksumMismatchError(
                f"decoded {enc.mode} pixels do not match the SHA-256 recorded at encode time "
                "(damaged stream or wrong model)"
            )
        return out

    def _refines(self, enc: EncodedImage) -> bool:
        """Whether a latents-only decode runs the refiner (see cpu_preview_refine_max_pixels)."""
        return (enc.mode == "lossy" or self.device != "cpu"
                or enc.num_pixels <= self.config.cpu_preview_refine_max_pixels)

    def _small_preview(self, enc: EncodedImage, max_side: int) -> np.ndarray:
        if isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer)) or max_side < 1:
            raise InvalidParameterError(f"max_side must be a positive integer, got {max_side!r}")
        if enc.model_sha256 != self.model.sha256:
            raise WeightsError(f"image was encoded with model {enc.model_sha256[:12]}..., this codec holds "
                               f"{self.model.sha256[:12]}...: load the matching model")
        layout = enc.layout
        factor = -(-max(layout.height, layout.width) // int(max_side))
        planes = self._decode_latents(enc)
        if factor > 1:
            planes = pixels.box_downsample(planes, factor)
        if enc.colour_transform == "ycocg":
            planes = pixels.ycocg_inverse(planes, layout.maxval)
        shape = planes.shape[1:] + layout.shape[2:]
        return pixels.from_planes(planes, dataclasses.replace(layout, shape=shape))

    def _check_adapter(self, enc: EncodedImage) -> None:
        """Lossy outputs depend on the learned layers, so they need the adapter they were made with."""
        if enc.adapter_sha256 != self.adapter_sha256:
            raise WeightsError(
                f"image was encoded with adapter {enc.adapter_sha256 or 'none'}, this codec has "
                f"{self.adapter_sha256 or 'none'}: use Codec.for_image(enc) or load that adapter"
            )

    def decode_many(self, encoded: list[EncodedImage], preview: bool = False, batch_size: int = 8) -> list[np.ndarray]:
        """Decode several images; previews of one shape go through the refiner together.

        Results equal one-at-a-time `decode` for lossless and near-lossless whatever the batch
        size (their decoding is integer-only); lossy/preview outputs may differ in the last
        grey level where float batching differs, which their PSNR already accounts for.
        """
        if batch_size < 1:
            raise InvalidParameterError(f"batch_size must be >= 1, got {batch_size}")
        out: list[np.ndarray | None] = [None] * len(encoded)
        latent_only = [k for k, e in enumerate(encoded) if (preview or e.mode == "lossy") and self._refines(e)]
        for k, enc in enumerate(encoded):
            if k not in latent_only:
                out[k] = self.decode(enc, preview=preview)
        by_shape: dict[tuple, list[int]] = {}
        for k in latent_only:
            by_shape.setdefault((encoded[k].layout.shape, encoded[k].layout.maxval), []).append(k)
        for k in latent_only:
            self._check_adapter(encoded[k])
        for (_, maxval), members in by_shape.items():
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                recons = [self._decode_latents(encoded[k]) for k in chunk]
                c = recons[0].shape[0]
                per_group = c // self.model.refiner.channels  # refiner batch entries per image
                steps = [encoded[k].latent_step for k in chunk for _ in range(per_group)]
                fractions = [encoded[k].rank / self.model.core.max_rank for k in chunk for _ in range(per_group)]
                refined = refine_planes(self.model.refiner, np.concatenate(recons), maxval, steps, fractions,
                                        self.device)
                for n, k in enumerate(chunk):
                    planes = refined[n * c : (n + 1) * c]
                    if encoded[k].colour_transform == "ycocg":
                        planes = pixels.ycocg_inverse(planes, maxval)
                    out[k] = pixels.from_planes(planes, encoded[k].layout)
        return out  # type: ignore[return-value]

    def _decode_latents(self, enc: EncodedImage) -> np.ndarray:
        layout = enc.layout
        core = self.model.core
        lo, hi = enc.latent_range
        if not (-LATENT_LIMIT <= lo <= hi <= LATENT_LIMIT) or not 1 <= enc.rank <= core.max_rank:
            raise CorruptStreamError("encoded image has latents out of range")
        if not 0 < enc.latent_step <= 1e3 or layout.channels % core.channels:
            raise CorruptStreamError("encoded image has an invalid latent step or channel count")
        hp, wp = lowrank.grid_shape(layout.height, layout.width, core.patch)
        groups = layout.channels // core.channels
        stacked = decode_plane(enc.latent_stream, groups * enc.rank * hp, wp, lo, hi)
        latents = stacked.reshape(groups, enc.rank, hp, wp).transpose(0, 2, 3, 1)
        return self._reconstruct(latents, enc.latent_step, layout)

    def _decode_residuals(self, enc: EncodedImage, recon: np.ndarray | None, threads: int | None = None) -> np.ndarray:
        layout = enc.layout
        side = None if recon is None else decoder_side_information(recon, enc.planes, enc.colour_transform)
        tables = self._version_tables(enc.version, enc.tables_sha256)
        planes = np.empty((len(enc.planes), layout.height, layout.width), dtype=np.int64)
        patch = self.model.core.patch

        def piece_task(c: int, info: PlaneInfo, plane_tables: ContextTables, r0: int, r1: int, stream: bytes):
            guide = side[c][r0:r1] if info.guided else None
            return lambda: decode_plane(stream, r1 - r0, layout.width, info.lo, info.hi,
                                        enc.max_error, guide, patch, plane_tables)

        # every plane (format 3: every strip of every plane) is an independent stream: decode
        # them on `threads` threads, each into its own rows
        pieces = []
        for c, (info, stream) in enumerate(zip(enc.planes, enc.residual_streams)):
            plane_tables = self._plane_tables(tables, info, parity_context=enc.version >= 6)  # one per plane
            strips = split_strips(stream, layout.height, patch) if enc.version >= 3 else [(0, layout.height, stream)]
            pieces += [(c, r0, r1, piece_task(c, info, plane_tables, r0, r1, blob)) for r0, r1, blob in strips]
        for (c, r0, r1, _), rows in zip(pieces, run_all([task for *_, task in pieces], threads)):
            planes[c, r0:r1] = rows
        for c, info in enumerate(enc.planes):
            if info.remap is not None:
                planes[c] = info.remap[planes[c]]
        if enc.colour_transform == "rct":
            planes = pixels.rct_inverse(planes)
        return planes

    # ---------------------------------------------------------------- latents
    def _project(self, planes: np.ndarray, maxval: int, rank: int, step: float, deadzone: float) -> np.ndarray:
        """(groups, Hp, Wp, rank): each group is `core.channels` consecutive planes."""
        g = self.model.core.channels
        return np.stack([
            lowrank.project(planes[i : i + g], self.model.core, maxval, rank, step, deadzone)
            for i in range(0, planes.shape[0], g)
        ])

    def _reconstruct(self, latents: np.ndarray, step: float, layout: pixels.PixelLayout) -> np.ndarray:
        g = self.model.core.channels
        return np.concatenate([
            lowrank.reconstruct(lat, self.model.core, layout.maxval, step, g, layout.height, layout.width,
                                None if self.device == "cpu" else self.device)
            for lat in latents
        ])
