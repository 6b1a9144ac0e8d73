"""Served records (msgspec Structs of the fast path, dicts of the pydantic path) as columns.

Used off the request path: by the live drift's scrape, in a thread beside the event loop, where any
Python it runs holds the GIL the event loop waits for (a request waits up to the interpreter's
switch interval at each of its system calls); and by the prediction log's writer process (dicts
there, decoded from MessagePack). So the work per record is two C calls (``astuple`` and a field
picker) and the transposition one ``zip``, not a ``getattr`` per value -- a fifth of the time per
10,000 records (measured).
"""

from __future__ import annotations

import time
from operator import itemgetter

#: How long ``let_go`` lets go: a sleep of 0 gives the GIL back and takes it again before the waiting
#: thread has woken up (measured: no shorter waits for the event loop); a fifth of a millisecond does not.
LET_GO_SECONDS = 0.0002


def let_go() -> None:
    """Give the GIL to a thread waiting for it (the event loop's) now, between two steps of long work in
    a background thread (the prediction log's files, a scrape's drift). Without it that thread waits
    out the interpreter's switch interval (5 ms) every time it lets the GIL go for a system call -- a
    few times per request -- for as long as the work lasts."""
    time.sleep(LET_GO_SECONDS)


def columns(records: list, names: list[str], slice_size: int = 0) -> list[tuple]:
    """One tuple of values per name in ``names``, over ``records`` (None where a record has no value);
    with ``slice_size``, made ``slice_size`` records at a time with ``let_go`` between."""
    if slice_size and len(records) > slice_size:
        import itertools

        parts = []
        for i in range(0, len(records), slice_size):
            parts.append(columns(records[i:i + slice_size], names))
            let_go()
        return [tuple(itertools.chain.from_iterable(part[k] for part in parts)) for k in range(len(names))]
    if not records:
        return [() for _ in names]
    from msgspec.structs import astuple

    pickers: dict[type, itemgetter] = {}
    rows = []
    for r in records:
        kind = type(r)
        if kind is dict:
            rows.append(tuple(map(r.get, names)))
            continue
        pick = pickers.get(kind)
        if pick is None:
            fields = kind.__struct_fields__
            pick = pickers[kind] = itemgetter(*[fields.index(n) for n in names]) if len(names) > 1 else (
                lambda t, _i=fields.index(names[0]): (t[_i],))
        rows.append(pick(astuple(r)))
    return list(zip(*rows))
