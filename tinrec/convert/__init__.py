"""``tinrec convert NAME --input DIR --output DIR [options]``: public datasets, from their files as published to
the documented format (``docs/data.md``), with the papers' sampling and splits. One module per dataset; the
shared parts in :mod:`tinrec.convert.common`."""

from __future__ import annotations

import importlib

# name -> module (each has ``add_arguments(parser)`` and ``convert(input_dir, output_dir, **options)``)
CONVERTERS = {
    "alimama": "tinrec.convert.alimama",
    "amazon": "tinrec.convert.amazon",
    "contentwise": "tinrec.convert.contentwise",
    "movielens": "tinrec.convert.movielens",
    "taobao": "tinrec.convert.taobao",
}


def module(name: str):
    return importlib.import_module(CONVERTERS[name])
