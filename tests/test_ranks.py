"""Data-parallel ranks without a job: the rule that marks a rank, rank file names, a recorder in a
rank, DDP's bucket launch order, ``gradviz run``'s job options (no torch needed)."""
import math

import pytest

from gradviz import events as ev
from gradviz.app.ranks import RankState, outliers
from gradviz.trace.gvz import read_events
from gradviz.trace.ranks import load_ranks, recording_path


def test_outlier_rule():
    assert outliers({0: 1.0, 1: 1.1, 2: 0.9, 3: 1.0, 4: 12.0}) == {4: "norm 12x the median"}
    assert outliers({0: 1.0, 1: 1.1, 2: 0.9, 3: 0.01}) == {3: "norm 0.0105x the median"}  # far below too
    assert outliers({0: 1.0, 1: 1.0, 2: 1.0, 3: 1.5}) == {}  # within a factor of 2: not far
    assert outliers({0: 1.0, 1: 50.0}) == {}  # two ranks: no majority to stand out from
    assert outliers({0: 1.0, 1: math.nan, 2: math.inf}) == {1: "NaN", 2: "Inf"}


def test_recording_path_follows_torchruns_environment():
    assert recording_path("run.gvz", {"RANK": "3", "WORLD_SIZE": "4"}) == "run.rank3.gvz"
    assert recording_path("run.gvz", {}) == "run.gvz"
    assert recording_path("out/run", {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}) == "out/run.rank0.gvz"
    assert recording_path("run.gvz", {"RANK": "5", "WORLD_SIZE": "2"}) == "run.gvz"  # not a rank of that world


def test_record_in_a_rank_writes_that_ranks_file_and_says_which(tmp_path, monkeypatch):
    import gradviz
    import gradviz.engine as engine
    for k, v in {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(k, v)
    with gradviz.record(path=tmp_path / "run.gvz") as rec:
        (engine.ones(3, requires_grad=True) * 2).sum().backward()
    assert rec.path_written == str(tmp_path / "run.rank1.gvz") and not (tmp_path / "run.gvz").exists()
    events = read_events(tmp_path / "run.rank1.gvz")
    assert type(events[0]) is ev.RankInfo and (events[0].rank, events[0].world_size, events[0].backend) == (1, 4, "")
    rs = load_ranks(tmp_path / "run.gvz")
    assert rs.ranks == [1] and rs.world_size == 4 and rs.missing == [0, 2, 3]
    assert "1 of 4 ranks" in RankState(rs).summary() and "no trace of rank 0, 2, 3" in RankState(rs).summary()


def test_a_bucket_is_launched_once_it_and_every_bucket_before_it_are_ready():
    from gradviz.adapters.torch.ddp import _Layout
    a, b, c, d = (object() for _ in range(4))
    layout = _Layout([(0, [a, b]), (1, [c]), (2, [d])])
    assert layout.ready(c) == []  # bucket 1 is ready, but bucket 0 is not: the reducer waits
    assert layout.ready(a) == []
    assert [i for i, _ in layout.ready(b)] == [0, 1]  # bucket 0 now, and bucket 1 right after it
    assert layout.ready(b) == []  # (a gradient accumulated twice launches nothing more)
    assert [i for i, _ in layout.rest()] == [2]  # never ready: told at the end of the pass


@pytest.mark.parametrize("argv, said", [
    (["--nproc-per-node", "2", "--debug-rank", "2"], "--debug-rank 2 is not a rank of 2 (0 to 1)"),
    (["--nproc-per-node", "0"], "--nproc-per-node takes a number of ranks of 1 or more, got 0"),
])
def test_run_refuses_a_rank_outside_the_job_in_one_line(argv, said, tmp_path, capsys):
    from gradviz import cli
    script = tmp_path / "train.py"
    script.write_text("print('never run')\n")
    assert cli.main(["run", *argv, "--screenshot", str(tmp_path / "x.png"), str(script)]) == 2
    err = capsys.readouterr().err
    assert err == f"gradviz run: {said}\n" and not (tmp_path / "x.png").exists()
