"""Configuration of one RLHF (PPO) run: the models, the PPO hyper-parameters and the batch shape.

Frozen dataclasses validated in ``__post_init__``; the CLI flags map onto their fields. Defaults
follow DeepSpeed-Chat step 3 where the paper defers to it (gamma = 1, lambda = 0.95, clip 0.2,
reward clip 5); for tiny random models learning a rule reward in seconds we use a larger learning
rate (1e-2), two PPO epochs, KL coefficient 0.05 and whitened advantages (as TRL does).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["ModelConfig", "PPOConfig", "RLHFConfig"]

ARCHS = ("llama", "gpt2", "qwen2")
REWARDS = ("rule", "model")
ACTORS = ("tiny", "smollm2")


def _positive(name: str, value: Any, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or (value < 0 if allow_zero else value <= 0):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a number {bound}, got {value!r}")


def _int(name: str, value: Any, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """The four models. ``actor="tiny"``: randomly initialised HF models of ``arch`` with a locally
    trained word-level tokenizer (the embedded default). ``actor="smollm2"``: SmolLM2-135M-Instruct
    (offline GGUF) as actor and reference; critic and reward stay tiny, on its tokenizer."""

    actor: str = "tiny"
    arch: str = "llama"
    layers: int = 2
    hidden: int = 64
    heads: int = 4
    critic_layers: int = 2
    critic_hidden: int = 64
    vocab_size: int = 128
    critic_from_reward: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.actor not in ACTORS:
            raise ValueError(f"actor must be one of {ACTORS}, got {self.actor!r}")
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        for name in ("layers", "hidden", "heads", "critic_layers", "critic_hidden"):
            _int(name, getattr(self, name))
        _int("vocab_size", self.vocab_size, 16)
        if self.hidden % self.heads or self.critic_hidden % self.heads:
            raise ValueError(
                f"hidden ({self.hidden}) and critic_hidden ({self.critic_hidden}) must be "
                f"divisible by heads ({self.heads})"
            )
        _int("seed", self.seed, 0)


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyper-parameters (DeepSpeed-Chat names in brackets)."""

    kl_coef: float = 0.05  # [init_kl_coef]; fixed (no adaptive controller)
    clip_reward: float = 5.0  # [clip_reward_value]
    gamma: float = 1.0
    lam: float = 0.95
    clip_ratio: float = 0.2  # [cliprange]
    clip_value: float = 0.2  # [cliprange_value]
    ppo_epochs: int = 2
    num_minibatches: int = 2
    actor_lr: float = 1e-2
    critic_lr: float = 5e-3
    whiten_advantages: bool = True
    temperature: float = 1.0

    def __post_init__(self) -> None:
        _positive("kl_coef", self.kl_coef, allow_zero=True)
        _positive("clip_reward", self.clip_reward)
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError(f"gamma and lam must be in [0, 1], got {self.gamma}, {self.lam}")
        _positive("clip_ratio", self.clip_ratio)
        _positive("clip_value", self.clip_value)
        _int("ppo_epochs", self.ppo_epochs)
        _int("num_minibatches", self.num_minibatches)
        _positive("actor_lr", self.actor_lr)
        _positive("critic_lr", self.critic_lr)
        _positive("temperature", self.temperature)


@dataclass(frozen=True)
class RLHFConfig:
    """One run: ``iterations`` PPO iterations on ``batch_size`` prompts of ``prompt_len`` tokens,
    ``gen_len`` sampled response tokens each."""

    model: ModelConfig = field(default_factory=ModelConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    reward: str = "rule"
    batch_size: int = 16
    prompt_len: int = 8
    gen_len: int = 8
    iterations: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.model, ModelConfig):
            raise TypeError(f"model must be a ModelConfig, got {type(self.model).__name__}")
        if not isinstance(self.ppo, PPOConfig):
            raise TypeError(f"ppo must be a PPOConfig, got {type(self.ppo).__name__}")
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {self.reward!r}")
        for name in ("batch_size", "prompt_len", "gen_len", "iterations"):
            _int(name, getattr(self, name))
        _int("seed", self.seed, 0)
        if self.batch_size % self.ppo.num_minibatches:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be divisible by num_minibatches "
                f"({self.ppo.num_minibatches})"
            )

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.ppo.num_minibatches

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RLHFConfig:
        if not isinstance(d, dict):
            raise TypeError(f"config must be a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known: {sorted(known)}")
        d = dict(d)
        if isinstance(d.get("model"), dict):
            d["model"] = ModelConfig(**d["model"])
        if isinstance(d.get("ppo"), dict):
            d["ppo"] = PPOConfig(**d["ppo"])
        return cls(**d)
