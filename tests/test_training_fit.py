"""training_fit against a slow computation: one forward pass per value token, on each growing prefix."""

import numpy as np
import pytest
import torch

from tunestudy import pipeline as P, tuning, world as W
from tunestudy.evaluation import training_fit


def slow_fit(model, tokenizer, examples):
    hits = []
    for e in {(e.person, e.attribute): e for e in examples}.values():
        ids, _, value_mask = tuning.encode_example(tokenizer, e.prompt, e.response, e.value_span)
        ok = True
        for t, is_value in enumerate(value_mask):
            if is_value:
                with torch.no_grad():
                    logits = model(input_ids=torch.tensor([ids[:t]])).logits[0, -1]
                ok &= int(logits.argmax()) == ids[t]
        hits.append(ok)
    return float(np.mean(hits))


def test_training_fit_equals_slow_prefix_by_prefix(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESTUDY_CACHE", str(tmp_path))
    spec = P.base_spec(seed=0, size="tiny", num_known=8, num_unknown=8, pretrain_epochs=2, num_format_docs=4)
    data = P.SetSpec(kind="unknown", size=12)
    config = tuning.TuneConfig(method="full", lr=3e-3, steps=30, batch_size=4)
    fit = training_fit(spec, data, config)
    model, tokenizer = P.load_tuned(spec, data, config)
    examples = P.make_set(W.generate_world(spec.world), data, config.seed)
    assert fit["fit_accuracy"] == slow_fit(model, tokenizer, examples)
    assert fit["num_facts"] == len({(e.person, e.attribute) for e in examples})
    assert fit["final_loss"] == float(np.mean(P.train_log(spec, data, config)["loss"][-10:]))


def plain_loop(model, params, batches, num_steps, lr):
    """The tuning loop written in plain torch, as it was before Accelerate: the reference for train_loop."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    warmup = max(1, int(num_steps * 0.05))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (step + 1) / warmup if step < warmup else
                                                  0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * (step - warmup)
                                                                                / max(1, num_steps - warmup))))
    model.train()
    for _ in range(num_steps):
        input_ids, attention_mask, loss_mask, _ = next(batches)
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        token_loss = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), input_ids[:, 1:],
                                                       reduction="none")
        mask = loss_mask[:, 1:].float()
        loss = (token_loss * mask).sum() / mask.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()


def test_train_loop_through_accelerate_equals_the_plain_torch_loop_to_the_bit():
    from tunestudy import models

    def batches():
        g = torch.Generator().manual_seed(1)
        while True:
            ids = torch.randint(0, 50, (4, 12), generator=g)
            mask = torch.ones_like(ids)
            loss_mask = (torch.rand(4, 12, generator=g) < 0.6).long()
            yield ids, mask, loss_mask, ["a", "a", "b", "b"]

    weights = []
    for loop in ("accelerate", "plain"):
        model = models.build_model("tiny", 50, seed=0)
        params = [p for p in model.parameters() if p.requires_grad]
        if loop == "accelerate":
            tuning.train_loop(model, params, batches(), 12, 3e-3, desc="test")
        else:
            plain_loop(model, params, batches(), 12, 3e-3)
        weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    untrained = models.build_model("tiny", 50, seed=0).state_dict()
    assert any(not torch.equal(weights[0][k], untrained[k]) for k in untrained)  # the loop did train
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1])


def answer_batches(new_every_step: bool = True):
    """Batches of 4 random 12-token rows whose answers (the scored tokens) end them, prompts of different lengths;
    new_every_step=False repeats the first batch."""
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 50, (4, 12), generator=g)
    while True:
        loss_mask = torch.zeros_like(ids)
        for row, start in enumerate((5, 7, 9, 6)):
            loss_mask[row, start:] = 1
        yield ids, torch.ones_like(ids), loss_mask, ["a", "a", "b", "b"]
        if new_every_step:
            ids = torch.randint(0, 50, (4, 12), generator=g)


def test_train_loop_on_scored_logits_only_trains_as_the_full_logit_loop():
    """The real-base chapter asks for logits only where a token is scored: the same losses and weights, to rounding."""
    from tunestudy import models
    logs, weights = [], []
    for scored in (False, True):
        model = models.build_model("tiny", 50, seed=0)
        params = [p for p in model.parameters() if p.requires_grad]
        logs.append(tuning.train_loop(model, params, answer_batches(), 12, 3e-3, desc="test", scored_logits_only=scored))
        weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    assert logs[0]["loss"][-1] < logs[0]["loss"][0]  # it did learn
    np.testing.assert_allclose(logs[1]["loss"], logs[0]["loss"], rtol=1e-5)
    for k in weights[0]:
        torch.testing.assert_close(weights[1][k], weights[0][k], atol=1e-5, rtol=1e-4)


def test_train_loop_in_bfloat16_learns_as_the_float32_loop():
    """Mixed precision (the real-base chapter's default): each step sees the weights the last step left, so on one
    repeated batch the loss falls as in float32, and the weights end close to float32's. One autocast region
    around the whole loop would keep the first step's bfloat16 weights and leave the loss flat."""
    from tunestudy import models
    logs, weights = [], []
    for precision in ("float32", "bfloat16"):
        model = models.build_model("tiny", 50, seed=0)
        params = [p for p in model.parameters() if p.requires_grad]
        logs.append(tuning.train_loop(model, params, answer_batches(new_every_step=False), 15, 1e-2, desc="test",
                                      precision=precision)["loss"])
        weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        assert all(v.dtype == torch.float32 for v in weights[-1].values())
    assert logs[0][-1] < 0.7 * logs[0][0]  # float32 fits the batch
    np.testing.assert_allclose(logs[1], logs[0], rtol=0.05)
    start = models.build_model("tiny", 50, seed=0).state_dict()
    moved = {k: (weights[0][k] - start[k], weights[1][k] - start[k]) for k in start}
    gap = sum(float((b - a).norm() ** 2) for a, b in moved.values()) ** 0.5
    assert gap < 0.1 * sum(float(a.norm() ** 2) for a, _ in moved.values()) ** 0.5  # the same steps, to 10%


def test_train_loop_refuses_a_bad_precision_before_any_step():
    from tunestudy import models
    model = models.build_model("tiny", 50, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16, got 'fp16'"):
        tuning.train_loop(model, list(model.parameters()), answer_batches(), 3, 1e-2, desc="test", precision="fp16")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
