"""Which model built a set of vectors. Kept free of torch so that index administration starts fast."""

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    version: str
    dimension: int

    def __str__(self) -> str:
        return f"{self.name}:{self.version} ({self.dimension}-d)"
