"""The model a codec holds: the linear low-rank core plus the learned refiner, with the digest
of the file they came from. Reading and writing model files is weights/model_file.py's job;
the codec only ever receives this, never a path."""

from __future__ import annotations

from dataclasses import dataclass

from .lowrank import LowRankCore
from .refine import Refiner


@dataclass
class LowRankModel:
    core: LowRankCore
    refiner: Refiner
    sha256: str
    metadata: dict

    @property
    def channels(self) -> int:
        return self.core.channels
