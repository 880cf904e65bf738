"""The three stages of a PPO RLHF iteration (§2 of the paper), as functions on one process's models.

1. Generation: :func:`generate` samples responses with a KV cache; every prompt has its own random
   stream (seeded by run, iteration and global prompt index), so the tokens do not depend on which
   device or batch generated them.
2. Inference ("make experience"): :func:`response_logprobs` (actor and reference),
   :func:`response_values` (critic), :func:`reward_scores` (reward model or rule); then
   :func:`assemble` (KL-shaped rewards, GAE).
3. Training: :func:`actor_step` and :func:`critic_step` (one optimizer step each on a slice of a
   mini-batch, with the mini-batch's global token count as normaliser).

The placement runtime (:mod:`rlhf_place.runtime`) decides which process runs which call on which
rows; the math is here once.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn

from rlhf_place import ppo
from rlhf_place.config import PPOConfig

__all__ = [
    "Experience",
    "actor_step",
    "assemble",
    "critic_step",
    "generate",
    "prompt_seeds",
    "response_logprobs",
    "response_mask",
    "response_values",
    "reward_scores",
]


def prompt_seeds(run_seed: int, iteration: int, indices: torch.Tensor) -> list[int]:
    """One sampling seed per prompt, from (run seed, iteration, global prompt index)."""
    return [int((run_seed * 7_919 + iteration) * 1_000_003 + int(i)) % (2**63 - 1) for i in indices]


def response_mask(response: torch.Tensor, eos_id: int | None) -> torch.Tensor:
    """1 for response tokens up to and including the first EOS, 0 after it."""
    if eos_id is None:
        return torch.ones_like(response, dtype=torch.float32)
    is_eos = (response == eos_id).long()
    after = torch.cumsum(is_eos, dim=1) - is_eos  # EOS tokens seen strictly before t
    return (after == 0).to(torch.float32)


@torch.no_grad()
def generate(
    model: nn.Module,
    prompts: torch.Tensor,
    seeds: list[int],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    eos_id: int | None = None,
    pad_id: int = 0,
) -> torch.Tensor:
    """Sample ``max_new_tokens`` tokens per prompt (``[b, Lp]`` -> ``[b, Lg]``) with a KV cache.

    Row ``i`` draws from its own ``torch.Generator`` seeded with ``seeds[i]``; after EOS a row is
    filled with ``pad_id``. Prompts carry no padding (fixed length), so no attention mask is needed.
    """
    if prompts.dim() != 2 or len(seeds) != prompts.shape[0]:
        raise ValueError(
            f"prompts must be [b, L] with one seed per row; got {tuple(prompts.shape)}"
        )
    b, device = prompts.shape[0], prompts.device
    gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    # transformers >= 5.2x names the KV cache ``cache``; older releases ``past_key_values``
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    out = model(input_ids=prompts, use_cache=True)
    past, logits = getattr(out, key), out.logits[:, -1]
    done = torch.zeros(b, dtype=torch.bool, device=device)
    tokens = []
    for t in range(max_new_tokens):
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        nxt = torch.cat([torch.multinomial(probs[i], 1, generator=gens[i]) for i in range(b)])
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        tokens.append(nxt)
        if eos_id is not None:
            done |= nxt == eos_id
        if t + 1 == max_new_tokens or bool(done.all()):
            break
        out = model(input_ids=nxt[:, None], use_cache=True, **{key: past})
        past, logits = getattr(out, key), out.logits[:, -1]
    response = torch.stack(tokens, dim=1)
    if response.shape[1] < max_new_tokens:
        pad = torch.full((b, max_new_tokens - response.shape[1]), pad_id, device=device)
        response = torch.cat([response, pad.to(response.dtype)], dim=1)
    return response


def response_logprobs(
    model: nn.Module, sequences: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int
) -> torch.Tensor:
    """log pi(response token | prefix) for every response position, ``[b, Lg]``."""
    logits = model(input_ids=sequences, attention_mask=attention_mask).logits
    return ppo.token_logprobs(logits[:, prompt_len - 1 : -1], sequences[:, prompt_len:])


def response_values(
    critic: nn.Module, sequences: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int
) -> torch.Tensor:
    """V(state before each response token), ``[b, Lg]``."""
    return critic(sequences, attention_mask)[:, prompt_len - 1 : -1].float().contiguous()


def reward_scores(
    reward: nn.Module | object,
    sequences: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_len: int,
) -> torch.Tensor:
    """Sequence scores ``[b]`` from a :class:`~rlhf_place.models.RewardModel` or a rule."""
    from rlhf_place.models import RuleReward

    if isinstance(reward, RuleReward):
        return reward.score(sequences[:, prompt_len:], attention_mask[:, prompt_len:])
    return reward.score(sequences, attention_mask).float()


@dataclass
class Experience:
    """One iteration's global batch after stage 2: every tensor has the full batch on its rows."""

    sequences: torch.Tensor  # [B, Lp+Lg]
    attention_mask: torch.Tensor  # [B, Lp+Lg]
    mask: torch.Tensor  # [B, Lg] response mask
    logprobs: torch.Tensor  # [B, Lg] actor (behaviour) log-probs
    ref_logprobs: torch.Tensor  # [B, Lg]
    values: torch.Tensor  # [B, Lg]
    scores: torch.Tensor  # [B]
    rewards: torch.Tensor  # [B, Lg]
    advantages: torch.Tensor  # [B, Lg]
    returns: torch.Tensor  # [B, Lg]

    def rows(self, sl: slice) -> Experience:
        return Experience(**{k: v[sl] for k, v in self.__dict__.items()})


def assemble(
    sequences: torch.Tensor,
    prompt_len: int,
    mask: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    values: torch.Tensor,
    scores: torch.Tensor,
    cfg: PPOConfig,
) -> Experience:
    """KL-shaped rewards and GAE advantages/returns for the whole batch (deterministic)."""
    rewards = ppo.kl_shaped_rewards(
        scores, logprobs, ref_logprobs, mask, kl_coef=cfg.kl_coef, clip_reward=cfg.clip_reward
    )
    adv, ret = ppo.gae(rewards, values, mask, gamma=cfg.gamma, lam=cfg.lam)
    if cfg.whiten_advantages:
        adv = ppo.whiten(adv, mask)
    ones = torch.ones(mask.shape[0], prompt_len, dtype=mask.dtype, device=mask.device)
    am = torch.cat([ones, mask], dim=1)
    return Experience(
        sequences, am.long(), mask, logprobs, ref_logprobs, values, scores, rewards, adv, ret
    )


def _update(model: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """zero_grad, backward, step; through the engine when it owns them (DeepSpeed)."""
    if callable(getattr(model, "backward", None)) and callable(getattr(model, "step", None)):
        model.backward(loss)
        model.step()
        return
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def actor_step(
    actor: nn.Module,
    optimizer: torch.optim.Optimizer,
    exp: Experience,
    prompt_len: int,
    cfg: PPOConfig,
    *,
    normalizer: float,
    grad_scale: float = 1.0,
) -> float:
    """One PPO-clip update on ``exp``'s rows; returns this slice's share of the mini-batch loss.

    ``grad_scale`` undoes a data-parallel engine's gradient averaging over its group (pass the
    group size), so the update equals the single-device update on the whole mini-batch."""
    logp = response_logprobs(actor, exp.sequences, exp.attention_mask, prompt_len)
    loss = ppo.actor_loss(
        logp,
        exp.logprobs,
        exp.advantages,
        exp.mask,
        clip_ratio=cfg.clip_ratio,
        normalizer=normalizer,
    )
    _update(actor, optimizer, loss * grad_scale)
    return float(loss.detach())


def critic_step(
    critic: nn.Module,
    optimizer: torch.optim.Optimizer,
    exp: Experience,
    prompt_len: int,
    cfg: PPOConfig,
    *,
    normalizer: float,
    grad_scale: float = 1.0,
) -> float:
    """One clipped value-loss update on ``exp``'s rows (see :func:`actor_step`)."""
    v = response_values(critic, exp.sequences, exp.attention_mask, prompt_len)
    loss = ppo.critic_loss(
        v, exp.values, exp.returns, exp.mask, clip_value=cfg.clip_value, normalizer=normalizer
    )
    _update(critic, optimizer, loss * grad_scale)
    return float(loss.detach())
