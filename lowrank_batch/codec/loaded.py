"""The model a codec holds: the linear low-rank core plus the learned refiner, with the digest
of the file they came from. Reading and writing model files is weights/model_file.py's job;
the codec only ever receives this, never a path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .lowrank import LowRankCore
from .refine import Refiner
from .residual_coder import ContextTables


class CoderTables(Protocol):
    """The residual coder's trained context tables (format 2), by digest."""

    def candidates(self) -> list[str]: ...  # digests the encoder tries per image

    def get(self, sha256: str) -> ContextTables: ...  # raises WeightsError naming a missing digest


@dataclass
class LowRankModel:
    core: LowRankCore
    refiner: Refiner
    sha256: str
    metadata: dict
    coder_tables: CoderTables | None = None  # weights/ attaches the shipped ones when it loads a model file

    @property
    def channels(self) -> int:
        return self.core.channels
