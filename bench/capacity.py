"""What one DynamoDB request consumes, by AWS's rules: read and write request units, index copies included.

The rules (DynamoDB developer guide, "DynamoDB read and write operations" and "Global secondary
indexes: provisioned throughput considerations"):

- a write costs one write unit per KB (rounded up) of the larger of the item before and after it; a
  delete, of the item deleted; a failed conditional write, of the item as it is (at least one);
  a write inside TransactWriteItems costs twice that;
- each global secondary index the item is in (or enters, or leaves) is written too: nothing when none
  of its projected attributes changed, one write of the new index entry when they did, a delete of the
  old entry and a put of the new one when its key changed; an entry is the item's keys, the index's keys
  and the projected attributes;
- a strongly consistent read costs one read unit per 4 KB (rounded up), an eventually consistent one
  half that; GetItem and BatchGetItem round each item, Query rounds the sum of what it read (index
  entries for an index query), before any filter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobgate.adapters.dynamo import item_size

KB = 1024
READ_UNIT_BYTES = 4 * KB

Item = Mapping[str, Any]  # a marshalled item ({"name": {"S": "..."}})


@dataclass(frozen=True)
class Index:
    name: str
    pk: str
    sk: str
    projection: str  # ALL, KEYS_ONLY or INCLUDE
    include: tuple[str, ...] = ()

    def entry(self, item: Item | None) -> dict[str, Any] | None:
        """The item as this index holds it; None when the item is not in the index (sparse)."""
        if item is None or self.pk not in item or self.sk not in item:
            return None
        if self.projection == "ALL":
            return dict(item)
        keep = {"pk", "sk", self.pk, self.sk, *self.include}
        return {k: v for k, v in item.items() if k in keep}


def table_indexes(template: Path, table: str = "JobsTable") -> list[Index]:
    """The global secondary indexes of the table as the template declares them."""
    from cfnlint.decode import decode

    decoded, _ = decode(str(template))
    assert decoded is not None
    props = decoded["Resources"][table]["Properties"]
    indexes = []
    for gsi in props.get("GlobalSecondaryIndexes", []):
        keys = {k["KeyType"]: k["AttributeName"] for k in gsi["KeySchema"]}
        projection = gsi["Projection"]
        indexes.append(
            Index(
                name=str(gsi["IndexName"]),
                pk=keys["HASH"],
                sk=keys["RANGE"],
                projection=str(projection["ProjectionType"]),
                include=tuple(projection.get("NonKeyAttributes", [])),
            )
        )
    return indexes


def _units(item: Item | None, per: int) -> int:
    return max(1, math.ceil(item_size(item) / per)) if item is not None else 0


@dataclass
class WriteCost:
    table: float = 0.0
    indexes: float = 0.0

    @property
    def total(self) -> float:
        return self.table + self.indexes


def write_cost(
    before: Item | None,
    after: Item | None,
    indexes: list[Index],
    *,
    transactional: bool = False,
    failed: bool = False,
) -> WriteCost:
    """Write units of one item write (put, update or delete) that turned `before` into `after`."""
    factor = 2 if transactional else 1
    if failed:
        return WriteCost(table=factor * max(1, _units(before, KB)))
    cost = WriteCost(table=factor * max(1, _units(before, KB), _units(after, KB)))
    for index in indexes:
        old, new = index.entry(before), index.entry(after)
        if old == new:
            continue
        same_key = (
            old is not None
            and new is not None
            and old[index.pk] == new[index.pk]
            and old[index.sk] == new[index.sk]
        )
        if same_key:
            cost.indexes += _units(new, KB)
        else:
            cost.indexes += _units(old, KB) + _units(new, KB)
    return cost


def read_units(items: list[Item], *, consistent: bool, per_item: bool) -> float:
    """Read units of reading these items (GetItem/BatchGetItem: per_item; Query: their sum)."""
    factor = 1.0 if consistent else 0.5
    if per_item:
        return factor * sum(max(1, math.ceil(item_size(i) / READ_UNIT_BYTES)) for i in items) or factor
    total = sum(item_size(i) for i in items)
    return factor * max(1, math.ceil(total / READ_UNIT_BYTES))
