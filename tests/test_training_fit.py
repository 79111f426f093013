"""training_fit against a slow computation: one forward pass per value token, on each growing prefix."""

import numpy as np
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
