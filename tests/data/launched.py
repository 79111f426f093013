"""Run by tests/test_distributed.py under `torchrun --nproc_per_node 2` (what `accelerate launch` starts on GPUs).

    launched.py train OUT   train a tiny model 12 steps; rank 0 saves its weights and log to OUT,
                            each rank the rows it trained on to OUT.<rank>.json
    launched.py cache OUT   ask the artifact cache for one key twice and for one failing build; each rank
                            writes what it saw to OUT.<rank>.json
"""

import json
import sys

import torch

from tunestudy import cache, distributed, models, tuning


def batches():
    """Five rows (the two processes take 3 and 2), scored tokens of different counts per row."""
    g = torch.Generator().manual_seed(3)
    while True:
        ids = torch.randint(0, 50, (5, 12), generator=g)
        loss_mask = (torch.rand(5, 12, generator=g) < 0.5).long()
        yield ids, torch.ones_like(ids), loss_mask, ["a", "b", "a", "b", "b"]


def train(out):
    model = models.build_model("tiny", 50, seed=0)
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []  # the rows of each batch this process's forward passes see
    model.register_forward_pre_hook(lambda _, args, kwargs: rows.append(len(kwargs["input_ids"])), with_kwargs=True)
    log = tuning.train_loop(model, params, batches(), 12, 3e-3, desc="launched")
    with open(f"{out}.{distributed.rank()}.json", "w") as f:
        json.dump(rows, f)
    if distributed.is_main():
        torch.save({"weights": model.state_dict(), "log": log, "world": distributed.world()}, out)


def ask_cache(out):
    builds = []

    def build(folder):
        builds.append(distributed.rank())
        (folder / "made_by.txt").write_text(str(distributed.rank()))

    first = cache.cached("launched", {"n": 1}, build, sources=())
    again = cache.cached("launched", {"n": 1}, build, sources=())

    def broken(folder):
        (folder / "half.txt").write_text("half")
        raise RuntimeError("broken build")

    try:
        cache.cached("launched", {"n": 2}, broken, sources=())
        failed = None
    except RuntimeError as err:
        failed = str(err)
    seen = {"first": str(first), "again": str(again), "made_by": (first / "made_by.txt").read_text(),
            "builds": builds, "failed": failed, "built": cache.is_built("launched", {"n": 1}, sources=())}
    with open(f"{out}.{distributed.rank()}.json", "w") as f:
        json.dump(seen, f)


if __name__ == "__main__":
    {"train": train, "cache": ask_cache}[sys.argv[1]](sys.argv[2])
