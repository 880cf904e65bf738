import numpy as np
import pytest
import torch
from antm2c import (
    MODELS,
    FeatureEncoder,
    FeatureSpec,
    FieldLayout,
    ParquetStream,
    TrainConfig,
    multi_scenario,
    run,
    split_files,
)
from antm2c.models import fm_interaction
from antm2c.scenario import MultiScenarioModel


@pytest.fixture(scope="module")
def batch(prepared, raw):
    root, _ = prepared
    spec = FeatureSpec.preset("full", image=str(raw.image_path))
    files = split_files(root, "train")
    enc = FeatureEncoder.fit(files, spec)
    b = next(iter(ParquetStream(files, enc, batch_size=64)))
    return enc, b


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_forward_backward(name, batch):
    enc, b = batch
    torch.manual_seed(0)
    model = MODELS[name](FieldLayout.from_encoder(enc), embed_dim=8)
    out = model(b)
    assert out.shape == (64,) and torch.isfinite(out).all()
    torch.nn.functional.binary_cross_entropy_with_logits(out, b["label"]).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(
        float(g.coalesce().values().abs().sum() if g.is_sparse else g.abs().sum()) > 0
        for g in grads
    )


@pytest.mark.parametrize("name", ["sharedbottom", "mmoe", "ple", "star"])
def test_multi_scenario_output_depends_on_scene(name, batch):
    enc, b = batch
    torch.manual_seed(0)
    model = MODELS[name](FieldLayout.from_encoder(enc), embed_dim=8)
    assert isinstance(model, MultiScenarioModel)
    with torch.no_grad():
        # perturb the scene-specific parameters of scene 4 only
        for n, p in model.named_parameters():
            if any(k in n for k in ("towers.4", "w_scene", "b_scene")) or (
                name in ("mmoe", "ple") and "gate" in n
            ):
                p.add_(torch.randn_like(p))
    model.eval()
    b0 = {**b, "scene": torch.zeros_like(b["scene"])}
    b4 = {**b, "scene": torch.full_like(b["scene"], 4)}
    with torch.no_grad():
        assert not torch.allclose(model(b0), model(b4))


def test_fm_interaction_is_pairwise_sum():
    e = torch.randn(5, 4, 3)
    pair = sum((e[:, i] * e[:, j]).sum(-1) for i in range(4) for j in range(i + 1, 4))
    assert torch.allclose(fm_interaction(e).sum(-1), pair, atol=1e-5)


def test_training_is_deterministic_and_learns(prepared):
    root, _ = prepared
    task = multi_scenario(root, None, FeatureSpec.preset("tabular"))
    cfg = TrainConfig(epochs=2, batch_size=512, seed=0)
    a = run(task, "deepfm", cfg)
    b = run(task, "deepfm", cfg)
    np.testing.assert_allclose(a.predictions.prob, b.predictions.prob, atol=1e-6)
    assert a.metrics["overall"]["auc"] > 0.55


def test_config_errors():
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="learning rates"):
        TrainConfig(lr=0)
    from antm2c import build_model

    with pytest.raises(ValueError, match="unknown model"):
        build_model("gpt", None)


def test_din_needs_user_text(prepared):
    root, _ = prepared
    enc = FeatureEncoder.fit(split_files(root, "train"), FeatureSpec())
    with pytest.raises(ValueError, match="DIN needs user behaviour text fields"):
        MODELS["din"](FieldLayout.from_encoder(enc))


def test_din_attends_to_matching_behaviours(batch):
    enc, b = batch
    torch.manual_seed(0)
    model = MODELS["din"](FieldLayout.from_encoder(enc), embed_dim=8)
    # removing every behaviour token changes the prediction (the interest term is used)
    b_empty = {**b, "seq": b["seq"].clone()}
    b_empty["seq"][:, model.user_idx] = 0
    with torch.no_grad():
        for p in model.att.parameters():
            p.add_(0.5)
        assert not torch.allclose(model(b), model(b_empty))
