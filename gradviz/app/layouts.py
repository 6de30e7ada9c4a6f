"""The layouts of the graphs the app shows: computed at once for a small graph, in a worker
thread for a large one, and kept for time travel (a drag back and forth lays each graph out once)."""
from __future__ import annotations

import dataclasses
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
# Fresh layouts kept by their graph's shape, to be renamed for a graph of the same shape.
SHAPES = 16


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


def _creation_rank(key: str) -> tuple:
    """A node key's place in the order the producer gave ids ("n12" before "n103"): a graph's
    iteration is a subgraph view, whose nodes come in the order of a set."""
    tail = key[1:]
    return (key[:1], int(tail), "") if tail.isdigit() else (key[:1], -1, key)


def _places(graph: nx.DiGraph) -> list:
    """The graph's nodes in an order that depends neither on when shared nodes were made nor on
    the order a view lists them in: its own grad_fn nodes first, then the others (the leaves'
    nodes every iteration shares), each by id, the order a training loop makes them in every
    iteration."""
    nodes = sorted(graph.nodes(data="kind"), key=lambda kv: _creation_rank(kv[0]))
    return [k for k, kind in nodes if kind == "grad_fn"] + [k for k, kind in nodes if kind != "grad_fn"]


def shape_of(graph: nx.DiGraph, labels: dict[str, str]) -> tuple:
    """What a layout depends on, with the nodes' keys left out: each node's label and kind (its
    size, for a node not announced yet) in ``_places`` order, and the edges as pairs of places.
    A training loop builds the same graph every iteration under new keys: graphs of one shape are
    laid out alike."""
    order = _places(graph)
    place = {k: i for i, k in enumerate(order)}
    kinds = graph.nodes
    # A node named as a next node before its own NodeCreated (mid-forward) is labelled by its
    # key, new each iteration: only its box's size counts.
    return (tuple((labels[k], kind) if (kind := kinds[k].get("kind")) is not None else node_size(labels[k])
                  for k in order),
            tuple(sorted((place[u], place[v], d.get("index")) for u, v, d in graph.edges(data=True))))


def relabel_layout(lay: Layout, mapping: dict) -> Layout:
    """``lay`` with its nodes renamed by ``mapping`` (old key -> new key), everything else kept."""
    m = mapping.__getitem__

    def pair(e):
        return m(e[0]), m(e[1])

    return dataclasses.replace(
        lay, positions={m(k): v for k, v in lay.positions.items()},
        layers={m(k): v for k, v in lay.layers.items()},
        order=[[m(k) for k in row] for row in lay.order],
        edges={pair(e): v for e, v in lay.edges.items()},
        reversed_edges=[pair(e) for e in lay.reversed_edges],
        sizes={m(k): v for k, v in lay.sizes.items()}, stats={**lay.stats, "reused": True},
        standins={pair(e): v for e, v in lay.standins.items()},
        standin_of={pair(e): pair(s) for e, s in lay.standin_of.items()},
        standin_layers={pair(e): v for e, v in lay.standin_layers.items()})


def reuse(graph: nx.DiGraph, iteration: int, shaped: OrderedDict[tuple, LaidOut]) -> LaidOut | None:
    """``graph`` laid out as one of ``shaped`` (shape -> LaidOut) was when it has its shape (its
    nodes renamed, place by place), else None."""
    if not shaped:
        return None
    labels = {k: node_label(d, k) for k, d in graph.nodes(data=True)}
    shape = shape_of(graph, labels)
    old = shaped.get(shape)
    if old is None:
        return None
    shaped.move_to_end(shape)
    mapping = dict(zip(_places(old.graph), _places(graph)))
    return LaidOut(graph, iteration, labels, relabel_layout(old.layout, mapping))


class LayoutScheduler:
    """Runs one layout at a time, keyed by what fixes the graph; keeps the results it made. A
    graph of the shape last laid out afresh (``shape_of``) takes that layout, renamed: a live
    training loop's new iteration is not laid out again."""

    def __init__(self) -> None:
        self._job: Job | None = None
        self._cache: OrderedDict[Hashable, LaidOut] = OrderedDict()
        # shape_of -> LaidOut of the last fresh layouts (a live iteration's graph is also seen part
        # built, mid-forward: a few shapes each)
        self._shaped: OrderedDict[tuple, LaidOut] = OrderedDict()

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
        # A graph of a shape laid out before (the next iteration's, or one seen part built as
        # the last one was): that layout, renamed.
        result = reuse(graph, iteration, self._shaped)
        if result is not None:
            self.keep(key, result)
            return result
        if graph.number_of_nodes() <= INLINE_LAYOUT_NODES:
            result = lay_out(graph, iteration, previous)
            self._remember(result)
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
        self._remember(result)
        self.keep(job.key, result)
        return job.key, result

    def _remember(self, result: LaidOut) -> None:
        shaped = self._shaped
        shaped[shape_of(result.graph, result.labels)] = result
        while len(shaped) > 1 and (len(shaped) > SHAPES or
                                   sum(r.graph.number_of_nodes() for r in shaped.values()) > LAYOUT_CACHE_NODES):
            shaped.popitem(last=False)

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
