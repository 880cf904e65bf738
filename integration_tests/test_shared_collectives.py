"""The workspace's own integration check: 4 real processes through `shared`, a hierarchical
all-reduce built from node groups equals a flat one, and communication accounting sees every op
with exact bytes. Grows as packages land (one test module per composition)."""

from _integration_workers import hierarchical_all_reduce

from shared import spawn


def test_hierarchical_all_reduce_matches_flat_and_accounts_every_byte():
    numel = 1000
    results = spawn(hierarchical_all_reduce, 4, args=(numel,), timeout_s=120)
    b = numel * 8
    for rank, r in enumerate(results):
        assert r["max_err"] < 1e-12
        intra = (0, 1) if rank < 2 else (2, 3)
        inter = (0, 2) if rank % 2 == 0 else (1, 3)
        assert r["ops"] == [
            ("all_reduce", b, (0, 1, 2, 3)),
            ("reduce_scatter_tensor", b, intra),
            ("all_reduce", b // 2, inter),
            ("all_gather_into_tensor", b // 2, intra),
        ]
        assert (r["world"], r["intra"], r["inter"]) == (b, b + b // 2, b // 2)
