"""Placement strategies (§3 of the paper): which device group hosts which model.

A :class:`Placement` names disjoint device groups (sets of ranks; on CPU a process stands in for a
device) and maps each of the four models, plus the *generator* (the runtime that samples
responses), to one group:

- **Flattening** (v3: *co-located*; DeepSpeed-Chat): one group of all devices hosts every model;
  the stages run one after another on all devices.
- **Interleaving**: models without mutual dependencies on exclusive groups, run concurrently:
  ``{actor, ref} | {critic, reward}`` (the canonical split; verl's split placement). Generation
  runs on the actor's group only.
- **Separation** (v3: *disaggregated*): generation on its own devices with a *shadow* actor whose
  weights are synchronised from the training actor every iteration; the four models train and
  infer on the other devices.

Any other mapping can be built directly (``Placement(world_size, groups, roles)``) and is
validated the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rlhf_place.models import ROLES

__all__ = ["PLACED", "STRATEGIES", "Placement", "PlacementError", "make_placement"]

#: What a placement assigns: the four models and the generation runtime.
PLACED = (*ROLES, "generator")
STRATEGIES = ("flatten", "interleave", "separate")


class PlacementError(ValueError):
    """A placement that cannot be executed (impossible groups, unassigned roles, ...)."""


@dataclass(frozen=True)
class Placement:
    """Groups of ranks and the group of every model.

    Args:
        world_size: devices (processes) available.
        groups: group name -> ranks (disjoint, non-empty, inside ``range(world_size)``).
        roles: every name in :data:`PLACED` -> a group name.
        strategy: a label (``"flatten"``, ``"interleave"``, ``"separate"`` or ``"custom"``).
    """

    world_size: int
    groups: Mapping[str, tuple[int, ...]]
    roles: Mapping[str, str]
    strategy: str = "custom"

    def __post_init__(self) -> None:
        w = self.world_size
        if not isinstance(w, int) or isinstance(w, bool) or w < 1:
            raise PlacementError(f"world_size must be a positive integer, got {w!r}")
        if not isinstance(self.groups, Mapping) or not self.groups:
            raise PlacementError("groups must be a non-empty mapping of name -> ranks")
        if len(self.groups) > w:
            raise PlacementError(
                f"impossible placement: {len(self.groups)} device groups need at least "
                f"{len(self.groups)} devices, but only {w} are available"
            )
        groups: dict[str, tuple[int, ...]] = {}
        owner: dict[int, str] = {}
        for name, ranks in self.groups.items():
            ranks = tuple(ranks)
            if not ranks:
                raise PlacementError(f"group {name!r} is empty")
            if any(not isinstance(r, int) or isinstance(r, bool) for r in ranks):
                raise PlacementError(f"group {name!r}: ranks must be integers, got {ranks}")
            bad = [r for r in ranks if not 0 <= r < w]
            if bad:
                raise PlacementError(
                    f"group {name!r} names ranks {bad} outside the {w} available devices"
                )
            if len(set(ranks)) != len(ranks):
                raise PlacementError(f"group {name!r} repeats a rank: {ranks}")
            for r in ranks:
                if r in owner:
                    raise PlacementError(
                        f"rank {r} is in groups {owner[r]!r} and {name!r}; groups must be disjoint"
                    )
                owner[r] = name
            groups[name] = tuple(sorted(ranks))
        roles = dict(self.roles)
        missing = [r for r in PLACED if r not in roles]
        if missing:
            raise PlacementError(f"no group assigned to {missing}; every one of {PLACED} needs one")
        extra = sorted(set(roles) - set(PLACED))
        if extra:
            raise PlacementError(f"unknown roles {extra}; roles are {PLACED}")
        for role, g in roles.items():
            if g not in groups:
                raise PlacementError(
                    f"{role} is placed on unknown group {g!r}; groups: {sorted(groups)}"
                )
        idle = sorted(set(range(w)) - set(owner))
        if idle:
            raise PlacementError(
                f"ranks {idle} belong to no group (every device must host a model)"
            )
        unused = sorted(set(groups) - set(roles.values()))
        if unused:
            raise PlacementError(f"groups {unused} host no model")
        # plain dicts (picklable, sent to every process); the dataclass itself is frozen
        object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "roles", roles)

    # ------------------------------------------------------------------ queries

    def ranks_of(self, role: str) -> tuple[int, ...]:
        """The ranks hosting ``role`` (one of :data:`PLACED`)."""
        if role not in self.roles:
            raise KeyError(f"unknown role {role!r}")
        return self.groups[self.roles[role]]

    def roles_on(self, rank: int) -> tuple[str, ...]:
        """The roles ``rank`` hosts, in :data:`PLACED` order."""
        return tuple(r for r in PLACED if rank in self.ranks_of(r))

    @property
    def separated(self) -> bool:
        """True when generation runs on devices other than the training actor's (shadow actor)."""
        return self.roles["generator"] != self.roles["actor"]

    def describe(self) -> str:
        parts = []
        for g, ranks in self.groups.items():
            hosted = [r for r in PLACED if self.roles[r] == g]
            parts.append(f"{g}={list(ranks)}:{'+'.join(hosted)}")
        return f"{self.strategy}(" + ", ".join(parts) + ")"

    def to_dict(self) -> dict:
        return {
            "strategy": self.strategy,
            "world_size": self.world_size,
            "groups": {k: list(v) for k, v in self.groups.items()},
            "roles": dict(self.roles),
        }

    # ------------------------------------------------------------------ presets

    @classmethod
    def flatten(cls, world_size: int) -> Placement:
        """All four models (and generation) on all devices (DeepSpeed-Chat)."""
        return cls(
            world_size,
            {"all": tuple(range(world_size))},
            dict.fromkeys(PLACED, "all"),
            "flatten",
        )

    @classmethod
    def interleave(cls, world_size: int, actor_devices: int | None = None) -> Placement:
        """``{actor, ref, generator}`` on the first ``actor_devices`` ranks, ``{critic, reward}``
        on the rest (default: half, rounded up)."""
        if world_size < 2:
            raise PlacementError(
                f"impossible placement: interleaving needs 2 device groups, only {world_size} device"
            )
        a = (world_size + 1) // 2 if actor_devices is None else actor_devices
        if not 1 <= a < world_size:
            raise PlacementError(
                f"actor_devices must be in [1, {world_size - 1}] for {world_size} devices, got {a}"
            )
        return cls(
            world_size,
            {"A": tuple(range(a)), "B": tuple(range(a, world_size))},
            {"actor": "A", "ref": "A", "generator": "A", "critic": "B", "reward": "B"},
            "interleave",
        )

    @classmethod
    def separate(cls, world_size: int, gen_devices: int | None = None) -> Placement:
        """Generation (shadow actor) on the last ``gen_devices`` ranks (default: half, rounded
        down), the four models on the others."""
        if world_size < 2:
            raise PlacementError(
                f"impossible placement: separation needs 2 device groups, only {world_size} device"
            )
        g = world_size // 2 if gen_devices is None else gen_devices
        if not 1 <= g < world_size:
            raise PlacementError(
                f"gen_devices must be in [1, {world_size - 1}] for {world_size} devices, got {g}"
            )
        t = world_size - g
        return cls(
            world_size,
            {"train": tuple(range(t)), "gen": tuple(range(t, world_size))},
            {
                "actor": "train",
                "ref": "train",
                "critic": "train",
                "reward": "train",
                "generator": "gen",
            },
            "separate",
        )


def make_placement(strategy: str, world_size: int, split: int | None = None) -> Placement:
    """A preset by name; ``split`` is the actor group size (interleave) or generation devices
    (separate)."""
    if strategy == "flatten":
        if split is not None:
            raise PlacementError("flatten takes no split")
        return Placement.flatten(world_size)
    if strategy == "interleave":
        return Placement.interleave(world_size, split)
    if strategy == "separate":
        return Placement.separate(world_size, split)
    raise PlacementError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
