"""Model parts: neighbour finder, time encoding, memory, information bottleneck, the node
classifier both models share, OTGNet, TGN."""

from otgnet.nn.classifier import EdgeOutput, NodeClassifier
from otgnet.nn.ib import MINE, CLUBSample, InformationBottleneck
from otgnet.nn.memory import NodeMemory
from otgnet.nn.model import HEADS, OTGNet, OTGNetConfig
from otgnet.nn.neighbors import NeighborBatch, TemporalNeighborFinder
from otgnet.nn.time_encoding import TimeEncoding

__all__ = [
    "HEADS",
    "MINE",
    "CLUBSample",
    "EdgeOutput",
    "InformationBottleneck",
    "NeighborBatch",
    "NodeClassifier",
    "NodeMemory",
    "OTGNet",
    "OTGNetConfig",
    "TGNClassifier",
    "TGNConfig",
    "TemporalNeighborFinder",
    "TimeEncoding",
]


def __getattr__(name: str):
    # the TGN baseline pulls in torch_geometric (slow to import); load it on first use
    if name in ("TGNClassifier", "TGNConfig"):
        from otgnet.nn import tgn

        return getattr(tgn, name)
    raise AttributeError(f"module 'otgnet.nn' has no attribute {name!r}")
