"""PPO math for RLHF, engine-agnostic (InstructGPT / DeepSpeed-Chat step 3; the paper's §2 pipeline).

Pure functions on tensors, so every placement strategy and every test uses the same code:

- :func:`token_logprobs`: log pi(a_t | s_t) of the taken tokens from a causal LM's logits.
- :func:`kl_shaped_rewards`: per-token reward ``-beta (log pi - log pi_ref)`` plus the clipped
  sequence score on the last response token (DeepSpeed-Chat ``compute_rewards``).
- :func:`gae`: generalised advantage estimation over the response tokens, respecting the mask
  (tokens after EOS are terminal).
- :func:`actor_loss`: clipped surrogate objective (PPO-clip).
- :func:`critic_loss`: clipped value loss ``0.5 max((V-R)^2, (V_clip-R)^2)``.

Every loss takes an optional ``normalizer``: by default the number of unmasked tokens of the
batch it sees; a data-parallel shard passes the token count of the whole mini-batch instead, so
that summing shard losses gives exactly the single-device loss (placement changes speed, not math).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "actor_loss",
    "critic_loss",
    "gae",
    "kl_shaped_rewards",
    "masked_mean",
    "token_logprobs",
    "whiten",
]


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"tensors must have the same shape, got {shapes}")


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)[..., tokens]``: logits ``[B, T, V]``, tokens ``[B, T]`` -> ``[B, T]``."""
    if logits.dim() != 3 or tokens.shape != logits.shape[:2]:
        raise ValueError(
            f"logits must be [B, T, V] and tokens [B, T], got {tuple(logits.shape)} and "
            f"{tuple(tokens.shape)}"
        )
    logp = F.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def masked_mean(
    x: torch.Tensor, mask: torch.Tensor, normalizer: float | None = None
) -> torch.Tensor:
    """``sum(x * mask) / normalizer`` (default ``sum(mask)``, at least 1)."""
    _check_same_shape(x=x, mask=mask)
    n = mask.sum() if normalizer is None else torch.as_tensor(normalizer, dtype=x.dtype)
    return (x * mask).sum() / torch.clamp(n, min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Normalise ``x`` to zero mean (optional) and unit variance over the unmasked entries."""
    _check_same_shape(x=x, mask=mask)
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def kl_shaped_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    *,
    kl_coef: float,
    clip_reward: float | None = 5.0,
) -> torch.Tensor:
    """Per-token rewards ``r_t = -kl_coef (log pi_t - log pi_ref_t)``, plus ``clip(score)`` on the
    last unmasked response token (DeepSpeed-Chat ``compute_rewards``; InstructGPT Eq. (2)).

    Args:
        scores: ``[B]`` sequence-level reward-model (or rule) scores.
        logprobs, ref_logprobs, mask: ``[B, T]`` over response tokens; mask is 1 for real tokens
            (a prefix: generation stops at EOS).
    """
    _check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs, mask=mask)
    if scores.shape != logprobs.shape[:1]:
        raise ValueError(f"scores must be [B]={logprobs.shape[0]}, got {tuple(scores.shape)}")
    if kl_coef < 0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
    rewards = -kl_coef * (logprobs - ref_logprobs) * mask
    lengths = mask.sum(dim=1).long()
    if bool((lengths == 0).any()):
        raise ValueError("every sequence needs at least one response token (mask row of zeros)")
    s = scores.to(rewards.dtype)
    if clip_reward is not None:
        s = s.clamp(-clip_reward, clip_reward)
    rows = torch.arange(rewards.shape[0])
    rewards[rows, lengths - 1] += s
    return rewards


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over response tokens.

    ``delta_t = r_t + gamma m_{t+1} V_{t+1} - V_t``; ``A_t = delta_t + gamma lam m_{t+1} A_{t+1}``;
    returns ``R_t = A_t + V_t``. ``m`` is the response mask: the state after the last real token is
    terminal (its value is not bootstrapped), and masked positions get advantage and return 0.
    Returns ``(advantages, returns)``, both ``[B, T]``, detached.
    """
    _check_same_shape(rewards=rewards, values=values, mask=mask)
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must be in [0, 1], got {gamma}, {lam}")
    rewards, values, mask = rewards.detach(), values.detach(), mask.to(values.dtype)
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        if t + 1 < T:
            m_next = mask[:, t + 1]
            v_next = values[:, t + 1]
        else:
            m_next = torch.zeros_like(last)
            v_next = torch.zeros_like(last)
        delta = rewards[:, t] + gamma * m_next * v_next - values[:, t]
        last = delta + gamma * lam * m_next * last
        adv[:, t] = last
    adv = adv * mask
    returns = (adv + values) * mask
    return adv, returns


def actor_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_ratio: float = 0.2,
    normalizer: float | None = None,
) -> torch.Tensor:
    """PPO-clip policy loss: ``mean(max(-A r, -A clip(r, 1-eps, 1+eps)))``, ``r = exp(logp - old)``."""
    _check_same_shape(
        logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask
    )
    if clip_ratio <= 0:
        raise ValueError(f"clip_ratio must be > 0, got {clip_ratio}")
    ratio = torch.exp(logprobs - old_logprobs)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1.0 - clip_ratio, 1.0 + clip_ratio)
    return masked_mean(torch.maximum(pg1, pg2), mask, normalizer)


def critic_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_value: float = 0.2,
    normalizer: float | None = None,
) -> torch.Tensor:
    """Clipped value loss ``0.5 mean(max((V - R)^2, (clip(V, V_old +- eps) - R)^2))``."""
    _check_same_shape(values=values, old_values=old_values, returns=returns, mask=mask)
    if clip_value <= 0:
        raise ValueError(f"clip_value must be > 0, got {clip_value}")
    v_clip = torch.clamp(values, old_values - clip_value, old_values + clip_value)
    vf1 = (values - returns) ** 2
    vf2 = (v_clip - returns) ** 2
    return 0.5 * masked_mean(torch.maximum(vf1, vf2), mask, normalizer)
