"""The four RLHF models (§2 of the paper: actor, critic, reference, reward) and the prompts.

- actor / reference: Hugging Face causal LMs (a tiny random ``LlamaForCausalLM`` by default; the
  reference starts equal to the actor and stays frozen), or SmolLM2-135M-Instruct offline.
- critic: :class:`ValueModel`, an HF base model (decoder stack) with a scalar head per token;
  initialised from the reward model, as in DeepSpeed-Chat.
- reward: :class:`RewardModel` (the same body, score read at the last real token) or
  :class:`RuleReward`, a programmatic score (fraction of response tokens in a target word set) so
  that learning is visible in seconds.

Everything the default run needs is generated here: a synthetic corpus, a word-level tokenizer
trained on it with :func:`shared.lm.train_tokenizer`, and fixed-length prompts.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rlhf_place.config import ModelConfig, RLHFConfig

__all__ = [
    "ROLES",
    "TARGET_WORDS",
    "RewardModel",
    "RuleReward",
    "ValueModel",
    "build_role",
    "build_tokenizer",
    "make_prompts",
    "model_state_bytes",
]

#: The four models of the PPO pipeline, in the order every stage visits them.
ROLES = ("actor", "ref", "critic", "reward")

#: Words the rule reward pays for (the "preferred" behaviour the policy should learn).
TARGET_WORDS = ("good", "great", "kind", "happy", "bright", "calm", "warm", "clear")
_OTHER_WORDS = [
    "the",
    "a",
    "an",
    "of",
    "to",
    "in",
    "on",
    "at",
    "by",
    "for",
    "with",
    "from",
    "into",
    "over",
    "under",
    "about",
    "after",
    "before",
    "while",
    "cat",
    "dog",
    "bird",
    "fish",
    "tree",
    "river",
    "stone",
    "cloud",
    "house",
    "road",
    "car",
    "city",
    "field",
    "garden",
    "window",
    "door",
    "table",
    "chair",
    "book",
    "paper",
    "pen",
    "light",
    "sound",
    "rain",
    "snow",
    "wind",
    "sun",
    "moon",
    "star",
    "sky",
    "sea",
    "hill",
    "run",
    "walk",
    "jump",
    "sing",
    "read",
    "write",
    "open",
    "close",
    "build",
    "make",
    "take",
    "give",
    "find",
    "keep",
    "hold",
    "move",
    "red",
    "blue",
    "green",
    "small",
    "large",
    "old",
    "new",
    "slow",
    "fast",
    "cold",
    "hot",
    "soft",
    "hard",
    "long",
    "short",
    "high",
    "low",
    "one",
    "two",
    "three",
    "four",
    "five",
    "many",
    "few",
    "some",
    "every",
    "each",
    "other",
    "same",
    "different",
    "early",
    "late",
]

_SMOLLM2_PROMPTS = (
    "Write a short and friendly note to a neighbour who helped you carry boxes yesterday.",
    "Describe the weather on a quiet morning by the sea in a few simple sentences please.",
    "Explain to a child why the sky looks blue during the day and red in the evening.",
    "Give three tips for someone who wants to start reading more books every single week.",
    "Tell a very short story about a cat who finds a warm place to sleep in winter.",
    "Describe your favourite meal and why it makes you feel happy when you eat it.",
    "Write a polite message thanking a teacher for their patience during the whole year.",
    "Explain how a bicycle works to someone who has never seen one before in their life.",
)


def corpus(n_sentences: int = 400, seed: int = 0) -> list[str]:
    """A deterministic synthetic corpus over a fixed word list (target and other words)."""
    g = torch.Generator().manual_seed(seed)
    words = list(TARGET_WORDS) + _OTHER_WORDS
    idx = torch.randint(len(words), (n_sentences, 12), generator=g)
    out = [" ".join(words[i] for i in row.tolist()) for row in idx]
    out.append(" ".join(words))  # every word at least once
    return out


@functools.lru_cache(maxsize=1)
def _smollm2() -> tuple[Any, Any]:
    """SmolLM2-135M-Instruct and its tokenizer, read from the GGUF file once per process."""
    from shared.lm import load_smollm2

    return load_smollm2()


def build_tokenizer(cfg: ModelConfig) -> Any:
    """The run's tokenizer: word-level, trained locally (tiny) or SmolLM2's own."""
    if cfg.actor == "smollm2":
        return _smollm2()[1]
    from shared.lm import train_tokenizer

    tok = train_tokenizer(corpus(seed=cfg.seed), vocab_size=cfg.vocab_size, model="wordlevel")
    missing = [w for w in TARGET_WORDS if _single_id(tok, w) is None]
    if missing:
        raise ValueError(f"vocab_size={cfg.vocab_size} is too small for the target words {missing}")
    return tok


def _single_id(tokenizer: Any, word: str) -> int | None:
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        return None
    return int(ids[0])


def target_token_ids(tokenizer: Any) -> list[int]:
    """Token ids the rule reward pays for (each target word's ids, with and without a space)."""
    ids: set[int] = set()
    for w in TARGET_WORDS:
        for text in (w, " " + w):
            toks = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(toks) == 1 and toks[0] != tokenizer.unk_token_id:
                ids.add(int(toks[0]))
    if not ids:
        raise ValueError("the tokenizer has no single-token target word; the rule reward is void")
    return sorted(ids)


class ValueModel(nn.Module):
    """A transformer body (HF base model) with a linear head: one scalar per token ``[B, T]``."""

    def __init__(self, body: nn.Module, hidden_size: int) -> None:
        super().__init__()
        self.body = body
        self.v_head = nn.Linear(hidden_size, 1, bias=False)
        # HF's no-split list tells FSDP2 which blocks to shard one by one
        self._no_split_modules = list(getattr(body, "_no_split_modules", None) or [])

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = self.body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.v_head(h).squeeze(-1)


class RewardModel(ValueModel):
    """Scalar reward per sequence: the head's output at the last attended token."""

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        values = self(input_ids, attention_mask)
        last = attention_mask.long().sum(dim=1) - 1
        return values[torch.arange(values.shape[0], device=values.device), last]


class RuleReward:
    """Programmatic reward: the fraction of response tokens (before EOS) in a target set.

    Deterministic and free to compute; a policy that learns raises it (InstructGPT's reward model
    replaced by a rule, as rule-based RLHF rewards do)."""

    def __init__(self, target_ids: list[int]) -> None:
        if not target_ids:
            raise ValueError("RuleReward needs at least one target token id")
        self.target = torch.tensor(sorted(set(target_ids)), dtype=torch.long)

    def score(self, response: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
        hit = torch.isin(response, self.target.to(response.device)).to(torch.float32)
        m = response_mask.to(torch.float32)
        return (hit * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)


def _tiny_lm(
    tokenizer: Any, cfg: ModelConfig, *, layers: int, hidden: int, seed: int, max_pos: int
):
    from shared.lm import tiny_causal_lm

    return tiny_causal_lm(
        tokenizer,
        arch=cfg.arch,
        layers=layers,
        hidden=hidden,
        heads=cfg.heads,
        max_positions=max_pos,
        seed=seed,
    )


def build_role(role: str, rcfg: RLHFConfig, tokenizer: Any) -> nn.Module:
    """Build one of :data:`ROLES` deterministically (every process builds the same weights).

    actor and ref share a seed (the reference is the initial policy); the reward model has its own;
    the critic is a copy of the reward model when ``critic_from_reward`` (DeepSpeed-Chat)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are {ROLES}")
    cfg = rcfg.model
    max_pos = max(64, rcfg.prompt_len + rcfg.gen_len + 1)
    if role in ("actor", "ref"):
        if cfg.actor == "smollm2":
            model = copy.deepcopy(_smollm2()[0])  # actor and reference: separate copies
        else:
            model = _tiny_lm(
                tokenizer, cfg, layers=cfg.layers, hidden=cfg.hidden, seed=cfg.seed, max_pos=max_pos
            )
        if role == "ref":
            model.requires_grad_(False)
        return model.eval() if role == "ref" else model
    seed = cfg.seed + 1 if (role == "reward" or cfg.critic_from_reward) else cfg.seed + 2
    lm = _tiny_lm(
        tokenizer,
        cfg,
        layers=cfg.critic_layers,
        hidden=cfg.critic_hidden,
        seed=seed,
        max_pos=max_pos,
    )
    cls = RewardModel if role == "reward" else ValueModel
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1000)
        model = cls(lm.base_model, cfg.critic_hidden)
    if role == "reward":
        model.requires_grad_(False)
        model.eval()
    return model


def make_prompts(tokenizer: Any, rcfg: RLHFConfig, iteration: int) -> torch.Tensor:
    """The global prompt batch of one iteration, ``[batch_size, prompt_len]`` token ids.

    Deterministic in ``(seed, iteration)``, independent of placement, with no padding (every
    prompt has exactly ``prompt_len`` tokens)."""
    g = torch.Generator().manual_seed(rcfg.seed * 1_000_003 + iteration)
    if rcfg.model.actor == "smollm2":
        rows = []
        order = torch.randperm(len(_SMOLLM2_PROMPTS), generator=g).tolist()
        for i in range(rcfg.batch_size):
            text = _SMOLLM2_PROMPTS[order[i % len(order)]]
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) < rcfg.prompt_len:
                raise ValueError(f"prompt_len={rcfg.prompt_len} exceeds a built-in prompt's length")
            rows.append(ids[: rcfg.prompt_len])
        return torch.tensor(rows, dtype=torch.long)
    words = list(TARGET_WORDS) + _OTHER_WORDS
    ids = torch.tensor([_single_id(tokenizer, w) for w in words], dtype=torch.long)
    pick = torch.randint(len(words), (rcfg.batch_size, rcfg.prompt_len), generator=g)
    return ids[pick]


@dataclass(frozen=True)
class StateBytes:
    """Model-state bytes of one role on one rank (parameters, gradients, optimizer states)."""

    params: int
    grads: int
    optimizer: int

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer


def model_state_bytes(
    module: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> StateBytes:
    """Bytes of the parameters, gradients and optimizer states *held by this process* (a sharded
    parameter counts its local shard only; tied parameters count once)."""
    p_bytes = g_bytes = 0
    for p in module.parameters():  # shared (tied) parameters are listed once
        local = p.to_local() if hasattr(p, "to_local") else p
        p_bytes += local.numel() * local.element_size()
        if p.grad is not None:
            g = p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad
            g_bytes += g.numel() * g.element_size()
    o_bytes = 0
    states = getattr(optimizer, "state", None) if optimizer is not None else None
    if isinstance(states, dict):
        for state in states.values():
            for v in state.values():
                if isinstance(v, torch.Tensor) and v.dim() > 0:
                    loc = v.to_local() if hasattr(v, "to_local") else v
                    o_bytes += loc.numel() * loc.element_size()
    return StateBytes(p_bytes, g_bytes, o_bytes)
