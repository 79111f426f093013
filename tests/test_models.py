"""Model building, saving and loading; the cached synthetic base."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunestudy import experiments as X, models, pipeline as P, tuning

TINY_BASE = dict(size="tiny", num_known=12, num_unknown=8, pretrain_epochs=1, num_format_docs=10)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESTUDY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_saved_base_reloads_with_transformers_and_gives_identical_logits(fresh_cache):
    spec = X.base_spec(seed=1, **TINY_BASE)
    folder = P.build_base(spec)
    model = AutoModelForCausalLM.from_pretrained(folder)  # plain transformers, no tunestudy code
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ours, our_tokenizer = X.load_base(spec)
    ids = tokenizer(["Alice Becker was born in"], return_tensors="pt")["input_ids"]
    assert ids.tolist() == our_tokenizer(["Alice Becker was born in"], return_tensors="pt")["input_ids"].tolist()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ours(ids).logits)
    saved = json.loads((folder / "tunestudy.json").read_text())
    assert saved["base_spec"] == spec.params()  # the resolved config travels with the weights


def test_base_is_reused_and_rebuilt_after_a_parameter_change(fresh_cache, monkeypatch):
    calls = []
    real = tuning.pretrain
    monkeypatch.setattr(tuning, "pretrain", lambda *a, **k: calls.append(1) or real(*a, **k))
    spec = X.base_spec(seed=1, **TINY_BASE)
    first = P.build_base(spec)
    assert P.build_base(spec) == first and len(calls) == 1
    P.build_base(X.base_spec(seed=2, **TINY_BASE))
    assert len(calls) == 2


def test_a_nan_loss_stops_pretraining_and_caches_nothing(fresh_cache):
    spec = X.base_spec(seed=1, **TINY_BASE)
    # An absurd learning rate (past the parameter check) blows the weights up within a few steps.
    spec = P.BaseSpec(spec.world, tuning.PretrainConfig(**{**spec.pretrain.__dict__, "lr": 1e30, "epochs": 3}))
    with pytest.raises(FloatingPointError, match="loss became"):
        P.build_base(spec)
    assert not list((fresh_cache / "base").glob("*/MANIFEST.json"))


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="base_model folder .* does not exist") as error:
        models.load_pretrained(str(tmp_path / "nowhere"))
    assert "\n" not in str(error.value)


def test_unreachable_hub_id_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="could not be loaded from the Hugging Face hub") as error:
        models.load_pretrained("no-such-org/no-such-model")
    assert "\n" not in str(error.value)


def test_unknown_size_is_a_clear_error():
    with pytest.raises(ValueError, match="size must be one of tiny, small, base"):
        models.build_model("huge", 10, 0)
