"""PaRO strategies in the (parameters, gradients, optimizer states) notation (paper §3, "P_{p g os}").

Each letter is a partitioning level:

- ``N``: no partitioning, every rank holds a full replica;
- ``I``: intra-group partitioning, sharded over the ``m`` ranks of a group, replicated across groups;
- ``G``: global partitioning, sharded over all ``n`` ranks.

Of the 27 strings, this package runs the 14 where the optimizer states are at least as finely
partitioned as both the parameters and the gradients (otherwise the update would need states it
does not hold, or re-gather gradients). That covers PaRO's NIG, IIG, IGG, ING, NII and the
existing systems: NNN (DDP), NNG (ZeRO-1), NGG (ZeRO-2), GGG (ZeRO-3, FSDP FULL_SHARD), III
(MiCS, FSDP HYBRID_SHARD).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

__all__ = [
    "ALIASES",
    "LEVELS",
    "PAPER_STRATEGIES",
    "SUPPORTED",
    "Strategy",
]

LEVELS = ("N", "I", "G")
_FINENESS = {"N": 0, "I": 1, "G": 2}

#: Existing systems, as strategy strings (dossier §3.2).
ALIASES: dict[str, str] = {
    "DDP": "NNN",
    "ZERO1": "NNG",
    "ZERO-1": "NNG",
    "ZERO2": "NGG",
    "ZERO-2": "NGG",
    "ZERO3": "GGG",
    "ZERO-3": "GGG",
    "FSDP": "GGG",
    "MICS": "III",
    "HSDP": "III",
    "HYBRID_SHARD": "III",
    "HYBRID_SHARD_ZERO2": "NII",
}

_SYSTEM_NAME = {
    "NNN": "DDP",
    "NNG": "ZeRO-1",
    "NGG": "ZeRO-2",
    "GGG": "ZeRO-3",
    "III": "MiCS/HSDP",
    "NII": "FSDP hybrid ZeRO-2",
    "NIG": "PaRO NIG",
    "IIG": "PaRO IIG",
    "IGG": "PaRO IGG",
    "ING": "PaRO ING",
}

#: The strategies the issue and the paper name (PaRO's and the ZeRO-equivalent ones).
PAPER_STRATEGIES = ("NNN", "NNG", "NGG", "GGG", "III", "NII", "NIG", "IIG", "IGG", "ING")


@dataclass(frozen=True)
class Strategy:
    """A partitioning level for parameters (``p``), gradients (``g``) and optimizer states (``os``)."""

    p: str
    g: str
    os: str

    def __post_init__(self) -> None:
        for field_name, level in (("p", self.p), ("g", self.g), ("os", self.os)):
            if level not in LEVELS:
                raise ValueError(
                    f"strategy level {field_name}={level!r} must be one of N (replicated), "
                    "I (intra-group sharded) or G (globally sharded)"
                )
        if _FINENESS[self.os] < max(_FINENESS[self.p], _FINENESS[self.g]):
            raise ValueError(
                f"strategy {self.name}: optimizer states ({self.os}) must be partitioned at least as "
                f"finely as parameters ({self.p}) and gradients ({self.g}); order N < I < G. "
                f"Supported: {', '.join(SUPPORTED)}"
            )

    @classmethod
    def parse(cls, spec: str | Strategy) -> Strategy:
        """``"NIG"``, ``"nig"`` or an alias (``"ZeRO-3"``, ``"DDP"``, ``"HSDP"``) -> :class:`Strategy`."""
        if isinstance(spec, Strategy):
            return spec
        if not isinstance(spec, str):
            raise TypeError(f"strategy must be a string like 'NIG', got {type(spec).__name__}")
        key = spec.strip().upper()
        key = ALIASES.get(key, key)
        if len(key) != 3:
            raise ValueError(
                f"strategy {spec!r} is not three letters from N/I/G (parameters, gradients, "
                f"optimizer states) nor a known alias ({', '.join(sorted(ALIASES))})"
            )
        return cls(key[0], key[1], key[2])

    @property
    def name(self) -> str:
        return f"{self.p}{self.g}{self.os}"

    @property
    def system(self) -> str:
        """The system this strategy corresponds to (``"ZeRO-3"``), or the string itself."""
        return _SYSTEM_NAME.get(self.name, self.name)

    def __str__(self) -> str:
        return self.name


def _supported() -> tuple[str, ...]:
    out = []
    for p, g, o in product(LEVELS, repeat=3):
        if _FINENESS[o] >= max(_FINENESS[p], _FINENESS[g]):
            out.append(p + g + o)
    return tuple(out)


#: Every strategy string the engine runs (14 of the 27).
SUPPORTED = _supported()
