import pytest
from antm2c import cold_start, multimodal, single_scenario
from antm2c.tasks import audit_cold_start


def test_single_scenario_uses_one_scene(prepared):
    root, _ = prepared
    t = single_scenario(root, 2)
    assert t.files("train") and all("scene=2" in str(f) for f in t.files("train"))
    with pytest.raises(ValueError, match=r"within 0\.\.4"):
        single_scenario(root, 7)


def test_cold_start_audit(prepared):
    root, _ = prepared
    t = cold_start(root, "item")
    rep = t.audit()
    assert rep["ok"]
    cs = rep["cold_start"]["test"]
    assert cs["cold_items"] > 0 and cs["cold_item_rows"] > 0
    assert audit_cold_start(root)["val"]["cold_users"] == 0  # cold users appear only in test
    with pytest.raises(ValueError, match="'user' or 'item'"):
        cold_start(root, "scene")


def test_multimodal_spec(prepared, raw):
    root, _ = prepared
    t = multimodal(root, image=raw.image_path)
    assert t.spec.image == str(raw.image_path) and "item_title" in t.spec.sequences
    assert multimodal(root, text=()).spec.sequences == ()


def test_task_on_unprepared_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a prepared AntM2C data set"):
        single_scenario(tmp_path, 0)
