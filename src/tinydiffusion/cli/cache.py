"""`tinydiffusion cache [--clear]`: the prepared data in the cache, listed with sizes, or cleared."""

from __future__ import annotations


def add(sub) -> None:
    p = sub.add_parser("cache", help="list the prepared data in the cache with sizes, or clear it",
                       description="List the cache's prepared datasets (source, split, images, size) and the size of "
                       "its other parts. Only the newest preparation of each source is kept; --clear removes them "
                       "all (they are prepared again when needed); downloaded datasets are kept. Only what "
                       "tinydiffusion wrote is listed or removed, links are never followed, and anything else in "
                       "the cache's folders is left and named.")
    p.add_argument("--clear", action="store_true", help="remove the prepared data and what was derived from it")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..data import cache

    return cache.run(args.clear)
