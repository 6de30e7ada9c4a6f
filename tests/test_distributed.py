"""Data-parallel ranks: one 2-rank DistributedDataParallel job on gloo (CPU) runs every case in
the same two processes (tests/ddp_job.py: the demo plain, then recorded, then find_unused_parameters,
static_graph, an fp16 comm hook and no_sync() accumulation); the stepping test starts a second job."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not (dist.is_available() and dist.is_gloo_available()):
    pytest.skip("torch.distributed with the gloo backend is not available", allow_module_level=True)

from gradviz import events as ev  # noqa: E402
from gradviz.app.ranks import RankState, compare  # noqa: E402
from gradviz.debug.job import free_port, record_command, start_ranks  # noqa: E402
from gradviz.demos import torch_ddp  # noqa: E402
from gradviz.trace.files import load  # noqa: E402
from gradviz.trace.gvz import read_events  # noqa: E402
from gradviz.trace.ranks import load_ranks, rank_files, rank_path  # noqa: E402

WORLD = 2
ARGS = ["--iterations", "2", "--nan-rank", "1"]  # tests/ddp_job.py's ITERATIONS, NAN_RANK
JOB = os.path.join(os.path.dirname(__file__), "ddp_job.py")


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """(folder, {rank: {case: results}}) of tests/ddp_job.py's job."""
    folder = tmp_path_factory.mktemp("ddp")
    with open(folder / "out.txt", "wb") as out:
        ranks = start_ranks(lambda r: [sys.executable, JOB, str(folder)], range(WORLD), WORLD, free_port(), cwd=folder,
                            stdout=out, stderr=subprocess.STDOUT, extra_env={"OMP_NUM_THREADS": "1"})
    try:
        status = ranks.wait(timeout=180)
    finally:
        ranks.stop()
    assert status == {0: 0, 1: 0}, (folder / "out.txt").read_text()
    return folder, {r: json.loads((folder / f"results.rank{r}.json").read_text()) for r in range(WORLD)}


@pytest.fixture(scope="module")
def job(cases):
    """(folder, plain results, recorded results) of the demo's run: {rank: {losses, weights}}."""
    folder, results = cases
    return folder, {r: results[r]["plain"] for r in results}, {r: results[r]["run"] for r in results}


def test_every_rank_records_its_own_file_knowing_rank_world_and_backend(job):
    folder, _, _ = job
    assert sorted(os.path.basename(f) for f in rank_files(folder / "run.gvz").values()) == \
        ["run.rank0.gvz", "run.rank1.gvz"]
    for r in range(WORLD):
        trace = load(rank_path(folder / "run.gvz", r))
        assert (trace.rank.rank, trace.rank.world_size, trace.rank.local_rank, trace.rank.backend) == \
            (r, WORLD, r, "gloo")
        assert len(trace.passes) == 2 and trace.passes[-1].finished


def test_recording_does_not_change_ddp_results(job):
    _, plain, recorded = job
    assert plain == recorded  # losses and weights, bit for bit (hex of the float32 bytes)
    assert plain[0]["weights"] == plain[1]["weights"]


def _params(trace, iteration):
    p = trace.passes[trace.last_pass_of(iteration)]
    return {trace.tensors[t].name: (local, p.synchronized[t]) for t, (_, local) in p.accumulated.items()}


def test_local_gradients_are_each_ranks_own_and_the_synchronised_grad_their_mean(job):
    folder, _, _ = job
    rs = load_ranks(folder / "run.gvz")
    got = {r: _params(rs.traces[r], 0) for r in range(WORLD)}
    for r in range(WORLD):
        model = torch_ddp.make_model()  # the same start, without DDP, on rank r's shard
        x, y = torch_ddp.shard(r, 0)
        ((model(x) - y) ** 2).mean().backward()
        for name, q in model.named_parameters():
            # (named as the program's DDP module names them: module.0.weight)
            np.testing.assert_allclose(got[r][f"module.{name}"][0].array, q.grad.numpy(), rtol=1e-6, atol=1e-7)
    for name in got[0]:
        mean = (got[0][name][0].array + got[1][name][0].array) / 2
        for r in range(WORLD):
            np.testing.assert_allclose(got[r][name][1].array, mean, rtol=1e-6, atol=1e-7)
        assert not np.array_equal(got[0][name][0].array, got[1][name][0].array)  # two shards, two gradients


def test_bucket_reductions_are_events_of_their_own_in_the_pass(job):
    folder, _, _ = job
    events = read_events(rank_path(folder / "run.gvz", 0))
    trace = load(rank_path(folder / "run.gvz", 0))
    params = {t.id for t in trace.tensors.values() if t.kind == "parameter"}
    for p in trace.passes:
        held = [t for b in p.buckets for t in b.params]
        assert sorted(held) == sorted(params)  # each parameter in one bucket
    last = trace.passes[-1]
    # After DDP rebuilt its buckets (iteration 1): two, the first launched while backward still ran.
    assert [b.bucket for b in last.buckets] == [0, 1]
    first = next(i for i, e in enumerate(events) if type(e) is ev.BucketReduced and e.pass_index == last.index)
    later = [e for e in events[first:] if type(e) is ev.NodeEntered and e.pass_index == last.index]
    assert later, "the first bucket's all-reduce was launched before the pass's last nodes ran"
    after = last.buckets[0].after_node
    assert trace.nodes[after].kind == "accumulate_grad"
    assert set(last.buckets[0].params) == {trace.nodes[after].output} | set(last.buckets[0].params)


def test_a_rank_given_a_nan_batch_is_marked(job):
    folder, _, _ = job
    state = RankState(load_ranks(folder))
    assert state.iteration == 1
    marked = state.marked
    assert list(marked) == [1] and all("NaN" in why for why in marked[1])
    assert "rank 1" in state.summary() and "stands out" in state.summary()
    assert compare(state.rankset, 0) and not any(row.marked for row in compare(state.rankset, 0))


def test_rank_set_from_a_file_from_the_recorded_name_and_from_the_folder(job, tmp_path):
    folder, _, _ = job
    for path in (folder / "run.rank1.gvz", folder / "run.gvz", folder):
        rs = load_ranks(path)
        assert rs.ranks == [0, 1] and rs.world_size == 2 and rs.backend == "gloo" and not rs.missing
    # A rank that died mid-write: read up to its last whole event, and said so.
    cut = tmp_path / "cut"
    cut.mkdir()
    shutil.copy(folder / "run.rank0.gvz", cut / "run.rank0.gvz")
    data = (folder / "run.rank1.gvz").read_bytes()
    (cut / "run.rank1.gvz").write_bytes(data[:len(data) * 2 // 3])
    rs = load_ranks(cut / "run.gvz")
    assert rs.ranks == [0, 1] and list(rs.problems) == [1] and "truncated" in rs.problems[1]
    assert rs.traces[1].rank.rank == 1 and len(rs.traces[1].events) < len(rs.traces[0].events)


def test_rank_selector_shows_the_chosen_ranks_graph_and_marks_the_nan_rank(job, qtbot):
    pytest.importorskip("PySide6")
    from gradviz.app.state import AppState
    from gradviz.ui.main_window import MainWindow
    from gradviz.ui.rank_view import add_rank_view
    folder, _, _ = job
    ranks = RankState(load_ranks(folder / "run.rank1.gvz"))
    state = AppState(trace=ranks.trace)
    window = MainWindow(state, "job")
    qtbot.addWidget(window)
    view = add_rank_view(window, ranks)
    box = view.selector
    assert [box.itemData(i) for i in range(box.count())] == [0, 1]
    assert box.itemText(0) == "rank 0" and box.itemText(1).startswith("rank 1  ⚠ NaN in module.")
    assert state.live_trace is ranks.rankset.traces[0] and window.windowTitle().endswith("rank 0")
    headers = [view.table.horizontalHeaderItem(j).text() for j in range(view.table.columnCount())]
    assert headers == ["parameter", "rank 0 local", "rank 1 local", "synchronised", "spread"]
    assert view.table.item(0, 0).text() == "module.0.weight" and view.table.item(0, 2).text() == "NaN"
    assert view.table.item(0, 2).toolTip() == "rank 1: NaN" and not view.table.item(0, 1).toolTip()
    assert "bucket 0" in view.buckets.text() and "bucket 1" in view.buckets.text()
    with qtbot.waitSignal(view.rankChanged) as got:
        box.setCurrentIndex(1)
    assert got.args == [1] and ranks.selected == 1
    assert state.live_trace is ranks.rankset.traces[1] and window.windowTitle().endswith("rank 1")
    qtbot.waitUntil(lambda: state.layout is not None and not state.laying_out)
    window.poll()
    assert state.graph.number_of_nodes() > 0
    drawn = window.view.model.drawing().graph  # what the view draws is rank 1's graph
    assert set(drawn) <= set(ranks.rankset.traces[1].graph) and drawn is state.graph
    view.iteration.setCurrentIndex(0)  # the first iteration: no NaN yet; rank 1's comes later
    assert ranks.iteration == 0 and box.itemText(1) == "rank 1  ⚠ in iteration 1"
    assert view.table.item(0, 2).text() != "NaN" and not view.table.item(0, 2).toolTip()
    assert "stands out elsewhere: rank 1 (iteration 1)" in view.summary.text()
    assert box.currentIndex() == 1  # the rank shown stays chosen
    # the window's graph shows the iteration compared: its end, before iteration 1 starts
    starts = [k for k, e in enumerate(state.live_trace.events) if type(e).__name__ == "IterationStarted"]
    assert state.time == starts[1] and state.timeline.trace_at(state.time).iterations == 1
    view.iteration.setCurrentIndex(view.iteration.count() - 1)  # the last: live again
    assert state.time is None


def test_stepping_one_rank_while_the_other_waits_at_its_collective(job, tmp_path, monkeypatch):
    """gradviz run --nproc-per-node 2 --debug-rank 1, headless: rank 1 under the debugger, rank 0
    recorded. Paused inside backward, the pass shows the bucket DDP launched so far; the job then
    ends with the results of the run without gradviz."""
    from gradviz import Debugger
    from gradviz.app.ranks import BUCKET_BADGE, bucket_badges, bucket_note, rank_note
    from gradviz.debug.job import rank_env
    _, plain, _ = job
    args = ARGS + ["--results", str(tmp_path / "results")]
    port = free_port()
    with open(tmp_path / "out.txt", "wb") as out:
        others = start_ranks(lambda r: record_command(tmp_path / "run.gvz", script=torch_ddp.__file__, args=args),
                             [0], WORLD, port, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                             extra_env={"OMP_NUM_THREADS": "1"})
    for k, v in rank_env(1, WORLD, port, base={}).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        with Debugger.launch(script=torch_ddp.__file__, args=args, breakpoints=[{"op": "TanhBackward0"}],
                             cwd=str(tmp_path), start_timeout=120) as dbg:
            first = dbg.wait_paused(timeout=120)
            assert (first.op, first.pass_index) == ("TanhBackward0", 0)
            assert rank_note(dbg.trace) == "rank 1 of 2"
            assert bucket_note(dbg.trace, 0) == ""  # iteration 0: one bucket, ready only at the end
            dbg.resume()
            second = dbg.wait_paused(timeout=120)
            assert (second.op, second.pass_index) == ("TanhBackward0", 1)
            # DDP rebuilt its buckets: the second layer's is being reduced while backward still runs
            assert bucket_note(dbg.trace, 1) == "DDP all-reduce launched: bucket 0 (2 params)"
            # drawn on the graph while stepping: after the AccumulateGrad that made it ready, and no other yet
            (bucket,) = dbg.trace.passes[-1].buckets
            assert bucket_badges(dbg.trace, dbg.trace.graph, 1) == \
                {f"n{bucket.after_node}": ("all-reduce bucket 0", BUCKET_BADGE)}
            assert others.procs[0].poll() is None  # rank 0 waits for rank 1 at the collective
            dbg.resume()
            assert dbg.wait_paused(timeout=120).reason == "exited"
        assert others.wait(timeout=120) == {0: 0}
    finally:
        others.stop()
    got = {r: json.loads((tmp_path / f"results.rank{r}.json").read_text()) for r in range(WORLD)}
    assert got == plain


def test_a_rank_that_died_mid_pass_is_compared_where_it_has_gradients(job, tmp_path):
    from gradviz.trace.gvz import write_trace
    folder, _, _ = job
    shutil.copy(folder / "run.rank0.gvz", tmp_path / "run.rank0.gvz")
    events = read_events(folder / "run.rank1.gvz")
    started = next(i for i, e in enumerate(events) if type(e) is ev.BackwardStarted and e.pass_index == 1)
    write_trace(tmp_path / "run.rank1.gvz", events[:started + 1])  # killed as its second pass began
    state = RankState(load_ranks(tmp_path))
    assert state.iteration == 0  # the last iteration both ranks finished a backward pass of
    assert not state.without_gradients() and all(len(row.local) == 2 for row in state.rows)
    state.set_iteration(1)
    names, norms = state.flow()
    assert norms[1] == [None] * len(names) and all(n is not None for n in norms[0])
    assert state.without_gradients() == [1] and "no gradients from rank 1" in state.summary()
    assert not state.marked  # a rank with no gradient is not a rank with a NaN


def test_bucket_all_reduces_are_badges_on_the_graph(job, qtbot):
    """Each bucket's all-reduce is drawn on the AccumulateGrad node after which DDP launched it (a
    bucket reduced only when the pass ended, on its last node): in the overlay, and on the items."""
    from gradviz.app.ranks import BUCKET_BADGE
    from gradviz.app.state import AppState
    from gradviz.trace.model import node_key
    folder, _, _ = job
    trace = load(rank_path(folder / "run.gvz", 0))
    state = AppState(trace=trace)
    state.wait_layout()
    assert state.iteration == 1
    last = trace.passes[-1]
    first, second = last.buckets  # bucket 0 launched mid-pass, bucket 1 after the last AccumulateGrad
    badges = {k: v for k, v in state.graph_model.overlay().badges.items() if v[1] == BUCKET_BADGE}
    assert badges == {node_key(first.after_node): ("all-reduce bucket 0", BUCKET_BADGE),
                      node_key(second.after_node): ("all-reduce bucket 1", BUCKET_BADGE)}
    assert last.order.index(first.after_node) < len(last.order) - 1
    assert state.graph.nodes[node_key(first.after_node)]["kind"] == "accumulate_grad"
    pytest.importorskip("PySide6")
    from gradviz.ui.main_window import MainWindow
    window = MainWindow(state, "rank 0")
    qtbot.addWidget(window)
    window.poll()
    assert window.view.items_by_key[node_key(first.after_node)].badge[0] == "all-reduce bucket 0"
    assert window.view.items_by_key[node_key(second.after_node)].badge[0] == "all-reduce bucket 1"


def _case(folder, name, rank=0):
    return load(rank_path(folder / "cases" / f"{name}.gvz", rank))


def _synced_is_mean(folder, name, pass_index):
    """Each rank's synchronised .grad beside the mean of the ranks' local ones: {param: (synced, mean)}."""
    traces = [_case(folder, name, r) for r in range(WORLD)]
    out = {}
    for tid, synced in traces[0].passes[pass_index].synchronized.items():
        name_ = traces[0].tensors[tid].name
        locals_ = []
        for t in traces:
            p = t.passes[pass_index]
            tid_r = next(i for i in p.accumulated if t.tensors[i].name == name_)
            locals_.append(p.accumulated[tid_r][1].array)
        out[name_] = (synced.array, sum(locals_) / len(locals_))
    return out


def test_find_unused_parameters_launches_the_unused_bucket_at_the_first_hook(cases):
    """DDP marks the parameters the pass cannot reach ready at its first hook: a bucket of unused
    parameters only goes then, not at the end of the pass; unused parameters get no .grad."""
    folder, _ = cases
    trace = _case(folder, "unused")
    params = {t.id: t.name for t in trace.tensors.values() if t.kind == "parameter"}
    for p in trace.passes:
        first_acc = next(n for n in p.order if trace.nodes[n].kind == "accumulate_grad")
        assert sorted(t for b in p.buckets for t in b.params) == sorted(params)
        unused_only = [b for b in p.buckets if all("unused" in params[t] for t in b.params)]
        assert unused_only and all(b.after_node == first_acc for b in unused_only)
        assert sorted(params[t] for t in p.synchronized) == ["module.used.bias", "module.used.weight"]
    for name, (synced, mean) in _synced_is_mean(folder, "unused", 0).items():
        np.testing.assert_allclose(synced, mean, rtol=1e-6, atol=1e-7, err_msg=name)


def test_static_graph_reduces_every_bucket_at_the_end_of_its_first_pass(cases):
    folder, results = cases
    trace = _case(folder, "static")
    assert [b.after_node for b in trace.passes[0].buckets] == [None] * len(trace.passes[0].buckets)
    assert all(b.after_node is not None for b in trace.passes[1].buckets)
    assert results[0]["static"] == results[0]["clean"]  # static_graph changes when, not what


def test_a_comm_hook_s_result_is_the_synchronised_grad(cases):
    """register_comm_hook(fp16_compress_hook): the buckets go as without it, and the synchronised
    .grad recorded is the hook's (the mean rounded to float16), not a float32 mean."""
    folder, results = cases
    assert [[b.bucket for b in p.buckets] for p in _case(folder, "fp16").passes] == \
        [[b.bucket for b in p.buckets] for p in load(rank_path(folder / "run.gvz", 0)).passes]
    for name, (synced, mean) in _synced_is_mean(folder, "fp16", 1).items():
        np.testing.assert_array_equal(synced, synced.astype(np.float16).astype(np.float32))
        np.testing.assert_allclose(synced, mean, rtol=2e-3, atol=1e-4, err_msg=name)
    assert results[0]["fp16"]["weights"] != results[0]["clean"]["weights"]


def test_a_forward_under_no_sync_reduces_nothing_in_its_backward(cases):
    """Gradient accumulation: the first micro-batch's forward ran inside no_sync() (its backward
    after it): that pass has no bucket and no synchronised .grad; the next pass reduces the sum."""
    from gradviz.app.ranks import bucket_note
    folder, _ = cases
    trace = _case(folder, "accumulate")
    assert [p.iteration for p in trace.passes] == [0, 0, 1, 1]
    for p in trace.passes[0::2]:
        assert not p.buckets and not p.synchronized and bucket_note(trace, p.index) == ""
    for p in trace.passes[1::2]:
        assert p.buckets and len(p.synchronized) == 4
    for name, (synced, mean) in _synced_is_mean(folder, "accumulate", 1).items():
        np.testing.assert_allclose(synced, mean, rtol=1e-6, atol=1e-7, err_msg=name)


def test_info_on_a_rank_file_and_on_the_job(job, tmp_path, capsys):
    from gradviz.cli import main
    folder, _, _ = job
    assert main(["info", str(folder / "run.rank1.gvz")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == ["rank 1 of 2 (gloo)", "the other ranks' files: run.rank0.gvz",
                       f"the whole job: gradviz info {folder}"]
    assert out[4].startswith("24 nodes")  # then what info says of any trace
    for path in (folder, folder / "run.gvz"):
        assert main(["info", str(path)]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0] == f"data-parallel job of 2 ranks (gloo): 2 rank files in {folder}"
        assert out[1] == "  rank 0: run.rank0.gvz  2 iterations, 2 backward passes, 3 bucket all-reduces"
        assert out[2] == "  rank 1: run.rank1.gvz  2 iterations, 2 backward passes, 3 bucket all-reduces"
        assert out[3].startswith("2 of 2 ranks (gloo); iteration 1; stands out: rank 1")
        assert out[4].startswith("  rank 1: NaN in module.")
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(folder / "run.rank1.gvz", alone / "run.rank1.gvz")
    assert main(["info", str(alone / "run.rank1.gvz")]) == 0
    assert capsys.readouterr().out.splitlines()[1:3] == ["the other ranks' files: none found beside it",
                                                        "no file of rank 0"]
    shutil.copy(folder / "run.rank0.gvz", alone / "other.rank0.gvz")
    assert main(["info", str(alone)]) == 1
    assert capsys.readouterr().err == \
        f"gradviz: {alone}: {alone} holds the ranks of 2 recordings (other, run): open one of their files\n"
