"""Schema of the public AntM2C release (the ~10 M-row ``antm2c_10m_part{0,1,2}`` CSVs).

The column order, names and field ownership follow the public download as read by independent
third-party loaders (the paper versions describe 1 B / 100 M rows and do not list columns; see the
package README, "Deviations and choices"). Every raw part is a CSV **with a header row** and these
37 columns, in this order:

``user_id, item_id, log_time, label, bill_entity_seq, service_entity_seq, query_entity_seq,
item_entity_names, item_title, scene, deep_features_0 ... deep_features_26``

Images (``AntM2C_image/<item_id>.png``) are keyed by the original ``item_id``; this package works
with pre-computed image embeddings keyed the same way (:data:`IMAGE_EMBEDDING_SCHEMA`).

The semantics of the 27 ``deep_features`` are undocumented. Which of them are numeric is a
parameter (:class:`DeepFeatureTypes`); the default treats ``deep_features_14`` and ``19..26`` as
numeric, as one public loader does, and the rest as opaque categorical codes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

__all__ = [
    "DEEP_FEATURES",
    "ID_COLUMNS",
    "IMAGE_EMBEDDING_SCHEMA",
    "ITEM_TEXT",
    "LABEL",
    "N_DEEP_FEATURES",
    "N_SCENES",
    "RAW_COLUMNS",
    "SCENE",
    "TEXT_COLUMNS",
    "TIME",
    "TIME_FORMATS",
    "USER_TEXT",
    "DeepFeatureTypes",
    "SchemaError",
    "processed_schema",
    "raw_schema",
    "validate_header",
    "validate_processed",
    "validate_raw_table",
]

N_DEEP_FEATURES = 27
N_SCENES = 5
LABEL = "label"
SCENE = "scene"
TIME = "log_time"
ID_COLUMNS = ("user_id", "item_id")
#: user-owned behaviour text (entity sequences: bills, mini-program/service visits, searches)
USER_TEXT = ("bill_entity_seq", "service_entity_seq", "query_entity_seq")
#: item-side text; ``item_entity_names`` varies per interaction (interaction context), while
#: ``item_title`` is owned by the item
ITEM_TEXT = ("item_entity_names", "item_title")
TEXT_COLUMNS = USER_TEXT + ITEM_TEXT
DEEP_FEATURES = tuple(f"deep_features_{i}" for i in range(N_DEEP_FEATURES))
RAW_COLUMNS: tuple[str, ...] = (
    "user_id",
    "item_id",
    TIME,
    LABEL,
    *USER_TEXT,
    *ITEM_TEXT,
    SCENE,
    *DEEP_FEATURES,
)
#: ``log_time`` formats accepted, tried in order. The raw parts use the first; a re-saved public
#: sample used the second. Anything else is a malformed row (never coerced to a default date).
TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M")

IMAGE_EMBEDDING_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32())),
    ]
)


class SchemaError(ValueError):
    """A table, header or file does not match the AntM2C schema; the message says how."""


@dataclass(frozen=True)
class DeepFeatureTypes:
    """Which ``deep_features_k`` are numeric (float); all others are categorical codes.

    The release does not document them; the default follows one public loader
    (``deep_features_14`` and ``19..26`` numeric). Override it when you know better.
    """

    numeric: tuple[int, ...] = (14, 19, 20, 21, 22, 23, 24, 25, 26)
    names: tuple[str, ...] = field(default=DEEP_FEATURES, repr=False)

    def __post_init__(self) -> None:
        bad = [i for i in self.numeric if not 0 <= int(i) < N_DEEP_FEATURES]
        if bad:
            raise SchemaError(
                f"numeric deep feature indices must be in 0..{N_DEEP_FEATURES - 1}, got {bad}"
            )
        if len(set(self.numeric)) != len(self.numeric):
            raise SchemaError(f"numeric deep feature indices repeat: {self.numeric}")
        object.__setattr__(self, "numeric", tuple(sorted(int(i) for i in self.numeric)))

    @property
    def numeric_columns(self) -> tuple[str, ...]:
        return tuple(DEEP_FEATURES[i] for i in self.numeric)

    @property
    def categorical_columns(self) -> tuple[str, ...]:
        return tuple(c for i, c in enumerate(DEEP_FEATURES) if i not in self.numeric)


def raw_schema(deep: DeepFeatureTypes | None = None) -> pa.Schema:
    """The typed schema of one raw row (what a clean CSV row converts to)."""
    deep = deep or DeepFeatureTypes()
    fields = [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field(TIME, pa.timestamp("s"), nullable=False),
        pa.field(LABEL, pa.int8(), nullable=False),
    ]
    fields += [pa.field(c, pa.string()) for c in TEXT_COLUMNS]
    fields.append(pa.field(SCENE, pa.int8(), nullable=False))
    for i, c in enumerate(DEEP_FEATURES):
        fields.append(pa.field(c, pa.float64() if i in deep.numeric else pa.string()))
    return pa.schema(fields)


def processed_schema(deep: DeepFeatureTypes | None = None) -> pa.Schema:
    """Schema of the prepared parquet rows (see :mod:`antm2c.pipeline`).

    Ids, categorical codes and text tokens are stored as signed 64-bit keys (blake2b of the
    UTF-8 string), so the parquet is independent of any vocabulary; vocabularies or hash buckets
    are applied when a task loads it. ``row`` is the 0-based data-row number in the source stream.
    """
    deep = deep or DeepFeatureTypes()
    fields = [
        pa.field("row", pa.int64(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        # parquet has no second unit; milliseconds round-trip exactly
        pa.field(TIME, pa.timestamp("ms"), nullable=False),
        pa.field(LABEL, pa.int8(), nullable=False),
        pa.field(SCENE, pa.int8(), nullable=False),
    ]
    fields += [pa.field(c, pa.list_(pa.int64())) for c in TEXT_COLUMNS]
    for i, c in enumerate(DEEP_FEATURES):
        fields.append(pa.field(c, pa.float32() if i in deep.numeric else pa.int64()))
    return pa.schema(fields)


def validate_header(header: Sequence[str], *, source: str = "input") -> None:
    """Raise :class:`SchemaError` unless ``header`` is exactly :data:`RAW_COLUMNS` in order."""
    header = [h.strip() for h in header]
    if list(header) == list(RAW_COLUMNS):
        return
    missing = [c for c in RAW_COLUMNS if c not in header]
    extra = [c for c in header if c not in RAW_COLUMNS]
    if missing or extra:
        raise SchemaError(
            f"{source}: header does not match the AntM2C release: missing columns {missing}, "
            f"unexpected columns {extra} (expected {len(RAW_COLUMNS)} columns starting with "
            f"{list(RAW_COLUMNS[:4])})"
        )
    first = next(i for i, (a, b) in enumerate(zip(header, RAW_COLUMNS, strict=True)) if a != b)
    raise SchemaError(
        f"{source}: columns are out of order: position {first} is {header[first]!r}, "
        f"expected {RAW_COLUMNS[first]!r}"
    )


def _check_fields(table: pa.Table, schema: pa.Schema, what: str) -> None:
    names = table.schema.names
    missing = [f.name for f in schema if f.name not in names]
    if missing:
        raise SchemaError(f"{what}: missing columns {missing}")
    for f in schema:
        got = table.schema.field(f.name).type
        if got != f.type:
            raise SchemaError(f"{what}: column {f.name!r} has type {got}, expected {f.type}")
        if not f.nullable and table.column(f.name).null_count:
            raise SchemaError(
                f"{what}: column {f.name!r} has {table.column(f.name).null_count} nulls; "
                "it must be complete"
            )


def _check_values(table: pa.Table, what: str) -> None:
    import pyarrow.compute as pc

    label = table.column(LABEL)
    if len(label) and not pc.all(pc.is_in(label, pa.array([0, 1], label.type))).as_py():
        raise SchemaError(f"{what}: label must be 0 or 1")
    scene = table.column(SCENE)
    if len(scene):
        lo, hi = pc.min(scene).as_py(), pc.max(scene).as_py()
        if lo < 0 or hi >= N_SCENES:
            raise SchemaError(f"{what}: scene must be in 0..{N_SCENES - 1}, got range {lo}..{hi}")


def validate_raw_table(table: pa.Table, deep: DeepFeatureTypes | None = None) -> None:
    """Validate a typed raw table (names, types, completeness, label/scene domains)."""
    _check_fields(table, raw_schema(deep), "raw table")
    _check_values(table, "raw table")


def validate_processed(table: pa.Table, deep: DeepFeatureTypes | None = None) -> None:
    """Validate a prepared-parquet table against :func:`processed_schema`."""
    _check_fields(table, processed_schema(deep), "processed table")
    _check_values(table, "processed table")


def columns_of(names: Iterable[str]) -> list[str]:
    """Keep only known raw column names, in release order."""
    s = set(names)
    return [c for c in RAW_COLUMNS if c in s]
