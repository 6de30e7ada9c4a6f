"""Semantic zoom, as plain data (no Qt): zoomed out, the graph view draws a graph's module structure
(one box per module, named, with its node count and gradient norm) instead of nodes too small to
read; zooming in opens the boxes into the nodes.

``module_boxes`` boxes the nodes of a drawn graph by their module scope at one depth (1:
'layer1', 2: 'layer1.0', ...), ``box_grad_norms`` gives each box the norm of its parameters'
``.grad`` after a backward pass, and ``choose_depth`` picks the depth to draw at a view scale.

Which box a node goes in, at depth ``d``: its scope cut to its first ``d`` parts. A node whose
scope is shallower than ``d`` goes in the box of its own, full scope (at depth 2, resnet18's 'fc'
and 'conv1' stay boxes of their own beside 'layer1.0', 'layer1.1', ...: every node of a module is
in exactly one box at every depth, so the picture never loses a module). A node at the top level
(scope '': the view before the classifier, the loss) is in no box: ``loose_nodes`` lists them and
the view draws them as small nodes with their label, so the loss is always seen."""
from __future__ import annotations

import math
from dataclasses import dataclass

from gradviz.app.graphmodel import _get_pass, node_scope

# The view draws a node's label in a 9 pt font (about 12 px) at scale 1.0; below ~0.7 it is under
# 8.5 px, no longer read at a glance (edge labels use the same limit, EDGE_TEXT_LOD). From this
# scale on, the view draws the nodes themselves.
NODE_LABEL_SCALE = 0.7
# A box caption is three lines (name, node count, gradient norm) of 10 px text drawn at a constant
# on-screen size; a box at least this many pixels tall holds it. ``choose_depth`` opens the modules
# one level deeper as soon as the deeper level's boxes (``median_height``) are this tall on screen.
MIN_BOX_PX = 48.0
CAPTION_PX = 10.0  # the caption's text height on screen, whatever the zoom
# Between the depth's boxes growing past this (``median_height`` on screen, a third of the
# view) and NODE_LABEL_SCALE, a box would show nothing but its caption while its nodes could be
# seen: the view then draws the nodes and the boxes as framed, captioned outlines over them.
MAX_BOX_PX = 200.0
# A layered layout interleaves the nodes of small modules (a block's relu, used twice, spans the
# block; a batch norm's parameters sit beside other modules' nodes): their bounding boxes pile up
# and hide each other. A depth whose boxes overlap more than this (the area shared by two boxes,
# over the boxes' area; resnet18: 0.07 at depth 1, 0.13 at 2, 0.33 at 3) is not drawn: zooming in
# goes from the deepest readable depth straight to the nodes.
MAX_OVERLAP = 0.2


@dataclass(frozen=True)
class ModuleBox:
    """One module at one depth: ``scope`` ('layer1.0'), ``rect`` (x0, y0, x1, y1) bounding its
    members' boxes in scene units, ``members`` (the drawn graph's keys inside it, in graph order:
    a collapsed module's box counts as one) and ``keys`` (the original graph's nodes, collapsed
    boxes opened: what ``count`` counts and where ``box_grad_norms`` finds the parameters)."""

    scope: str
    rect: tuple
    members: tuple
    keys: tuple

    @property
    def count(self):
        return len(self.keys)

    def contains(self, x, y):
        x0, y0, x1, y1 = self.rect
        return x0 <= x <= x1 and y0 <= y <= y1


def scope_depth(scope):
    return scope.count(".") + 1 if scope else 0


def max_depth(graph):
    """The deepest module scope's depth in ``graph`` (0: no modules at all)."""
    return max((scope_depth(node_scope(d)) for _, d in graph.nodes(data=True)), default=0)


def box_scope(scope, depth):
    """The box a node of module ``scope`` is drawn in at ``depth``: 'layer1.0.conv1' at depth 1 ->
    'layer1', at 2 -> 'layer1.0'; 'fc' at 2 -> 'fc'; '' (top level) -> '' (no box)."""
    if not scope:
        return ""
    return ".".join(scope.split(".")[:depth])


def _rect(positions, sizes, keys):
    x0 = y0 = math.inf
    x1 = y1 = -math.inf
    for k in keys:
        x, y = positions[k]
        w, h = sizes[k]
        x0, y0 = min(x0, x - w / 2), min(y0, y - h / 2)
        x1, y1 = max(x1, x + w / 2), max(y1, y + h / 2)
    return (x0, y0, x1, y1)


def module_boxes(graph, positions, sizes, depth, members=None):
    """``{scope: ModuleBox}`` of the modules at ``depth`` (>= 1) of a drawn graph, in graph order
    of their first node (see the module docstring for the nodes shallower than ``depth``; nodes at
    the top level are in no box). ``positions``/``sizes``: centres and (w, h), as a ``Layout``
    has them (nodes without a position are left out). ``members``: a drawing's box key ->
    original keys (``Drawing.members``), so that a collapsed module counts its nodes."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    members = members or {}
    drawn, keys = {}, {}
    for k, d in graph.nodes(data=True):
        if k not in positions:
            continue
        scope = box_scope(node_scope(d), depth)
        if not scope:
            continue
        drawn.setdefault(scope, []).append(k)
        keys.setdefault(scope, []).extend(members.get(k, (k,)))
    return {s: ModuleBox(s, _rect(positions, sizes, ks), tuple(ks), tuple(keys[s]))
            for s, ks in drawn.items()}


def boxes_by_depth(graph, positions, sizes, members=None):
    """``{depth: module_boxes(...)}`` for every depth 1 .. ``max_depth(graph)`` (empty: no modules)."""
    return {d: module_boxes(graph, positions, sizes, d, members) for d in range(1, max_depth(graph) + 1)}


def loose_nodes(graph, positions):
    """The drawn nodes in no module (scope ''), in graph order: drawn as nodes beside the boxes."""
    return [k for k, d in graph.nodes(data=True) if k in positions and not node_scope(d)]


def _tensor_id(key):
    return int(key[1:]) if key[:1] == "t" and key[1:].isdigit() else None


def shown_pass(trace, iteration):
    """The index (from the end, as ``box_grad_norms`` takes it) of the last backward pass of
    ``iteration``, or None when none ran (an older pass ran on another iteration's graph)."""
    place = trace.last_pass_of(iteration) if iteration is not None else None
    return None if place is None else place - len(trace.passes)


def box_grad_norms(trace, boxes, pass_index=-1):
    """``{scope: norm or None}``: the L2 norm of each box's parameters' ``.grad`` after the
    backward pass ``pass_index`` (-1: the last; >= 0: the pass of that index), sqrt of the sum of
    the squares of each tensor's norm, over the parameters that pass has reached so far
    (mid-backward, the ones it has); None while it reached none of them (before backward got
    there, or a module without trainable parameters: a relu, a frozen block). ``boxes``:
    ModuleBoxes (a dict of them or a list)."""
    boxes = boxes.values() if isinstance(boxes, dict) else boxes
    p = _get_pass(trace, pass_index)
    out = {}
    for box in boxes:
        total, reached = 0.0, False
        if p is not None:
            for k in box.keys:
                tid = _tensor_id(k)
                got = p.accumulated.get(tid) if tid is not None else None
                if got is None or got[1] is None:
                    continue
                reached = True
                total += float(got[1].summary.l2) ** 2
        out[box.scope] = math.sqrt(total) if reached else None
    return out


def overlap(boxes):
    """The area two boxes share, summed over the pairs of ``boxes`` ({scope: ModuleBox}), over
    the sum of the boxes' areas (0: no box covers another)."""
    rects = sorted((b.rect for b in boxes.values()), key=lambda r: r[0])
    area = sum((r[2] - r[0]) * (r[3] - r[1]) for r in rects)
    shared = 0.0
    for i, a in enumerate(rects):
        for b in rects[i + 1:]:
            if b[0] >= a[2]:
                break
            w, h = min(a[2], b[2]) - b[0], min(a[3], b[3]) - max(a[1], b[1])
            if w > 0 and h > 0:
                shared += w * h
    return shared / area if area > 0 else 0.0


def readable_depths(boxes_by_depth, max_overlap=MAX_OVERLAP):
    """The depths of ``boxes_by_depth`` whose boxes overlap at most ``max_overlap``, and the
    shallowest in any case (a model is always drawn somehow)."""
    depths = sorted(d for d, boxes in boxes_by_depth.items() if boxes)
    return {d: boxes_by_depth[d] for d in depths
            if d == depths[0] or overlap(boxes_by_depth[d]) <= max_overlap}


def choose_depth(boxes_by_depth, scale, min_px=MIN_BOX_PX, node_scale=NODE_LABEL_SCALE):
    """The module depth to draw at view ``scale`` (screen pixels per scene unit): 0 ("draw the
    nodes") from ``node_scale`` on, where node labels are legible, or when there are no modules;
    below it, the deepest depth whose boxes are tall enough for their caption (``median_height``
    times ``scale`` >= ``min_px``), else the shallowest (the whole model in a few boxes). Pass it
    ``readable_depths(...)`` to leave out the depths whose boxes pile up."""
    depths = sorted(d for d, boxes in boxes_by_depth.items() if boxes)
    if scale >= node_scale or not depths:
        return 0
    for d in reversed(depths):
        if median_height(boxes_by_depth[d]) * scale >= min_px:
            return d
    return depths[0]


def median_height(boxes):
    """The height of the box the median drawn node is in (``boxes``: {scope: ModuleBox}), in scene
    units (0 for none): the boxes weighted by the nodes drawn in them, so that a model's few
    one-node modules (resnet18's relu, maxpool, avgpool) do not make its big blocks count as small,
    nor do the collapsed modules around the one opened at the paused node (each drawn as one box)."""
    if not boxes:
        return 0.0
    heights = sorted((b.rect[3] - b.rect[1], len(b.members)) for b in boxes.values())
    half, seen = sum(n for _, n in heights) / 2, 0
    for h, n in heights:
        seen += n
        if seen >= half:
            return h
    return heights[-1][0]


def framed(boxes, scale, max_px=MAX_BOX_PX):
    """Whether ``boxes`` drawn at ``scale`` are so large (median height on screen > ``max_px``)
    that the nodes should be drawn, the boxes as outlines over them."""
    return median_height(boxes) * scale > max_px


def format_norm(norm):
    """'|grad| 1.2e-03' (None: '')."""
    if norm is None:
        return ""
    return f"|grad| {norm:.2g}" if 1e-2 <= norm < 1e3 else f"|grad| {norm:.1e}"
