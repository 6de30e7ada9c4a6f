"""Where each node of a graph is drawn: a layered (Sugiyama-style) layout."""
