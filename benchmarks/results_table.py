"""The one summary table of ``benchmarks/RESULTS.md``: read it, and let a benchmark rewrite its own rows.

``RESULTS.md`` starts with one Markdown table, between the lines
``<!-- results-table:begin -->`` and ``<!-- results-table:end -->``::

    | figure | now | target | floor or peer | measured by |
    |---|---|---|---|---|
    | Debiased linear CKA, n = 100,000, d = 1,280 | 6.1 s (float64, load 0.4) | <= 10 s | 4.6 s (3 d x d products at measured peak) | `cka.py` 2026-11-23 |

Each row belongs to the script named in its last column; the detailed notes
stay below the table. A benchmark refreshes its rows with::

    from results_table import Row, update_results     # benchmarks/ is the script's folder
    update_results("benchmarks/RESULTS.md", "cka.py", [Row("figure", "now", "target", "floor")])

which replaces every row whose last column names ``cka.py`` (in the place of
the first such row, or at the end of the table for a new script) and leaves
every other row, and the rest of the file, byte for byte as it was. The file
is rewritten atomically (temporary file + rename). To add a figure for a new
benchmark: give the script a ``--results PATH`` option and call
:func:`update_results` with its rows at the end of a run (``cka.py`` and
``radiomics.py`` do this); a figure measured by hand can be added as a row
by editing the table, with ``by hand`` (or the command) in its last column.

Run as a script, it checks that the table of ``RESULTS.md`` parses and
prints it.
"""  # noqa: E501

from __future__ import annotations

import argparse
import datetime as _dt
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

BEGIN = "<!-- results-table:begin -->"
END = "<!-- results-table:end -->"
HEADER = ("figure", "now", "target", "floor or peer", "measured by")

__all__ = ["BEGIN", "END", "HEADER", "Row", "read_rows", "update_results"]


@dataclass(frozen=True)
class Row:
    """One figure of the summary table.

    Attributes
    ----------
    figure : str
        What is measured, with its size (``Radiomics, 200 images of 200 px: 2 jobs vs serial``).
    now : str
        The latest figure, with the conditions that qualify it (load average, backend).
    target : str
        What the issue asks (``>= 1.8x``), or ``-`` when there is none.
    floor : str
        The arithmetic floor or a peer's figure to compare with.
    """

    figure: str
    now: str
    target: str
    floor: str

    def cells(self, script: str, date: str) -> list[str]:
        """The row's five cells, the last naming ``script`` and ``date``."""
        return [self.figure, self.now, self.target, self.floor, f"`{script}` {date}"]


def _split(line: str) -> list[str]:
    body = line.strip()
    if not (body.startswith("|") and body.endswith("|")):
        raise ValueError(f"not a table row: {line!r}")
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", body[1:-1])]


def _escape(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _table_bounds(lines: list[str], path: Path) -> tuple[int, int]:
    try:
        begin = lines.index(BEGIN)
        end = lines.index(END, begin)
    except ValueError:
        raise ValueError(
            f"{path}: no summary table; it must sit between the lines {BEGIN!r} and {END!r}"
        ) from None
    body = [k for k in range(begin + 1, end) if lines[k].strip()]
    if len(body) < 2 or tuple(_split(lines[body[0]])) != HEADER:
        raise ValueError(
            f"{path}: the summary table must start with the header | {' | '.join(HEADER)} |"
        )
    return body[1] + 1, end  # first data line, end marker


def read_rows(path: str | os.PathLike[str]) -> list[list[str]]:
    """The data rows of the summary table, as lists of five cells.

    Raises
    ------
    ValueError
        If the markers or the header are missing, or a row has the wrong number of cells.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    first, end = _table_bounds(lines, path)
    rows = [_split(line) for line in lines[first:end] if line.strip()]
    for row in rows:
        if len(row) != len(HEADER):
            raise ValueError(
                f"{path}: a summary row has {len(row)} cells, not {len(HEADER)}: {row}"
            )
    return rows


def _owner(cells: list[str]) -> str:
    last = cells[-1]
    return last.split("`")[1] if last.count("`") >= 2 else last


def update_results(
    path: str | os.PathLike[str], script: str, rows: list[Row], *, date: str | None = None
) -> Path:
    """Replace the rows of ``script`` in the summary table of ``path``.

    Parameters
    ----------
    path : path
        ``benchmarks/RESULTS.md``.
    script : str
        The benchmark's file name (``cka.py``); owns the rows whose last cell names it.
    rows : list of Row
        The script's rows, in the order they should appear.
    date : str, optional
        Written next to the script's name; default today (ISO).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        As :func:`read_rows`.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    first, end = _table_bounds(lines, path)
    date = date or _dt.date.today().isoformat()
    new = ["| " + " | ".join(_escape(c) for c in row.cells(script, date)) + " |" for row in rows]
    kept: list[str] = []
    insert_at: int | None = None
    for line in lines[first:end]:
        if line.strip() and _owner(_split(line)) == script:
            if insert_at is None:
                insert_at = len(kept)
            continue
        kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    if insert_at is None:
        insert_at = len(kept)
    body = kept[:insert_at] + new + kept[insert_at:]
    out = lines[:first] + body + lines[end:]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(out) + ("\n" if text.endswith("\n") else ""))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    args = parser.parse_args(argv)
    rows = read_rows(args.results)
    print(f"{args.results}: {len(rows)} summary rows")
    for row in rows:
        print(" | ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
