"""``biomark data``: build datasets (``build``), generate the phantom (``phantom``), lung masks
(``masks``), a learned lung segmenter (``mask-model``)."""

from __future__ import annotations

import argparse

from biomark.cli import data_build, data_mask_model, data_masks, data_phantom

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data",
        help="build a dataset (manifest + image cache) or generate the phantom",
        description="Build datasets from public sources, or generate the synthetic phantom.",
    )
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data_build.add_parser(sub)
    data_phantom.add_parser(sub)
    data_masks.add_parser(sub)
    data_mask_model.add_parser(sub)
    parser.set_defaults(handler=lambda args: (parser.print_help(), 2)[1])
