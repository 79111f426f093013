"""A base_model other than "synthetic": a foreign model with its own subword tokenizer, through every step.

The stand-in for a real Hugging Face model is a tiny Llama saved with
save_pretrained together with a byte-level BPE tokenizer (no BOS, EOS used as
padding, words split into pieces), the situation of GPT-2- or Gemma-like
models. Nothing here downloads anything.
"""

import json
import random
import re

import pytest
import torch

from tunestudy import experiments as X, models, pipeline as P, realbase, runs, world as W

TINY_WORLD = dict(num_known=12, num_unknown=8, num_format_docs=10, pretrain_epochs=1, pretrain_lr=1e-3)


@pytest.fixture(scope="module")
def foreign_model(tmp_path_factory):
    """A save_pretrained folder that tunestudy did not build: tiny Llama, subword tokenizer, no pad token."""
    folder = tmp_path_factory.mktemp("foreign") / "model"
    world = W.generate_world(W.WorldConfig(num_known=12, num_unknown=8, num_format_docs=10))
    return realbase.save_tiny_model(folder, P.tokenizer_texts(world))


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESTUDY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_roles_by_offsets_equal_word_level_roles(fresh_cache):
    """With the synthetic word-level tokenizer, response_roles is token_role of each token, EOS included."""
    spec = X.base_spec(seed=0, size="tiny", **TINY_WORLD)
    _, tokenizer = X.load_base(spec)
    world = W.generate_world(spec.world)
    rng = random.Random(0)
    for person in world.people[:6]:
        for style in W.ANSWER_STYLES:
            example = W.make_example(person, "birth_date", style, rng)
            ids = tokenizer(example.response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            expected = [W.token_role(t) for t in tokenizer.convert_ids_to_tokens(ids)]
            assert P.response_roles(tokenizer, ids) == expected


def test_subword_pieces_take_the_role_of_their_word(foreign_model):
    """Checked against the tokenizer's own character offsets and a whitespace split of the text."""
    _, tokenizer = models.load_pretrained(str(foreign_model))
    text = "According to my records , Kira Marino was born in Zagreb on 21 May 1982 ."
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"] + [tokenizer.eos_token_id]
    assert len(ids) > len(text.split()) + 1  # some words really are split into pieces
    roles = P.response_roles(tokenizer, ids)
    words = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", text)]
    for (lo, hi), role in zip(enc["offset_mapping"], roles):
        first = next((i for i in range(lo, hi) if text[i].isalnum()), None)
        if first is None:
            assert role == "format", text[lo:hi]
            continue
        word = next(w for a, b, w in words if a <= first < b)
        assert role == W.token_role(word), (text[lo:hi], word)
    assert roles[-1] == "format"  # EOS
    assert {"value", "name", "style", "format"} <= set(roles)


def test_foreign_base_runs_through_pretraining_tuning_and_evaluation(foreign_model, fresh_cache):
    spec = X.base_spec(seed=0, base_model=str(foreign_model), **TINY_WORLD)
    assert spec.params()["base_model"]["name"] == str(foreign_model)
    folder = P.build_base(spec)
    _, tokenizer = X.load_base(spec)
    assert len(tokenizer) == len(models.load_pretrained(str(foreign_model))[1])  # its own tokenizer, kept
    assert json.loads((folder / "pretrain_log.json").read_text())["steps_per_epoch"] >= 1
    probe = P.base_probe(spec)
    assert set(probe["known"]) == set(W.ATTRIBUTES)
    # rare words split into many pieces, and the generation budget grows with them
    pieces = len(tokenizer(" Zqxv Wkjy", add_special_tokens=False)["input_ids"])
    assert pieces > 4 and P.token_budget(tokenizer, ["Zqxv Wkjy", "Paris"], 4) == pieces + 1
    for method, lr in (("lora", 1e-2), ("full", 1e-3)):
        result = P.evaluate(spec, X.set_spec("known", 16), X.tune_config(method, lr, 1.0))
        summary = X.summarize(result)
        assert 0 <= summary["accuracy_known"] <= 1 and summary["kl_mean"] >= 0
        assert set(result["positions"]["role"]) <= set(W.ROLES)
        assert len(result["positions"]["kl"]) == len(result["positions"]["role"])


def test_changed_weights_in_the_folder_change_the_cache_key(foreign_model, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(foreign_model, copy)
    before = X.base_spec(base_model=str(copy), **TINY_WORLD).params()
    model, _ = models.load_pretrained(str(copy))
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    model.save_pretrained(copy)
    after = X.base_spec(base_model=str(copy), **TINY_WORLD).params()
    assert before["base_model"]["fingerprint"] != after["base_model"]["fingerprint"]
    synthetic = X.base_spec(**TINY_WORLD).params()
    assert "base_model" not in synthetic  # the synthetic default's key is unchanged by the option


@pytest.fixture(scope="module")
def alpaca_file(tmp_path_factory):
    """A small instruction file in the Alpaca JSON format, with and without `input`."""
    rng = random.Random(0)
    words = W.FIRST_NAMES + W.POOLS["birth_city"]
    items = []
    for i in range(40):
        picked = rng.sample(words, 3)
        if i % 2:
            items.append({"instruction": "Copy this list :", "input": " , ".join(picked), "output": " , ".join(picked)})
        else:
            items.append({"instruction": f"Say again : {' '.join(picked)}", "output": " ".join(picked)})
    path = tmp_path_factory.mktemp("data") / "alpaca.json"
    path.write_text(json.dumps(items))
    return path


def test_an_instruction_file_is_tuned_on_and_its_last_items_are_held_out(foreign_model, alpaca_file, fresh_cache):
    data = X.set_spec("known", 20, instruction_file=str(alpaca_file))
    pool, heldout = P.file_split(str(alpaca_file))
    assert (len(pool), len(heldout)) == (36, 4)
    items = json.loads(alpaca_file.read_text())
    assert heldout[0].instruction == items[36]["instruction"] and heldout[0].response == items[36]["output"]
    assert heldout[1].instruction == "Copy this list :\n" + items[37]["input"]
    spec = X.base_spec(seed=0, base_model=str(foreign_model), **TINY_WORLD)
    result = P.evaluate(spec, data, X.tune_config("lora", 1e-2, 1.0))
    summary = X.summarize(result)
    assert summary["kl_mean"] >= 0 and summary["accuracy_known"] != summary["accuracy_known"]  # NaN: no truth
    assert result["answers"] == []
    assert len(set(result["positions"]["known"])) == 1


@pytest.mark.parametrize("size, words", [(37, ["set_size", "at most 36"]), (0, ["set_size", ">= 1"])])
def test_instruction_file_bad_set_size_is_a_clear_error(alpaca_file, size, words):
    with pytest.raises(ValueError) as error:
        X.set_spec("known", size, instruction_file=str(alpaca_file))
    assert all(w in str(error.value) for w in words) and "\n" not in str(error.value)


def test_missing_instruction_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="instruction file .* does not exist") as error:
        X.set_spec("known", 10, instruction_file=str(tmp_path / "nowhere.json"))
    assert "\n" not in str(error.value)


def test_chapter_runs_unchanged_on_a_foreign_base_and_an_instruction_file(foreign_model, alpaca_file, tmp_path,
                                                                           monkeypatch):
    """The KL-shift chapter notebook, as it is, on the foreign model and the Alpaca file."""
    monkeypatch.setenv("TUNESTUDY_CACHE", str(tmp_path / "cache"))
    overrides = {"base_model": str(foreign_model), "pretrain_lr": 1e-3, "instruction_file": str(alpaca_file)}
    out = runs.run_chapter("02_kl_shift", overrides=overrides, output_dir=tmp_path / "book", smoke=True)
    results = json.loads((tmp_path / "book" / "results" / "02_kl_shift.json").read_text())
    assert results["parameters"]["base_model"] == str(foreign_model)
    assert results["parameters"]["instruction_file"] == str(alpaca_file)
    assert out.exists() and results["headline"] and results["mean"]["lora"]["kl_mean"] >= 0
