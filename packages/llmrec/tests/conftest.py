import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def small_data():
    """A small prepared synthetic data set (shared by many tests; do not mutate)."""
    from llmrec import PrepConfig, SynthConfig, generate, prepare

    cfg = SynthConfig(
        n_users=300,
        items_per_domain_topic=6,
        n_topics=4,
        n_domains=3,
        cold_items_per_domain=2,
        zero_shot_items_per_topic=2,
        users_per_special=3,
        seed=1,
    )
    return prepare([generate(cfg)], PrepConfig(kcore=3))


@pytest.fixture(scope="session")
def tiny_backbone(small_data):
    from llmrec import BackboneSpec, build_backbone

    return build_backbone(BackboneSpec("tiny-encoder", hidden=32, heads=2), small_data.titles)
