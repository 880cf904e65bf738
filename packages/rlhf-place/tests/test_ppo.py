"""PPO math against hand-computed values and an independent per-sequence implementation."""

import math

import pytest
import torch
from rlhf_place import ppo


def test_token_logprobs_hand_values():
    logits = torch.tensor([[[0.0, math.log(3.0)], [math.log(2.0), 0.0]]])  # [1, 2, 2]
    tokens = torch.tensor([[1, 0]])
    out = ppo.token_logprobs(logits, tokens)
    assert torch.allclose(out, torch.tensor([[math.log(3 / 4), math.log(2 / 3)]]))
    with pytest.raises(ValueError, match=r"\[B, T, V\]"):
        ppo.token_logprobs(logits[0], tokens)


def test_kl_shaped_rewards_hand_values():
    logp = torch.tensor([[-1.0, -2.0, -3.0]])
    ref = torch.tensor([[-1.5, -2.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    r = ppo.kl_shaped_rewards(torch.tensor([10.0]), logp, ref, mask, kl_coef=0.1, clip_reward=5.0)
    # -0.1 * 0.5 on token 0; clip(10) = 5 on the last real token (1); nothing after EOS
    assert torch.allclose(r, torch.tensor([[-0.05, 5.0, 0.0]]))
    r2 = ppo.kl_shaped_rewards(torch.tensor([10.0]), logp, ref, mask, kl_coef=0.0, clip_reward=None)
    assert torch.allclose(r2, torch.tensor([[0.0, 10.0, 0.0]]))
    with pytest.raises(ValueError, match="at least one response token"):
        ppo.kl_shaped_rewards(torch.tensor([1.0]), logp, ref, torch.zeros(1, 3), kl_coef=0.1)
    with pytest.raises(ValueError, match="scores"):
        ppo.kl_shaped_rewards(torch.ones(2), logp, ref, mask, kl_coef=0.1)


def test_gae_hand_values():
    r = torch.tensor([[1.0, 2.0, 3.0]])
    v = torch.tensor([[0.5, 1.0, 1.5]])
    adv, ret = ppo.gae(r, v, torch.ones(1, 3), gamma=0.9, lam=0.8)
    # d2 = 3 - 1.5 = 1.5; d1 = 2 + .9*1.5 - 1 = 2.35; d0 = 1 + .9*1 - .5 = 1.4
    # A2 = 1.5; A1 = 2.35 + .72*1.5 = 3.43; A0 = 1.4 + .72*3.43 = 3.8696
    assert torch.allclose(adv, torch.tensor([[3.8696, 3.43, 1.5]]))
    assert torch.allclose(ret, torch.tensor([[4.3696, 4.43, 3.0]]))
    # the state after the last real token is terminal: no bootstrap from V_2
    adv, ret = ppo.gae(r, v, torch.tensor([[1.0, 1.0, 0.0]]), gamma=0.9, lam=0.8)
    assert torch.allclose(adv, torch.tensor([[2.12, 1.0, 0.0]]))
    assert torch.allclose(ret, torch.tensor([[2.62, 2.0, 0.0]]))


def _gae_reference(r, v, length, gamma, lam):
    """Textbook GAE on one truncated sequence, in plain Python."""
    out = [0.0] * len(r)
    nxt = 0.0
    for t in reversed(range(length)):
        v_next = v[t + 1] if t + 1 < length else 0.0
        delta = r[t] + gamma * v_next - v[t]
        nxt = delta + gamma * lam * nxt
        out[t] = nxt
    return out


def test_gae_matches_reference_on_random_batches():
    g = torch.Generator().manual_seed(0)
    B, T = 6, 9
    r, v = torch.randn(B, T, generator=g), torch.randn(B, T, generator=g)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    adv, ret = ppo.gae(r, v, mask, gamma=0.97, lam=0.9)
    for i in range(B):
        ref = _gae_reference(r[i].tolist(), v[i].tolist(), int(lengths[i]), 0.97, 0.9)
        assert torch.allclose(adv[i], torch.tensor(ref), atol=1e-5)
        assert torch.allclose(ret[i], (torch.tensor(ref) + v[i]) * mask[i], atol=1e-5)


def test_actor_loss_hand_values():
    logp = torch.tensor([[0.5, -0.5, 0.0, 3.0]])
    old = torch.zeros(1, 4)
    adv = torch.tensor([[1.0, -1.0, 2.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss = ppo.actor_loss(logp, old, adv, mask, clip_ratio=0.2)
    # max(-1*e^.5, -1*1.2) = -1.2; max(e^-.5, 0.8) = 0.8; -2; masked token ignored
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 2.0) / 3, abs=1e-6)
    with pytest.raises(ValueError, match="clip_ratio"):
        ppo.actor_loss(logp, old, adv, mask, clip_ratio=0.0)
    with pytest.raises(ValueError, match="same shape"):
        ppo.actor_loss(logp, old[:, :3], adv, mask)


def test_critic_loss_hand_values():
    v = torch.tensor([[1.0, 2.0]])
    old = torch.tensor([[0.5, 2.0]])
    ret = torch.tensor([[2.0, 1.0]])
    loss = ppo.critic_loss(v, old, ret, torch.ones(1, 2), clip_value=0.2)
    # v_clip = [0.7, 2.0]; max((1-2)^2, (0.7-2)^2) = 1.69; max(1, 1) = 1; 0.5 * mean
    assert loss.item() == pytest.approx(0.5 * (1.69 + 1.0) / 2)


def test_shard_losses_sum_to_the_whole_batch_loss_and_gradient():
    """Data-parallel shards with the global token count as normaliser reproduce the full loss."""
    g = torch.Generator().manual_seed(1)
    B, T = 4, 5
    w = torch.randn(B, T, generator=g, requires_grad=True)
    old, adv = torch.randn(B, T, generator=g), torch.randn(B, T, generator=g)
    mask = (torch.rand(B, T, generator=g) > 0.3).float()
    mask[:, 0] = 1
    full = ppo.actor_loss(w, old, adv, mask)
    (g_full,) = torch.autograd.grad(full, w)
    n = mask.sum().item()
    parts = [
        ppo.actor_loss(w[s], old[s], adv[s], mask[s], normalizer=n)
        for s in (slice(0, 2), slice(2, 4))
    ]
    assert (parts[0] + parts[1]).item() == pytest.approx(full.item(), rel=1e-6)
    (g_parts,) = torch.autograd.grad(parts[0] + parts[1], w)
    assert torch.allclose(g_full, g_parts, atol=1e-7)


def test_whiten():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    out = ppo.whiten(x, m)
    assert out[0, 3] == 0
    assert ppo.masked_mean(out, m).abs() < 1e-6
    assert ppo.masked_mean(out**2, m).item() == pytest.approx(1.0, rel=1e-4)
