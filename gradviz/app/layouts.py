"""The layouts of the graphs the app shows: computed at once for a small graph, in a worker
thread for a large one, and kept for time travel (a drag back and forth lays each graph out once)."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any, NamedTuple

import networkx as nx

from gradviz.app.jobs import Job, start_job
from gradviz.app.labels import node_label, node_size, standin_name, standin_size
from gradviz.layout.layered import Layout, layout

# Graphs up to this many nodes are laid out at once, in the caller's thread (stepping stays
# instant); larger ones in a worker thread, so the window never waits on a layout.
INLINE_LAYOUT_NODES = 400
# Layouts kept: at most this many, holding at most LAYOUT_CACHE_NODES nodes together (each holds
# its graph: a big model's would weigh).
LAYOUT_CACHE = 64
LAYOUT_CACHE_NODES = 50_000


class LaidOut(NamedTuple):
    graph: nx.DiGraph
    iteration: int
    labels: dict[str, str]
    layout: Layout


def layout_graph(graph: nx.DiGraph, labels: dict[str, str], previous: Layout | None = None) -> Layout:
    """Lay out a graph as the app draws it: boxes sized to their labels, and every leaf's
    AccumulateGrad drawn by small stand-ins next to its uses when they lie far apart (a weight
    reused by every step of an unrolled RNN; the layout decides by the layers its uses span)."""
    shared = [k for k, d in graph.nodes(data=True) if d.get("kind") == "accumulate_grad"]
    size = standin_size(standin_name(graph, labels, k) for k in shared)
    return layout(graph, node_size=lambda k: node_size(labels[k]), previous=previous, shareable=shared,
                  standin_size=size)


def lay_out(graph: nx.DiGraph, iteration: int, previous: Layout | None) -> LaidOut:
    labels = {k: node_label(d, k) for k, d in graph.nodes(data=True)}
    return LaidOut(graph, iteration, labels, layout_graph(graph, labels, previous))


class LayoutScheduler:
    """Runs one layout at a time, keyed by what fixes the graph; keeps the results it made."""

    def __init__(self) -> None:
        self._job: Job | None = None
        self._cache: OrderedDict[Hashable, LaidOut] = OrderedDict()

    @property
    def laying_out(self) -> bool:
        """True while a large graph's layout is being computed off the caller's thread."""
        return self._job is not None

    def lookup(self, key: Hashable) -> LaidOut | None:
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
        return found

    def run(self, key: Hashable, graph: nx.DiGraph, iteration: int, previous: Layout | None) -> LaidOut | None:
        """Lay ``graph`` out: the result at once for a small graph; None for a large one, whose
        layout ``take_finished()`` hands over when it is done."""
        if graph.number_of_nodes() <= INLINE_LAYOUT_NODES:
            result = lay_out(graph, iteration, previous)
            self.keep(key, result)
            return result
        self._job = start_job(key, lay_out, graph, iteration, previous, name="gradviz-layout")
        return None

    def take_finished(self) -> tuple[Hashable, LaidOut] | None:
        """(key, result) of a layout the worker has finished, once; raises what the layout raised."""
        job = self._job
        if job is None or not job.done:
            return None
        self._job = None
        result = job.result()
        self.keep(job.key, result)
        return job.key, result

    def wait(self, timeout: float | None) -> None:
        if self._job is not None:
            self._job.wait(timeout)

    def keep(self, key: Hashable, result: LaidOut) -> None:
        cache = self._cache
        cache[key] = result
        cache.move_to_end(key)
        while len(cache) > 1 and (len(cache) > LAYOUT_CACHE or
                                  sum(r.graph.number_of_nodes() for r in cache.values()) > LAYOUT_CACHE_NODES):
            cache.popitem(last=False)

    def __len__(self) -> int:
        return len(self._cache)

    def __contains__(self, key: Any) -> bool:
        return key in self._cache
