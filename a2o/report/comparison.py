"""Reading the ``comparison.json`` a benchmark may leave beside its runs (tables shown atop the report).

The benchmark that wrote the runs (e.g. ``benchmarks.searchers``) knows which comparisons matter
(paired tests across seeds, budgets, cost); it writes them as plain tables and the report only
renders them. Layout::

    {"title": str, "note": str,
     "tables": [{"title": str, "headers": [str, ...], "rows": [[cell, ...], ...], "note": str}],
     "figures": []}

A cell is a string, an int, a float or null. ``note`` (file and table) is optional, ``figures``
is optional and must be a list (its entries are not drawn yet). The file is untrusted: every
text is escaped where it is shown, and a file that breaks this layout raises :class:`DataError`
saying where, so the report can say so and render the rest.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

from a2o.errors import DataError

__all__ = ["COMPARISON_NAME", "Cell", "ComparisonTable", "Comparison", "read_comparison", "format_cell"]

COMPARISON_NAME = "comparison.json"

Cell = str | int | float | None


@dataclass(frozen=True)
class ComparisonTable:
    """One table of ``comparison.json``: every row has one cell per header."""

    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    note: str = ""


@dataclass(frozen=True)
class Comparison:
    """The whole ``comparison.json``."""

    title: str
    note: str
    tables: tuple[ComparisonTable, ...]
    figures: int = 0
    """How many entries ``figures`` has (not drawn; the report says so when there are some)."""


def _text(data: dict[str, Any], key: str, where: str, *, required: bool) -> str:
    if key not in data and not required:
        return ""
    value = data.get(key)
    if not isinstance(value, str):
        raise DataError(f"{where}.{key} must be a string, got {_kind(data, key)}")
    return value


def _kind(data: dict[str, Any], key: str) -> str:
    return "nothing (missing)" if key not in data else type(data[key]).__name__


def _cell(value: Any, where: str) -> Cell:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    raise DataError(f"{where} must be a string, a number or null, got {type(value).__name__}")


def _table(data: Any, where: str) -> ComparisonTable:
    if not isinstance(data, dict):
        raise DataError(f"{where} must be an object, got {type(data).__name__}")
    headers = data.get("headers")
    if not isinstance(headers, list) or not all(isinstance(h, str) for h in headers):
        raise DataError(f"{where}.headers must be a list of strings, got {_kind(data, 'headers')}")
    rows = data.get("rows")
    if not isinstance(rows, list):
        raise DataError(f"{where}.rows must be a list of rows, got {_kind(data, 'rows')}")
    parsed = []
    for number, row in enumerate(rows):
        if not isinstance(row, list):
            raise DataError(f"{where}.rows[{number}] must be a list of cells, got {type(row).__name__}")
        if len(row) != len(headers):
            raise DataError(f"{where}.rows[{number}] has {len(row)} cells for {len(headers)} headers")
        parsed.append(tuple(_cell(value, f"{where}.rows[{number}][{column}]") for column, value in enumerate(row)))
    return ComparisonTable(_text(data, "title", where, required=True), tuple(headers), tuple(parsed),
                           _text(data, "note", where, required=False))


def read_comparison(folder: str) -> Comparison | None:
    """``folder/comparison.json`` parsed, or None when the folder has none.

    Raises:
        DataError: the file exists but is not JSON or breaks the layout (the message names the
            file and the first field that is wrong).
    """
    path = os.path.join(folder, COMPARISON_NAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not readable JSON ({exc})") from None
    try:
        if not isinstance(data, dict):
            raise DataError(f"the top level must be an object, got {type(data).__name__}")
        tables = data.get("tables")
        if not isinstance(tables, list):
            raise DataError(f"tables must be a list of tables, got {_kind(data, 'tables')}")
        figures = data.get("figures", [])
        if not isinstance(figures, list):
            raise DataError(f"figures must be a list, got {type(figures).__name__}")
        return Comparison(
            _text(data, "title", "comparison", required=True),
            _text(data, "note", "comparison", required=False),
            tuple(_table(table, f"tables[{number}]") for number, table in enumerate(tables)),
            len(figures),
        )
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None


def format_cell(value: Cell) -> str:
    """A cell as shown (not yet escaped): None as "–", a float with 3 decimals, ints and strings as they are.

    A non-zero float below 0.001 in size (a small p-value) keeps 3 significant digits instead
    (``1.23e-05``) rather than turning into 0.000; NaN is "–", infinities "inf" / "-inf".
    """
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if math.isinf(value) or (value != 0.0 and abs(value) < 0.001):
            return f"{value:.3g}"
        return f"{value:.3f}"
    return str(value)
