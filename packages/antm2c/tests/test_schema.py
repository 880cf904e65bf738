import pyarrow as pa
import pytest
from antm2c import (
    RAW_COLUMNS,
    DeepFeatureTypes,
    SchemaError,
    processed_schema,
    raw_schema,
    validate_header,
    validate_raw_table,
)


def test_raw_columns_match_release_layout():
    assert len(RAW_COLUMNS) == 37  # 4 + 3 user texts + 2 item texts + scene + 27
    assert RAW_COLUMNS[:4] == ("user_id", "item_id", "log_time", "label")
    assert RAW_COLUMNS[9] == "scene"
    assert RAW_COLUMNS[-1] == "deep_features_26"
    assert raw_schema().names == list(RAW_COLUMNS)


def test_header_ok_and_errors():
    validate_header(list(RAW_COLUMNS))
    with pytest.raises(SchemaError, match="missing columns \\['label'\\]"):
        validate_header([c for c in RAW_COLUMNS if c != "label"])
    swapped = list(RAW_COLUMNS)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    with pytest.raises(SchemaError, match="out of order: position 0 is 'item_id'"):
        validate_header(swapped)
    with pytest.raises(SchemaError, match="unexpected columns \\['extra'\\]"):
        validate_header([*RAW_COLUMNS, "extra"])


def _table(**override):
    sch = raw_schema()
    cols = {}
    for f in sch:
        if f.type == pa.string():
            cols[f.name] = pa.array(["a", "b"])
        elif f.type == pa.float64():
            cols[f.name] = pa.array([1.0, 2.0])
        elif f.type == pa.int8():
            cols[f.name] = pa.array([0, 1], pa.int8())
        else:
            cols[f.name] = pa.array([0, 1], pa.timestamp("s"))
    cols.update(override)
    return pa.table(cols)


def test_validate_raw_table_errors():
    validate_raw_table(_table())
    with pytest.raises(SchemaError, match="label must be 0 or 1"):
        validate_raw_table(_table(label=pa.array([0, 2], pa.int8())))
    with pytest.raises(SchemaError, match=r"scene must be in 0\.\.4"):
        validate_raw_table(_table(scene=pa.array([0, 7], pa.int8())))
    with pytest.raises(SchemaError, match="'log_time' has type string"):
        validate_raw_table(_table(log_time=pa.array(["x", "y"])))
    with pytest.raises(SchemaError, match="'user_id' has 1 nulls"):
        validate_raw_table(_table(user_id=pa.array(["a", None])))
    t = _table().drop_columns(["item_title"])
    with pytest.raises(SchemaError, match="missing columns \\['item_title'\\]"):
        validate_raw_table(t)


def test_deep_feature_types():
    d = DeepFeatureTypes(numeric=(26, 3))
    assert d.numeric == (3, 26)
    assert "deep_features_3" in d.numeric_columns and "deep_features_3" not in (
        d.categorical_columns
    )
    assert processed_schema(d).field("deep_features_3").type == pa.float32()
    with pytest.raises(SchemaError, match=r"in 0\.\.26"):
        DeepFeatureTypes(numeric=(27,))
    with pytest.raises(SchemaError, match="repeat"):
        DeepFeatureTypes(numeric=(1, 1))
