"""The pipeline's parts on one process: tokenizer and models, generation, rewards, memory."""

import pytest
import torch
from rlhf_place import stages
from rlhf_place.config import ModelConfig, RLHFConfig
from rlhf_place.models import (
    RewardModel,
    RuleReward,
    ValueModel,
    build_role,
    build_tokenizer,
    make_prompts,
    model_state_bytes,
    target_token_ids,
)


@pytest.fixture(scope="module")
def setup():
    cfg = RLHFConfig(batch_size=8, gen_len=6)
    tok = build_tokenizer(cfg.model)
    return cfg, tok, {r: build_role(r, cfg, tok) for r in ("actor", "ref", "critic", "reward")}


def test_models_are_deterministic_and_roles_right(setup):
    cfg, tok, m = setup
    assert type(m["actor"]).__name__ == "LlamaForCausalLM"
    assert isinstance(m["critic"], ValueModel) and isinstance(m["reward"], RewardModel)
    # the reference starts equal to the actor and is frozen; the critic starts from the reward model
    for (_, a), (_, r) in zip(
        m["actor"].named_parameters(), m["ref"].named_parameters(), strict=True
    ):
        assert torch.equal(a, r)
    assert not any(p.requires_grad for p in m["ref"].parameters())
    assert not any(p.requires_grad for p in m["reward"].parameters())
    assert all(
        torch.equal(a, b)
        for a, b in zip(m["critic"].parameters(), m["reward"].parameters(), strict=True)
    )
    again = build_role("actor", cfg, build_tokenizer(cfg.model))
    assert all(
        torch.equal(a, b) for a, b in zip(m["actor"].parameters(), again.parameters(), strict=True)
    )
    with pytest.raises(ValueError, match="unknown role"):
        build_role("policy", cfg, tok)
    with pytest.raises(ValueError, match="too small for the target words"):
        build_tokenizer(ModelConfig(vocab_size=20))


def test_prompts_fixed_length_and_deterministic(setup):
    cfg, tok, _ = setup
    p0, p0b, p1 = make_prompts(tok, cfg, 0), make_prompts(tok, cfg, 0), make_prompts(tok, cfg, 1)
    assert p0.shape == (8, cfg.prompt_len) and torch.equal(p0, p0b) and not torch.equal(p0, p1)
    assert int(p0.min()) >= 7  # no special tokens (ids 0-6)


def test_generation_does_not_depend_on_batching(setup):
    """Per-prompt random streams: a prompt gets the same tokens in any batch on any device."""
    cfg, tok, m = setup
    prompts = make_prompts(tok, cfg, 0)
    seeds = stages.prompt_seeds(0, 0, torch.arange(8))
    kw = {"max_new_tokens": 6, "eos_id": tok.eos_token_id, "pad_id": tok.pad_token_id}
    whole = stages.generate(m["actor"], prompts, seeds, **kw)
    halves = torch.cat(
        [
            stages.generate(m["actor"], prompts[s], seeds[s], **kw)
            for s in (slice(0, 4), slice(4, 8))
        ]
    )
    assert whole.shape == (8, 6) and torch.equal(whole, halves)
    other = stages.generate(m["actor"], prompts, stages.prompt_seeds(0, 1, torch.arange(8)), **kw)
    assert not torch.equal(whole, other)
    with pytest.raises(ValueError, match="one seed per row"):
        stages.generate(m["actor"], prompts, seeds[:3], **kw)


def test_response_mask_stops_after_eos():
    r = torch.tensor([[5, 3, 0, 0], [5, 6, 7, 8], [3, 9, 3, 0]])
    assert stages.response_mask(r, 3).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_rule_reward_and_reward_model(setup):
    cfg, tok, m = setup
    ids = target_token_ids(tok)
    rule = RuleReward(ids)
    resp = torch.tensor([[ids[0], 50, ids[1], 50], [50, 50, 50, ids[0]]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    assert rule.score(resp, mask).tolist() == [0.5, 0.0]  # the masked target token does not count
    with pytest.raises(ValueError, match="at least one"):
        RuleReward([])
    seq = make_prompts(tok, cfg, 0)
    am = torch.ones_like(seq)
    am[0, -2:] = 0
    s = stages.reward_scores(m["reward"], seq, am, 4)
    full = m["reward"](seq, am)
    assert s.shape == (8,) and s[0] == full[0, -3] and s[1] == full[1, -1]


def test_memory_accounting_of_a_trained_model(setup):
    cfg, tok, _ = setup
    critic = build_role("critic", cfg, tok)
    n = sum(p.numel() for p in critic.parameters())
    opt = torch.optim.Adam(critic.parameters(), lr=1e-3)
    before = model_state_bytes(critic, opt)
    assert (before.params, before.grads, before.optimizer) == (4 * n, 0, 0)
    critic(make_prompts(tok, cfg, 0)).sum().backward()
    opt.step()
    after = model_state_bytes(critic, opt)
    assert (after.params, after.grads, after.optimizer) == (4 * n, 4 * n, 8 * n)  # Adam: m and v
    assert after.total == 16 * n


def test_experience_and_one_ppo_step(setup):
    """A full iteration by hand on one process: the actor's first-step ratio is 1, losses finite."""
    cfg, tok, m = setup
    prompts = make_prompts(tok, cfg, 0)
    resp = stages.generate(
        m["actor"],
        prompts,
        stages.prompt_seeds(0, 0, torch.arange(8)),
        max_new_tokens=6,
        eos_id=tok.eos_token_id,
    )
    seq = torch.cat([prompts, resp], 1)
    mask = stages.response_mask(resp, tok.eos_token_id)
    am = torch.cat([torch.ones(8, cfg.prompt_len), mask], 1).long()
    with torch.no_grad():
        lp = stages.response_logprobs(m["actor"], seq, am, cfg.prompt_len)
        ref = stages.response_logprobs(m["ref"], seq, am, cfg.prompt_len)
        v = stages.response_values(m["critic"], seq, am, cfg.prompt_len)
    assert torch.equal(lp, ref)  # same weights
    score = RuleReward(target_token_ids(tok)).score(resp, mask)
    exp = stages.assemble(seq, cfg.prompt_len, mask, lp, ref, v, score, cfg.ppo)
    assert torch.allclose(exp.rewards.sum(1), score)  # no KL yet: only the score
    opt = torch.optim.Adam(m["actor"].parameters(), lr=1e-3)
    before = [p.detach().clone() for p in m["actor"].parameters()]
    loss = stages.actor_step(
        m["actor"], opt, exp, cfg.prompt_len, cfg.ppo, normalizer=float(mask.sum())
    )
    # ratio == 1 at the first step, so the loss is -mean(advantages)
    assert loss == pytest.approx(-float((exp.advantages * mask).sum() / mask.sum()), abs=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(before, m["actor"].parameters(), strict=True))
