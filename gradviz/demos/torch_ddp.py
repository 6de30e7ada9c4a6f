"""A small MLP trained data-parallel with DistributedDataParallel on the gloo backend (CPU): each
rank draws its own shard, DDP averages the gradients in two buckets. Run it as a job, e.g.

    torchrun --nproc_per_node=2 --no-python gradviz record gradviz/demos/torch_ddp.py -o run.gvz
    gradviz run --nproc-per-node 2 gradviz/demos/torch_ddp.py

Options: ``--iterations N``, ``--nan-rank R`` (rank R's last batch holds a NaN: a bad shard),
``--results PATH`` (each rank writes its losses and final weights, exactly, to PATH.rankR.json).
Needs torch; gradviz's distributed tests run it."""
import argparse
import json
import math

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

BUCKET_CAP_MB = 0.0002  # small enough that this model's gradients go in two buckets


def make_model():
    torch.manual_seed(0)  # every rank starts from the same weights (DDP also broadcasts rank 0's)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))


def shard(rank, iteration, nan_rank=-1, last=-1):
    """Rank ``rank``'s batch of an iteration: (inputs, targets)."""
    g = torch.Generator().manual_seed(1000 * iteration + rank)
    x, y = torch.randn(4, 8, generator=g), torch.randn(4, 4, generator=g)
    if rank == nan_rank and iteration == last:
        x[0, 0] = math.nan
    return x, y


def train(iterations=3, nan_rank=-1, model=None, comm_hook=None, **ddp_options):
    """Train on this rank (the process group is up) for ``iterations``; ``ddp_options`` go to
    DistributedDataParallel, ``comm_hook`` (e.g. ``fp16_compress_hook``) to its
    ``register_comm_hook``. (losses, final weights): the losses as float hex strings, the weights
    as the hex of their bytes, so that two runs compare bit for bit."""
    rank = dist.get_rank()
    ddp_options.setdefault("bucket_cap_mb", BUCKET_CAP_MB)
    model = DistributedDataParallel(make_model() if model is None else model, **ddp_options)
    if comm_hook is not None:
        model.register_comm_hook(None, comm_hook)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for it in range(iterations):
        x, y = shard(rank, it, nan_rank, iterations - 1)
        optimizer.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        print(f"rank {rank} iteration {it}: loss {loss.item():.4f}")
    weights = {k: v.detach().numpy().tobytes().hex() for k, v in model.module.state_dict().items()}
    return [x.hex() for x in losses], weights


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--nan-rank", type=int, default=-1)
    parser.add_argument("--results")
    args = parser.parse_args(argv)
    dist.init_process_group("gloo")  # rank, world size and rendezvous from torchrun's environment
    losses, weights = train(args.iterations, args.nan_rank)
    if args.results:
        with open(f"{args.results}.rank{dist.get_rank()}.json", "w") as f:
            json.dump({"losses": losses, "weights": weights}, f)
    dist.destroy_process_group()
    return losses


if __name__ == "__main__":
    main()
