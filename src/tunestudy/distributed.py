"""Several processes at once (`accelerate launch`, `torchrun`): who is who, and where they meet.

A launcher starts the same command once per device and tells each process its
place in the environment (RANK, WORLD_SIZE, LOCAL_RANK). Every process then
runs the whole chapter: the same seeds, the same cached steps, in the same
order. They differ in three places only:

- `tuning.train_loop` gives each process its share of every batch's rows and
  takes the loss over the whole batch, so the averaged gradient is the one
  a single process would take on the whole batch (to rounding);
- `cache.cached` lets the first process (rank 0) decide whether an artifact is
  built and write it; the others build beside it, since their part of the
  training needs them, and then read rank 0's folder;
- `runs.run_chapter` writes the page, figures and results of rank 0 only.

In one process (every default, and every test but the launch tests) nothing
here does anything: `launched()` is False and the code paths are the ones the
book always ran.
"""

from __future__ import annotations

import os


def world() -> int:
    """The number of processes the launcher started (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    """This process's place among them, 0 first (0 without a launcher)."""
    return int(os.environ.get("RANK", "0") or 0)


def launched() -> bool:
    return world() > 1


def is_main() -> bool:
    return rank() == 0


def state():
    """Accelerate's process state, created on first use on the device the study uses (the CPU here: gloo).

    Every process must come here before its first collective step; `cache.cached` does, so the group is
    joined before any artifact is looked up.
    """
    from accelerate import PartialState

    from .models import device
    return PartialState(cpu=device().type == "cpu")


def barrier() -> None:
    if launched():
        state().wait_for_everyone()


def main_decides(value):
    """Rank 0's `value` on every process (a picklable object); `value` itself in one process."""
    if not launched():
        return value
    from accelerate.utils import broadcast_object_list
    state()
    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def gathered(values: list) -> list:
    """Every process's list, joined in rank order; `values` itself in one process."""
    if not launched():
        return values
    from accelerate.utils import gather_object
    state()
    return gather_object(list(values))


def shard_rows(num_rows: int, rank_: int, world_: int) -> range:
    """The contiguous rows of a batch that process `rank_` of `world_` trains on (torch.tensor_split's split:
    the first num_rows % world_ processes take one row more)."""
    if num_rows < world_:
        raise ValueError(f"batch_size must be at least the number of processes ({world_}), got {num_rows}")
    size, extra = divmod(num_rows, world_)
    start = rank_ * size + min(rank_, extra)
    return range(start, start + size + (1 if rank_ < extra else 0))
