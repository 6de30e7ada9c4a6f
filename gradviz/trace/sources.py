"""The text of a source line that a trace names. A recording carries the text of each line it names
(``SourceText`` events, read here by the producer as the program runs); where a trace lacks it, the
file is read, but only a regular file of a sane size: a trace may name /dev/zero or a FIFO, which
would block the reader or never end."""
from __future__ import annotations

import linecache
import os
import stat

SOURCE_MAX_BYTES = 8 * 2**20  # a source file larger than this is not read for its line
LINE_MAX_CHARS = 1_000  # a longer line (minified code, a data literal) is cut to this


def read_line(file: str, line: int, fresh: bool = False) -> str:
    """The text of ``file``'s line ``line`` without its line break, or "" where there is none to
    read: code Python already holds in ``linecache`` (a notebook cell, code registered for exec),
    else a regular file of at most ``SOURCE_MAX_BYTES``. ``fresh``: a file read before is read
    again if it changed since (``linecache.checkcache``; code registered for exec stays)."""
    if type(line) is not int or line < 1:
        return ""
    if fresh:
        linecache.checkcache(file)
    if file not in linecache.cache:
        try:
            st = os.stat(file)
        except (OSError, ValueError):
            return ""
        if not stat.S_ISREG(st.st_mode) or st.st_size > SOURCE_MAX_BYTES:
            return ""
    try:
        return linecache.getline(file, line).rstrip()[:LINE_MAX_CHARS]
    except (OSError, ValueError, UnicodeError, SyntaxError):
        return ""
