"""otgnet: open temporal graph neural networks (Feng et al., ICLR 2023).

Class-incremental node classification on a temporal graph whose node classes arrive in tasks:
information-bottleneck message passing across edges between classes, triad replay (closed and open
triads chosen by importance and diversity), a TGN baseline on PyG's temporal blocks, the task
protocol, loaders for OTGNet / JODIE / TGN-DyGLib files, a synthetic generator, and AP/AF metrics.
"""

from otgnet.continual import (
    MODELS,
    REPLAYS,
    ContinualConfig,
    ContinualLearner,
    RunResult,
    pseudo_labels,
)
from otgnet.data import (
    OpenTemporalGraph,
    ProtocolConfig,
    SyntheticConfig,
    TaskSplit,
    load_graph,
    make_synthetic,
    make_tasks,
    read_jodie_csv,
    read_otgnet_csv,
    read_tgn_npy,
    save_graph,
    write_otgnet_csv,
)
from otgnet.experiments import SYSTEMS, Job, aggregate, run_jobs, system_configs
from otgnet.metrics import average_accuracy, average_forgetting, plot_accuracy_matrices
from otgnet.nn import (
    InformationBottleneck,
    OTGNet,
    OTGNetConfig,
    TemporalNeighborFinder,
)
from otgnet.replay import (
    ReplayBuffer,
    Triads,
    greedy_select,
    head_gradient_scores,
    mine_triads,
    node_importance,
    pattern_loss,
)

__version__ = "0.3.0"

__all__ = [
    "MODELS",
    "REPLAYS",
    "SYSTEMS",
    "ContinualConfig",
    "ContinualLearner",
    "InformationBottleneck",
    "Job",
    "OTGNet",
    "OTGNetConfig",
    "OpenTemporalGraph",
    "ProtocolConfig",
    "ReplayBuffer",
    "RunResult",
    "SyntheticConfig",
    "TGNClassifier",
    "TGNConfig",
    "TaskSplit",
    "TemporalNeighborFinder",
    "Triads",
    "aggregate",
    "average_accuracy",
    "average_forgetting",
    "greedy_select",
    "head_gradient_scores",
    "load_graph",
    "make_synthetic",
    "make_tasks",
    "mine_triads",
    "node_importance",
    "pattern_loss",
    "plot_accuracy_matrices",
    "pseudo_labels",
    "read_jodie_csv",
    "read_otgnet_csv",
    "read_tgn_npy",
    "run_jobs",
    "save_graph",
    "system_configs",
    "write_otgnet_csv",
]


def __getattr__(name: str):
    if name in ("TGNClassifier", "TGNConfig"):
        from otgnet.nn import tgn

        return getattr(tgn, name)
    raise AttributeError(f"module 'otgnet' has no attribute {name!r}")
