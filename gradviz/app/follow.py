"""Following the debugger (no Qt): when the program pauses, the graph view brings the paused node
into view, readable, the way an IDE scrolls to the current line, unless the user has moved the
view since the last pause (a pan, a drag, a wheel zoom, a fit); the Follow switch brings it back.

``Follow`` holds that rule; ``legible_scale``, ``target_scale``, ``neighbour_boxes`` and
``focus_rect`` are the geometry the view applies: the scale at which a node's label is at least
9 pt on screen, and the scene rect to centre on (the node and its neighbours in the drawn graph,
as much of them as fits the viewport, centred on the node). A box is ``(x, y, w, h)``: its
top-left corner and size, in scene units."""
from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any

NODE_FONT_PT = 9.0  # the node labels' font at view scale 1.0
LEGIBLE_PT = 9.0    # the smallest label size on screen that reads comfortably

Box = tuple[float, float, float, float]


class Follow:
    """Whether the view follows the paused node, and the node it would go to."""

    def __init__(self) -> None:
        self.following = True
        self.current: Hashable | None = None  # the node of the last pause

    def on_pause(self, key: Hashable | None) -> Hashable | None:
        """The program paused at ``key`` (None: not at a node): the node to bring into view, or
        None when not following."""
        self.current = key
        return key if self.following else None

    def on_user_moved(self) -> None:
        """The user panned, dragged or zoomed the view since the last pause: stop following."""
        self.following = False

    def set_following(self, on: bool) -> Hashable | None:
        """The Follow switch; turned on, returns the node to go to now (None if there is none)."""
        self.following = bool(on)
        return self.current if self.following else None


def legible_scale(font_pt: float = NODE_FONT_PT, min_pt: float = LEGIBLE_PT) -> float:
    """The smallest view scale at which a ``font_pt`` label shows at least ``min_pt`` on screen."""
    return min_pt / font_pt


def target_scale(current_scale: float, font_pt: float = NODE_FONT_PT, min_pt: float = LEGIBLE_PT) -> float:
    """The scale to show the paused node at: the user's own if legible, else the legible one
    (never zoomed out, not even to show more neighbours)."""
    return max(current_scale, legible_scale(font_pt, min_pt))


def neighbour_boxes(graph: Any, positions: Mapping[Hashable, tuple[float, float]],
                    sizes: Mapping[Hashable, tuple[float, float]], key: Hashable) -> list[Box]:
    """The boxes of ``key`` (first) and of its predecessors and successors in ``graph`` (a
    networkx DiGraph), from a layout's centres and sizes; nodes the layout lacks are left out."""
    def box(k: Hashable) -> Box:
        (x, y), (w, h) = positions[k], sizes[k]
        return x - w / 2, y - h / 2, w, h

    if key not in positions:
        return []
    out = [box(key)]
    if key in graph:
        seen = {key}
        for k in list(graph.predecessors(key)) + list(graph.successors(key)):
            if k not in seen and k in positions:
                seen.add(k)
                out.append(box(k))
    return out


def united(boxes: Iterable[Box]) -> Box:
    it = iter(boxes)
    x0, y0, w, h = next(it)
    x1, y1 = x0 + w, y0 + h
    for x, y, w, h in it:
        x0, y0, x1, y1 = min(x0, x), min(y0, y), max(x1, x + w), max(y1, y + h)
    return x0, y0, x1 - x0, y1 - y0


def focus_rect(boxes: list[Box], view_w: float, view_h: float, scale: float, margin: float = 24.0) -> Box:
    """The scene rect to show, ``boxes`` being the node's box then its neighbours'
    (``neighbour_boxes``): all of them united, clipped to what a ``view_w`` x ``view_h`` pixel
    viewport shows at ``scale`` (less ``margin`` pixels each side) centred on the node."""
    node = boxes[0]
    x0, y0, w, h = united(boxes)
    cx, cy = node[0] + node[2] / 2, node[1] + node[3] / 2
    half_w = max(view_w / 2 - margin, 1.0) / scale
    half_h = max(view_h / 2 - margin, 1.0) / scale
    left, top = max(x0, cx - half_w), max(y0, cy - half_h)
    right, bottom = min(x0 + w, cx + half_w), min(y0 + h, cy + half_h)
    return left, top, right - left, bottom - top


def contains(outer: Box, inner: Box) -> bool:
    return (outer[0] <= inner[0] and outer[1] <= inner[1] and
            inner[0] + inner[2] <= outer[0] + outer[2] and inner[1] + inner[3] <= outer[1] + outer[3])
