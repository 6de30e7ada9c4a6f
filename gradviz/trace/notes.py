"""What a trace file says of itself (format version 2's note frames, docs/recording.md): the value
policy it was written by, which iterations kept full arrays, and what it dropped to stay within its
budget; in sentences for ``gradviz info`` and in a few words for the status line."""
from __future__ import annotations

from dataclasses import dataclass


def mib(n):
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


@dataclass
class FileNotes:
    """What a trace file says of itself (format version 2's notes): its value policy, which
    iterations kept full arrays, and what it dropped to stay within its budget."""

    policy: dict | None = None
    full_iterations: list | None = None  # [[first, last], ...] of iterations with arrays in the file
    iterations: int | None = None  # iterations recorded, dropped ones included
    arrays_dropped: int = 0  # iterations whose arrays waited and were dropped (summaries kept)
    arrays_over_budget: int = 0  # arrays left out because full arrays had their share of the budget
    events_dropped: int = 0  # the oldest events, dropped when even the summaries outgrew the budget
    dropped_iterations: tuple | None = None  # (first, last) of the iterations so dropped
    ended: bool = False  # the writer closed the file (its end note was read)

    def take(self, note):
        """Read one note (a dict as the file holds it; a malformed one is ignored: notes are advice)."""
        kind = note.get("note")
        if kind == "policy":
            self.policy = note
        elif kind == "arrays_dropped":
            self.arrays_dropped += 1
        elif kind == "events_dropped" and type(note.get("events")) is int:
            self.events_dropped = note["events"]
            its = note.get("iterations")
            if type(its) is list and len(its) == 2 and all(type(i) is int for i in its):
                self.dropped_iterations = tuple(its)
        elif kind == "end":
            self.ended = True
            full = note.get("full_iterations")
            if type(full) is list and all(type(r) is list and len(r) == 2 and all(type(i) is int for i in r)
                                          for r in full):
                self.full_iterations = full
            for name in ("iterations", "arrays_over_budget", "events_dropped"):
                if type(note.get(name)) is int:
                    setattr(self, name, note[name])

    def _all_full(self):
        """Every iteration recorded kept its full values (nothing for the policy to say)."""
        full = self.full_iterations
        return full is not None and self.iterations is not None and self.iterations > 0 and \
            sum(b - a + 1 for a, b in full) >= self.iterations

    def brief(self):
        """``lines`` in a few words, for a status line."""
        parts = []
        if self.events_dropped:
            its = self.dropped_iterations
            parts.append(f"iterations {its[0]}-{its[1]} dropped (file budget)" if its else
                         f"oldest {self.events_dropped} events dropped (file budget)")
        if self.policy and self.policy.get("file_budget") is not None and not self._all_full():
            if self.full_iterations is not None:
                shown = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in self.full_iterations)
                one = len(self.full_iterations) == 1 and self.full_iterations[0][0] == self.full_iterations[0][1]
                parts.append(f"full values: iteration{'' if one else 's'} {shown}" if shown else "summaries only")
            elif not self.ended:
                parts.append("recording cut short: the last iterations' full values are missing")
        return parts

    def lines(self):
        """What the file lacks, in sentences (empty when it kept everything)."""
        out = []
        if self.events_dropped:
            its = self.dropped_iterations
            which = f" (iterations {its[0]}-{its[1]})" if its else ""
            budget = self.policy.get("file_budget") if self.policy else None
            out.append(f"the oldest {self.events_dropped} events{which} were dropped to keep the file within "
                       f"its budget{f' of {mib(budget)}' if isinstance(budget, int) else ''}")
        if self.policy and self.policy.get("file_budget") is not None and not self._all_full():
            if self.full_iterations is not None:
                shown = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in self.full_iterations)
                one = len(self.full_iterations) == 1 and self.full_iterations[0][0] == self.full_iterations[0][1]
                out.append(f"full values for iteration{'' if one else 's'} {shown}; summaries only for the others"
                           if shown else "summaries only, no full values")
            elif not self.ended:
                out.append("full values only for the iterations the file's policy kept (the recording did not "
                           "end cleanly: the last iterations' arrays are missing)")
        if self.arrays_over_budget:
            out.append(f"{self.arrays_over_budget} arrays kept as summaries only: full values had used their "
                       "share of the file budget")
        return out
