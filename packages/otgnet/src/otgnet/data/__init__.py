"""Open temporal graphs: the container, the task protocol, file formats, the synthetic generator."""

from otgnet.data.formats import (
    load_graph,
    read_jodie_csv,
    read_otgnet_csv,
    read_tgn_npy,
    save_graph,
    write_otgnet_csv,
)
from otgnet.data.graph import OpenTemporalGraph
from otgnet.data.protocol import TEST, TRAIN, UNUSED, VAL, ProtocolConfig, TaskSplit, make_tasks
from otgnet.data.synthetic import SyntheticConfig, make_synthetic

__all__ = [
    "TEST",
    "TRAIN",
    "UNUSED",
    "VAL",
    "OpenTemporalGraph",
    "ProtocolConfig",
    "SyntheticConfig",
    "TaskSplit",
    "load_graph",
    "make_synthetic",
    "make_tasks",
    "read_jodie_csv",
    "read_otgnet_csv",
    "read_tgn_npy",
    "save_graph",
    "write_otgnet_csv",
]
