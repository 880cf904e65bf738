"""shared: the thin core every package of the monorepo builds on.

- :mod:`shared.distributed`: process-group set-up from torchrun/env, rank info, node-local and
  cross-node subgroups, :func:`spawn` for real multi-process runs in tests and demos.
- :mod:`shared.comm`: :func:`record_comm` counts every collective and point-to-point op (kind,
  group ranks, bytes).
- :mod:`shared.bench`: interleaved timing, subprocess timing with exact peak RSS, peak memory.
- :mod:`shared.claims`: the claim record and the ``results/<dist>.json`` writer.
- :mod:`shared.lm` (imported on its own; needs transformers + tokenizers): locally trained
  tokenizers, tiny Hugging Face models, the offline MiniLM and SmolLM2 loaders.
- :mod:`shared.files`, :mod:`shared.seeding`, :mod:`shared.log`: atomic writes, seeding,
  logging and progress bars.
"""

from shared.bench import (
    PeakMemory,
    SubprocessResult,
    Timing,
    compare,
    current_rss_bytes,
    time_callable,
    time_subprocess,
)
from shared.claims import (
    Claim,
    load_results,
    render_markdown,
    replace_marked_section,
    write_results,
)
from shared.comm import CommLog, CommOp, install_comm_hooks, record_comm
from shared.distributed import (
    DistInfo,
    NodeGroups,
    SpawnError,
    SpawnTimeout,
    default_backend,
    destroy_distributed,
    find_free_port,
    get_info,
    init_distributed,
    make_node_groups,
    spawn,
)
from shared.files import atomic_write, atomic_write_bytes, atomic_write_text
from shared.log import progress, progress_enabled, setup_logging
from shared.seeding import seed_everything

__version__ = "0.2.0"

__all__ = [
    "Claim",
    "CommLog",
    "CommOp",
    "DistInfo",
    "NodeGroups",
    "PeakMemory",
    "SpawnError",
    "SpawnTimeout",
    "SubprocessResult",
    "Timing",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "compare",
    "current_rss_bytes",
    "default_backend",
    "destroy_distributed",
    "find_free_port",
    "get_info",
    "init_distributed",
    "install_comm_hooks",
    "load_results",
    "make_node_groups",
    "progress",
    "progress_enabled",
    "record_comm",
    "render_markdown",
    "replace_marked_section",
    "seed_everything",
    "setup_logging",
    "spawn",
    "time_callable",
    "time_subprocess",
    "write_results",
]
