"""How the pretraining learning rate decides whether the base learns its facts, per seed.

    python bench/sweep_pretrain.py [--lrs 3e-3,6e-3,1e-2] [--seeds 0,1,2] [--epochs 30] [--every 5]

For every (learning rate, seed) it pretrains the default synthetic base from
scratch (not through the cache) and prints the mean completion-probe accuracy
on known people every `--every` epochs, plus the wall-clock time. This is the
sweep behind the default `pretrain_lr`: the chapters need every seed's base to
know its known people (target 0.90). About 2.5 min per run on an idle 2-core
machine, so the default sweep takes about 20 min.
"""

from __future__ import annotations

import argparse
import time
import torch

from tunestudy import models, pipeline as P, tuning, world as W
from tunestudy.experiments import parse_float_list


def run(seed: int, lr: float, epochs: int, every: int) -> dict:
    spec = P.base_spec(seed=seed, pretrain_epochs=epochs, pretrain_lr=lr)
    world = W.generate_world(spec.world)
    tokenizer = models.train_tokenizer(P.tokenizer_texts(world))
    model = models.build_model(spec.pretrain.size, len(tokenizer), seed)
    known = [p for p in world.people if p.known]
    curve = {}
    start = time.perf_counter()

    def probe(epoch):
        model.eval()
        accuracy = P.probe(model, tokenizer, known)
        curve[epoch] = sum(accuracy.values()) / len(accuracy)
        model.train()

    tuning.pretrain(model, tokenizer, W.pretraining_corpus(world), spec.pretrain,
                    snapshot_epochs=list(range(every, epochs + 1, every)), on_snapshot=probe)
    return {"curve": curve, "seconds": time.perf_counter() - start}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lrs", default="3e-3,6e-3,1e-2")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    lrs = parse_float_list("--lrs", args.lrs)
    try:
        seeds = [int(v) for v in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers >= 0, got {args.seeds!r}")
    torch.set_num_threads(args.threads)
    print(f"{'lr':>8} {'seed':>4} " + " ".join(f"ep{e:<4}" for e in range(args.every, args.epochs + 1, args.every))
          + "  seconds")
    for lr in lrs:
        for seed in seeds:
            out = run(seed, lr, args.epochs, args.every)
            print(f"{lr:>8.0e} {seed:>4} " + " ".join(f"{v:<6.3f}" for v in out["curve"].values())
                  + f"  {out['seconds']:.0f}", flush=True)


if __name__ == "__main__":
    main()
