import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny():
    """A small synthetic graph (3 tasks x 2 classes, 16 nodes per class) and its split."""
    from otgnet.data import ProtocolConfig, SyntheticConfig, make_synthetic, make_tasks

    g, lat = make_synthetic(SyntheticConfig(nodes_per_class=16, events_per_node=6.0, seed=3))
    sp = make_tasks(g, ProtocolConfig(3, 2, train_frac=0.6))
    return g, sp, lat


def random_stream(rng: np.random.Generator, n: int, e: int, tmax: int = 20):
    src = rng.integers(0, n, e)
    dst = rng.integers(0, n, e)
    t = np.sort(rng.integers(0, tmax, e)).astype(float)
    return src, dst, t
