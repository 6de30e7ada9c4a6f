"""One rank of tests/test_distributed.py's job: every DistributedDataParallel case the tests check,
one after the other in the same 2 processes (starting a rank costs seconds: importing torch, and
torch._dynamo, which DDP's constructor imports). Each case builds a fresh model and DDP module
from the same seeds; the recorded ones run inside ``gradviz.record(path=...)``, which writes this
rank's own file (FOLDER/run.rankR.gvz for the demo, FOLDER/cases/CASE.rankR.gvz).
Writes FOLDER/results.rankR.json: {case: {"losses": [...], "weights": {...}}}.

    python tests/ddp_job.py FOLDER   (with torchrun's environment: RANK, WORLD_SIZE, MASTER_PORT...)
"""
import json
import os
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

import gradviz
from gradviz.demos import torch_ddp

ITERATIONS, NAN_RANK = 2, 1


class Branches(nn.Module):
    """Two heads; the forward uses only the first (the second's parameters are unused)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.used = nn.Linear(8, 4)
        self.unused = nn.Linear(8, 4)

    def forward(self, x):
        return self.used(x)


def accumulate(rank):
    """Gradient accumulation over two micro-batches: the first's forward inside ``no_sync()`` (its
    backward after it: the forward decides), the second's synchronised."""
    model = nn.parallel.DistributedDataParallel(torch_ddp.make_model(), bucket_cap_mb=torch_ddp.BUCKET_CAP_MB)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for it in range(ITERATIONS):
        optimizer.zero_grad()
        for micro in range(2):
            x, y = torch_ddp.shard(rank, 10 * it + micro)
            if micro == 0:
                with model.no_sync():
                    loss = ((model(x) - y) ** 2).mean()
            else:
                loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            losses.append(loss.item())
        optimizer.step()
    return [x.hex() for x in losses], {}


def main(folder):
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    out = {}

    def case(name, run, recorded=True):
        if recorded:
            where = folder if name == "run" else os.path.join(folder, "cases")  # one recording a folder: run's
            os.makedirs(where, exist_ok=True)
            with gradviz.record(path=os.path.join(where, f"{name}.gvz")):
                losses, weights = run()
        else:
            losses, weights = run()
        out[name] = {"losses": losses, "weights": weights}

    case("plain", lambda: torch_ddp.train(ITERATIONS, NAN_RANK), recorded=False)
    case("run", lambda: torch_ddp.train(ITERATIONS, NAN_RANK))
    case("unused", lambda: torch_ddp.train(ITERATIONS, model=Branches(), find_unused_parameters=True))
    case("static", lambda: torch_ddp.train(ITERATIONS, static_graph=True))
    case("clean", lambda: torch_ddp.train(ITERATIONS), recorded=False)
    case("fp16", lambda: torch_ddp.train(ITERATIONS, comm_hook=default_hooks.fp16_compress_hook))
    case("accumulate", lambda: accumulate(rank))
    with open(os.path.join(folder, f"results.rank{rank}.json"), "w") as f:
        json.dump(out, f)
    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # everything is written: skip the interpreter's teardown of torch (~2 s a rank, measured)


if __name__ == "__main__":
    main(sys.argv[1])
