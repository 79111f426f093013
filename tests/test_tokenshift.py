"""`tunestudy shift`: the token-shift analysis of any base and tuned model, on tiny pairs built here.

The pair: a tiny Llama with a byte-level BPE tokenizer (`realbase.save_tiny_model`, the stand-in for a real
model), a LoRA adapter tuned on it for a few steps, and the same adapter merged and saved as a plain model.
"""

import json

import pytest
import torch

from tunestudy import __main__ as cli, metrics, models, realbase, realfacts, shiftpage, tokenshift, tuning
from tunestudy import world as W


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    facts = realfacts.build_facts(["capital"])[:40]
    texts = [W.format_prompt(f["instruction"]) + f["output"] for f in facts]
    base = realbase.save_tiny_model(root / "base", texts)
    model, tokenizer = models.load_pretrained(str(base))
    examples = [realbase.as_example({**f, "category": "x"}) for f in facts[:20]]
    config = tuning.TuneConfig(method="lora", lr=3e-2, steps=20, batch_size=4, lora_rank=2,
                               lora_targets="q_proj,v_proj,up_proj")
    tuned, _ = tuning.finetune(model, tokenizer, examples, config)
    tuned.save_pretrained(root / "adapter")
    merged = tuned.merge_and_unload()
    merged.save_pretrained(root / "merged")
    tokenizer.save_pretrained(root / "merged")
    data = root / "data.json"
    data.write_text(json.dumps([{"instruction": f["instruction"], "input": "", "output": f["output"]}
                                for f in facts[20:]]))
    return {"root": root, "base": str(base), "adapter": str(root / "adapter"), "merged": str(root / "merged"),
            "data": str(data), "texts": texts}


def spec(pair, **kw):
    args = dict(base=pair["base"], tuned=pair["adapter"], data=pair["data"], num_examples=8, max_new_tokens=10,
                batch_size=3)
    return tokenshift.PairSpec(**{**args, **kw})


@pytest.fixture(scope="module")
def adapter_run(pair):
    out = pair["root"] / "adapter_run"
    tokenshift.run_pair(spec(pair), out)
    return tokenshift.read_results(out)


def test_the_command_equals_the_slow_prefix_by_prefix_analysis_and_the_reference_top_k(pair, adapter_run):
    """Every token's KL, top-k KL (the reference's own loop, `metrics._kl_topk_loop`) and base rank equal
    `metrics.shift_analysis_slow`: one unbatched forward pass per answer prefix, float64."""
    results, tokens = adapter_run
    base, tuned, tokenizer = tokenshift.load_pair(spec(pair))
    examples = tokenshift.data_examples(pair["data"])[:8]
    prompts = [tokenshift.prompt_ids(tokenizer, tokenshift.instruction_text(e), "study") for e in examples]
    answers = [[r["token_id"] for r in tokens if r["example"] == i] for i in range(8)]
    slow = metrics.shift_analysis_slow(base, tuned, prompts, answers, top_k=tokenshift.TOP_K)
    for i, stats in enumerate(slow):
        rows = [r for r in tokens if r["example"] == i]
        assert [r["position"] for r in rows] == list(range(len(answers[i])))
        assert torch.allclose(torch.tensor([r["kl"] for r in rows], dtype=torch.float64), stats["kl"], atol=1e-5)
        assert torch.allclose(torch.tensor([r["kl_topk"] for r in rows], dtype=torch.float64), stats["kl_topk"],
                              atol=1e-5)
        assert [r["base_rank"] for r in rows] == stats["base_rank"].tolist()
        assert [r["tuned_top_id"] for r in rows] == stats["tuned_top"].tolist()
    assert results["summary"]["kl"]["mean"] > 1e-4  # the adapter really moved the model


def test_the_summary_equals_the_chapter_code_on_the_same_rows(adapter_run):
    """The shares are realbase.shift_shares (chapter 14's) of the ranks; the KL summaries are metrics.kl_summary."""
    results, tokens = adapter_run
    s = results["summary"]
    assert s["shares"] == pytest.approx(realbase.shift_shares([r["base_rank"] for r in tokens]))
    expected = metrics.kl_summary([r["kl"] for r in tokens])
    for key in ("mean", "median", "top_share", "curve"):
        assert s["kl"][key] == pytest.approx(expected[key])
    assert s["kl_topk"]["mean"] == pytest.approx(sum(r["kl_topk"] for r in tokens) / len(tokens))
    assert s["positions"] == len(tokens) and s["answers"] == 8
    for c in tokenshift.CATEGORIES:
        low, high = s["intervals"][c]
        assert low <= s["shares"][c] <= high


def test_an_adapter_folder_and_its_merged_folder_give_the_same_numbers(pair, adapter_run):
    out = pair["root"] / "merged_run"
    tokenshift.run_pair(spec(pair, tuned=pair["merged"]), out)
    merged_results, merged_tokens = tokenshift.read_results(out)
    _, tokens = adapter_run
    assert [r["token_id"] for r in merged_tokens] == [r["token_id"] for r in tokens]
    assert [r["category"] for r in merged_tokens] == [r["category"] for r in tokens]
    assert [r["kl"] for r in merged_tokens] == pytest.approx([r["kl"] for r in tokens], abs=1e-5)
    assert merged_results["provenance"]["tuned"]["adapter"] is False


def test_a_model_against_itself_is_unshifted_everywhere(pair, tmp_path):
    """The null pair: tuning that changed nothing has no shifted token and zero KL."""
    tokenshift.run_pair(spec(pair, tuned=pair["base"]), tmp_path)
    results, tokens = tokenshift.read_results(tmp_path)
    assert results["summary"]["shares"] == {"unshifted": 1.0, "marginal": 0.0, "shifted": 0.0}
    assert max(abs(r["kl"]) for r in tokens) < 1e-6


def test_summarize_on_hand_made_rows():
    """Two answers: shares, by-position shares and the token tables counted by hand."""
    def row(example, position, token, rank, kl):
        return {"example": example, "position": position, "token": token, "token_id": 1, "tuned_top_id": 1,
                "base_rank": rank, "category": metrics.shift_category(rank), "kl": kl, "kl_topk": kl, "kl_top10": kl}
    rows = [row(0, 0, " Sure", 5, 2.0), row(0, 1, " Paris", 1, 0.0), row(1, 0, " Sure", 9, 1.0),
            row(1, 1, " Rome", 2, 0.5), row(1, 2, ".", 1, 0.1)]
    s = tokenshift.summarize(rows)
    assert s["shares"] == pytest.approx({"unshifted": 0.4, "marginal": 0.2, "shifted": 0.4})
    assert [p["count"] for p in s["by_position"]] == [2, 2, 1]
    assert s["by_position"][0]["shifted"] == 1.0 and s["by_position"][1]["unshifted"] == 0.5
    assert s["by_position"][0]["mean_kl"] == pytest.approx(1.5)
    assert s["top_shifted"] == [{"token": "Sure", "shifted": 2, "all": 2, "share": 1.0}]
    assert [t["token"] for t in s["top_unshifted"]] == [".", "Paris"]


def test_the_templates_are_the_study_s_and_the_reference_s(pair):
    _, tokenizer = models.load_pretrained(pair["base"])
    ids = tokenshift.prompt_ids(tokenizer, "Name a river.", "query-answer")
    assert tokenizer.decode(ids) == "# Query: \n ```Name a river.``` \n\n \n# Answer: \n ```"
    assert tokenizer.decode(tokenshift.prompt_ids(tokenizer, "Name a river.", "study")) == W.format_prompt("Name a river.")
    assert tokenshift.instruction_text({"instruction": "Add.", "input": "2 and 3"}) == "Add.\n\n2 and 3"


def test_the_base_sees_its_own_template(pair, tmp_path):
    """URIAL's set-up: the tuned model answers in one template, the base scores it after the plain wrapper."""
    tokenshift.run_pair(spec(pair, base_template="query-answer"), tmp_path)
    results, _ = tokenshift.read_results(tmp_path)
    assert results["parameters"]["base_template"] == "query-answer"


def test_the_page_draws_from_the_results_alone_and_works_offline(pair, adapter_run):
    page = shiftpage.write_page(pair["root"] / "adapter_run")
    text = page.read_text()
    assert "Every answer, token by token" in text and 'class="tsv"' in text
    assert "cdnjs" not in text and "<script src=\"http" not in text
    results, tokens = adapter_run
    assert f"{results['summary']['kl']['mean']:.3f}" in text  # the headline's number, from the results file


def bad_cases(pair, root):
    """(arguments, the one-line message's start): every bad input named as the command line spells it."""
    vit = root / "vit"
    vit.mkdir(exist_ok=True)
    (vit / "config.json").write_text(json.dumps({"model_type": "vit"}))  # an image model
    other = realbase.save_tiny_model(root / "other_tokenizer", ["completely different words here " * 3] * 5)
    small = root / "small_base"
    if not small.exists():
        from transformers import LlamaConfig, LlamaForCausalLM
        config = LlamaConfig(vocab_size=len(models.load_pretrained(pair["base"])[1]), hidden_size=16,
                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, intermediate_size=32)
        LlamaForCausalLM(config).save_pretrained(small)
        models.load_pretrained(pair["base"])[1].save_pretrained(small)
    empty, broken = root / "empty.json", root / "broken.json"
    empty.write_text("[]")
    broken.write_text("{")
    return [
        (dict(tuned=str(vit)), "--tuned", "not a causal language model"),
        (dict(base=str(vit)), "--base", "not a causal language model"),
        (dict(tuned=str(other)), "--base and --tuned", "different tokenizers"),
        (dict(base=str(small)), "does not fit --base", "has size 16"),
        (dict(data=str(empty)), "--data", "empty list"),
        (dict(data=str(broken)), "--data", "not valid JSON"),
        (dict(data=str(root / "missing.json")), "--data", "does not exist"),
        (dict(base=pair["adapter"]), "--base", "an adapter goes in --tuned"),
        (dict(num_examples=0), "--num-examples", "positive integer"),
        (dict(template="alpaca"), "--template", "study, query-answer, chat"),
        (dict(template="chat"), "--template chat", "no chat template"),
        (dict(precision="bf16"), "--precision", "auto, float32, bfloat16"),
    ]


def test_each_bad_input_is_one_line_naming_the_argument_and_writes_nothing(pair, tmp_path):
    for overrides, names, says in bad_cases(pair, pair["root"]):
        out = tmp_path / "out"
        with pytest.raises(tokenshift.PairError) as err:
            tokenshift.run_pair(spec(pair, **overrides), out)
        message = str(err.value)
        assert "\n" not in message and names in message and says in message, (overrides, message)
        assert not out.exists()


def test_the_command_line_prints_one_line_and_exits_2(pair, tmp_path, capsys):
    code = cli.main(["shift", "--base", pair["base"], "--tuned", pair["adapter"], "--data",
                     str(tmp_path / "none.json"), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and err.startswith("tunestudy: error: --data")
    assert not (tmp_path / "out").exists()


def test_token_roles_mark_the_stated_fact_as_value():
    from tunestudy import shiftdemo
    pieces = ["Sure", "!", " The", " answer", " is", " Port", "-", "au", "-", "Prince", ".", " I", " hope", " this",
              " helps", ".", "<eos>"]
    rows = [{"example": 0, "token": p} for p in pieces] + [{"example": 1, "token": p} for p in ("Paris", "<eos>")]
    roles = shiftdemo.token_roles(rows)
    assert [p for p, r in zip(pieces, roles) if r == "value"] == [" Port", "-", "au", "-", "Prince"]
    assert roles[len(pieces):] == ["style", "style"]  # no "The answer is": no stated fact


@pytest.mark.parametrize("interval, opening, expected", [
    ((0.6, 0.8), "Sure! The answer is Paris.", "reproduced"),
    ((0.2, 0.4), "Sure! The answer is Paris.", "not reproduced"),
    ((0.4, 0.6), "Sure! The answer is Paris.", "inconclusive"),
    ((0.9, 1.0), "Paris", "premise not met"),  # the null adapter: it answers as the base does, all unshifted
])
def test_the_chapter_s_verdict_on_hand_made_results(interval, opening, expected):
    from tunestudy import experiments as X, shiftdemo
    answers = [{"answer": opening}] * 3 + [{"answer": "Paris"}]
    verdict = X.verdict_mostly_unshifted(sum(interval) / 2, *interval, over="over 4 answers",
                                         styled_share=shiftdemo.styled_share(answers))
    assert verdict["verdict"] == expected and expected in verdict["sentence"]
