"""The chapter "Measure your own pair": `tunestudy shift` on a real base and an adapter tuned on it here.

A LoRA adapter of the base (Gemma 3 270M by default) is tuned on facts of one relation answered in an
assistant's style (`STYLE`: an opening, the fact, a closing), saved with peft's `save_pretrained` as an
adapter folder (cached, kind "shift_adapter"), and the pair is analysed on held-out facts of the same
relation, written as an Alpaca JSON file (kind "shift_data"), exactly as the command line does it
(`tokenshift.run_pair`, kind "token_shift"). A reader can rerun the analysis on the same folders with the
command the page prints.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from . import cache, models, realbase, realfacts, tokenshift, tuning

SOURCES = realbase.SOURCES + ("data.py", "gemma.py", "instructions.py", "plots.py", "shiftdemo.py", "tokenshift.py")
STYLE = "Sure! The answer is {output}. I hope this helps."  # style tokens around the one fact


@dataclass(frozen=True)
class DemoSpec:
    """What the chapter tunes and analyses."""

    base_model: str = models.GEMMA_ALIAS
    relation: str = "capital"
    set_size: int = 60  # facts the adapter is tuned on
    num_examples: int = 60  # held-out facts the pair is analysed on
    max_new_tokens: int = 24
    tune: tuple = ()  # sorted (field, value) pairs of tuning.TuneConfig

    def config(self) -> tuning.TuneConfig:
        return tuning.TuneConfig(**dict(self.tune))


def styled(fact: dict) -> dict:
    """A fact as an instruction item whose answer wraps the value in STYLE."""
    return {"instruction": fact["instruction"], "input": "", "output": STYLE.format(output=fact["output"])}


def split(spec: DemoSpec) -> tuple:
    """(tuning facts, held-out facts): a fixed draw of the relation's facts (`realbase.pick_facts`)."""
    realfacts.check_relations([spec.relation])
    facts = realbase.pick_facts(realfacts.build_facts([spec.relation]), {spec.relation: spec.set_size + spec.num_examples})
    return facts[:spec.set_size], facts[spec.set_size:]


def adapter_folder(spec: DemoSpec, load_from: str, fingerprint: str, facts: list) -> Path:
    """The LoRA adapter folder (cached): `finetune` on the styled facts, then peft's `save_pretrained`."""
    config = spec.config()
    config.validate({"lr": "lora_lr", "steps": "tune_steps", "lora_rank": "lora_rank"})

    def build(folder: Path) -> None:
        model, tokenizer = models.load_pretrained(load_from)
        examples = [realbase.as_example({**styled(f), "relation": f["relation"], "subject": f["subject"]})
                    for f in facts]
        tuned, log = tuning.finetune(model, tokenizer, examples, config, scored_logits_only=True)
        tuned.save_pretrained(folder)
        (folder / "train_log.json").write_text(json.dumps({"loss": log["loss"],
                                                            "trainable_fraction": log["trainable_fraction"]}))

    return cache.cached("shift_adapter", {"model": fingerprint, "facts": realbase.fact_keys(facts),
                                          "style": STYLE, "tune": asdict(config)},
                        build, sources=SOURCES, label=f"a LoRA adapter on {len(facts)} styled facts")


def data_key(facts: list) -> dict:
    return {"items": [styled(f) for f in facts]}


def data_file(facts: list) -> Path:
    """The held-out facts, styled, as an Alpaca JSON file (cached): what `--data` reads."""
    items = data_key(facts)["items"]

    def build(folder: Path) -> None:
        (folder / "heldout.json").write_text(json.dumps(items, indent=1, ensure_ascii=False) + "\n")

    return cache.cached("shift_data", data_key(facts), build, sources=SOURCES, label="held-out facts") / "heldout.json"


def run(spec: DemoSpec) -> dict:
    """{"pair": the PairSpec, "results": its results file, "tokens": its token rows, "train_log": ...}."""
    tune_facts, heldout = split(spec)
    load_from, fingerprint = realbase.resolve_model(spec.base_model)
    adapter = adapter_folder(spec, load_from, fingerprint, tune_facts)
    pair = tokenshift.PairSpec(base=load_from, tuned=str(adapter), data=str(data_file(heldout)),
                               num_examples=spec.num_examples, max_new_tokens=spec.max_new_tokens)
    pair.check()
    key = {**asdict(pair), "base": fingerprint, "tuned": adapter.name, "data": data_key(heldout)}  # no machine path
    folder = cache.cached("token_shift", key,
                          lambda out: tokenshift.run_pair(pair, out), sources=SOURCES,
                          label=f"token shift on {spec.num_examples} answers")
    results, tokens = tokenshift.read_results(folder)
    return {"pair": pair, "results": results, "tokens": tokens,
            "train_log": json.loads((adapter / "train_log.json").read_text())}


ROLES = ("style", "value")


def styled_share(answers: list) -> float:
    """The share of the tuned model's answers that open as STYLE does: did the adapter learn the style?"""
    opening = STYLE.split("{output}")[0].strip()
    return sum(a["answer"].strip().startswith(opening) for a in answers) / len(answers)


def token_roles(tokens: list) -> list:
    """Each token row's role: "value" where its text overlaps what follows "The answer is" up to the closing
    sentence (the fact the model states), "style" elsewhere (the opening, the closing, the end token)."""
    before, after = STYLE.split("{output}")
    roles = []
    for example in sorted({r["example"] for r in tokens}):
        rows = [r for r in tokens if r["example"] == example]
        text = "".join(r["token"] for r in rows)
        start = text.find(before)
        lo = start + len(before) if start >= 0 else len(text)
        end = text.find(after.strip(), lo)
        hi = end if end >= 0 else len(text)
        offset = 0
        for r in rows:
            span = (offset, offset + len(r["token"]))
            offset = span[1]
            roles.append("value" if span[0] < hi and span[1] > lo and r["token"].strip() else "style")
    return roles


def role_shares(tokens: list) -> dict:
    """{role: {"count", "unshifted", "marginal", "shifted", "mean_kl"}} over the answer tokens of that role."""
    roles = token_roles(tokens)
    out = {}
    for role in ROLES:
        rows = [r for r, name in zip(tokens, roles) if name == role]
        shares = realbase.shift_shares([r["base_rank"] for r in rows])
        out[role] = {"count": len(rows), **shares,
                     "mean_kl": sum(r["kl"] for r in rows) / len(rows) if rows else float("nan")}
    return out
