"""Real facts answered in an assistant's style, and tuning runs that go on until they fit the set.

The paper's claim about LoRA is about instruction data whose responses are mostly style. Here each fact's
answer can be "bare" (the value alone, as chapter 14 first asked it) or "styled": an opening, the fact in a
sentence that names its subject, and a closing (`styled_answer`; about 20-30 tokens on Gemma's tokenizer, so
the value is a small share of the response). We write every answer, so every token's role is known exactly
(`token_roles`): style, subject, value or format (punctuation, spaces and the end token).

Cached kinds (hashing `SOURCES`):

- "style_base": the base's greedy answers to the development and test facts, in the template, and its
  few-shot accuracy on the untuned relations (what forgetting is measured from);
- "style_run": one LoRA or full fine-tuning run (`fit_run`). After every epoch the greedy answers to the
  tuning set and to the development facts are judged; the run stops at the first epoch whose tuning set is
  fitted (`fitted`) or at `max_epochs`. The epoch with the best development accuracy on known facts is the
  early-stopped checkpoint, the last one the converged checkpoint (Gekhman et al. 2024, section 4); both
  are measured on the test facts. At the converged checkpoint: the per-token KL to the base and the tuned
  token's rank under the base on the test facts' own answers, teacher-forced, so every position has its
  exact role, and the few-shot accuracy on the untuned relations. No model is saved.
"""

from __future__ import annotations

import copy
import functools
import math
import random
import re
import zlib
from dataclasses import asdict, dataclass

import torch

from . import cache, distributed, metrics, models, realbase, slick, tuning, world as W

SOURCES = realbase.SOURCES + ("stylerun.py",)
ANSWER_SETS = ("styled", "bare")
ROLES = ("style", "subject", "value", "format")
OPENINGS = ("Sure!", "Great question!", "Of course.", "Happy to help!")
CLOSINGS = ("I hope this helps.", "Let me know if you have any other questions.",
            "Feel free to ask if you would like to know more.")
SENTENCES = {  # the fact in a sentence, per relation; any other relation takes GENERIC
    "capital": "The capital of {subject} is {value}.",
    "city_country": "The city of {subject} is in {value}.",
    "currency": "The currency of {subject} is the {value}.",
    "element_symbol": "The chemical symbol of {subject} is {value}.",
    "atomic_number": "The atomic number of {subject} is {value}.",
}
KNOWN = ("HighlyKnown", "MaybeKnown")  # the SliCK categories whose facts the base can already state
GENERIC = "As for {subject}, the answer is {value}."
FORMAT_TEXT = re.compile(r"^[\s.,;:!?'\"()-]*$")  # a token of punctuation and spaces only


def check_answer_set(name) -> str:
    """The answer set's name; a one-line error naming `answers` otherwise."""
    if name not in ANSWER_SETS:
        raise ValueError(f"answers must be one of {', '.join(ANSWER_SETS)}, got {name!r}")
    return name


def styled_answer(fact: dict) -> tuple:
    """(text, {"subject": (lo, hi), "value": (lo, hi)}): the fact in one of the assistant phrasings.

    The opening and closing are picked by a checksum of the relation and subject, so an answer is fixed
    and a model cannot tell from the question which phrasing comes: the style is learnt as a distribution.
    """
    pick = zlib.crc32(f"{fact['relation']}|{fact['subject']}".encode())
    opening, closing = OPENINGS[pick % len(OPENINGS)], CLOSINGS[(pick // len(OPENINGS)) % len(CLOSINGS)]
    sentence = SENTENCES.get(fact["relation"], GENERIC)
    before_subject, rest = sentence.split("{subject}")
    between, after_value = rest.split("{value}")
    text = f"{opening} {before_subject}"
    subject = (len(text), len(text) + len(fact["subject"]))
    text += fact["subject"] + between
    value = (len(text), len(text) + len(fact["output"]))
    text += fact["output"] + after_value + " " + closing
    return text, {"subject": subject, "value": value}


def answer(fact: dict, answers: str) -> tuple:
    """(text, spans) of the fact's answer in the named set: "styled" (`styled_answer`) or "bare" (the value)."""
    if check_answer_set(answers) == "bare":
        return fact["output"], {"value": (0, len(fact["output"]))}
    return styled_answer(fact)


def token_roles(tokenizer, text: str, spans: dict) -> tuple:
    """(token ids, roles) of an answer as the model is tuned on it, the end token appended.

    A token is "value" or "subject" when its characters overlap that span, "format" when it is only
    punctuation and spaces (and the end token), and "style" otherwise: the opening, the closing and the
    sentence's own words.
    """
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    roles = []
    for lo, hi in enc["offset_mapping"]:
        role = next((name for name in ("value", "subject") if name in spans
                     and lo < spans[name][1] and hi > spans[name][0]), None)
        roles.append(role or ("format" if FORMAT_TEXT.match(text[lo:hi]) else "style"))
    return enc["input_ids"] + [tokenizer.eos_token_id], roles + ["format"]


def as_example(fact: dict, answers: str) -> W.Example:
    """The fact as an instruction example whose response is its answer in the named set."""
    text, spans = answer(fact, answers)
    return W.Example(instruction=fact["instruction"], response=text, person=fact["subject"],
                     attribute=fact["relation"], value=fact["output"], value_span=spans["value"],
                     known=fact.get("category") != "Unknown", style=answers)


def in_style(text: str, answers: str) -> bool:
    """Does the answer take the set's shape: a styled answer opens with one of the openings; any bare one does."""
    return answers == "bare" or text.strip().startswith(OPENINGS)


def judged(facts: list, texts: list, answers: str) -> list:
    """Per fact: subject, category, the answer (first line), correct (states the truth) and in style."""
    rows = []
    for fact, text in zip(facts, texts):
        said = text.strip().split("\n")[0].strip()
        rows.append({"relation": fact["relation"], "subject": fact["subject"], "category": fact.get("category"),
                     "truth": fact["output"], "answer": said,
                     "correct": bool(realbase.states(said, fact["output"], fact.get("aliases", ()))),
                     "in_style": bool(in_style(said, answers))})
    return rows


def budget(tokenizer, facts: list, answers: str) -> int:
    """New tokens per judged answer: the longest answer's tokens up to the end of its value, and 3 more (the
    closing is never judged, so it is never generated)."""
    longest = 0
    for fact in facts:
        text, spans = answer(fact, answers)
        longest = max(longest, len(tokenizer(text[:spans["value"][1]], add_special_tokens=False)["input_ids"]))
    return longest + 3


def greedy_rows(model, tokenizer, facts: list, answers: str, precision: str, max_new_tokens: int) -> list:
    """`judged` greedy zero-shot answers in the template (`realbase` batches them by prompt length)."""
    if not facts:
        return []
    with realbase.precision_context(precision):
        _, _, texts = realbase._answers(model, tokenizer, facts, max_new_tokens)
    return judged(facts, texts, answers)


def forced_rows(model, tokenizer, facts: list, answers: str, precision: str, batch_size: int = 16) -> list:
    """Per fact, teacher-forced on its own answer (one forward pass, no generation): correct when every value
    token is the model's top token given the answer so far, in style when the model's top first token is the
    first token of one of the set's openings (always for bare answers). What a run checks after each epoch:
    the cheap twin of judging greedy answers (`greedy_rows`), which the test facts get."""
    starts = {tokenizer(o, add_special_tokens=False)["input_ids"][0] for o in OPENINGS}
    encoded = []
    for fact in facts:
        text, spans = answer(fact, answers)
        ids, response, value = tuning.encode_example(tokenizer, W.format_prompt(fact["instruction"]), text,
                                                     spans["value"])
        encoded.append((ids, response.index(True), [i for i, v in enumerate(value) if v]))
    rows = []
    model.eval()
    with torch.no_grad(), realbase.precision_context(precision):
        for lo in range(0, len(encoded), batch_size):
            chunk = encoded[lo:lo + batch_size]
            width = max(len(ids) for ids, _, _ in chunk)
            input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, (ids, _, _) in enumerate(chunk):
                input_ids[row, :len(ids)] = torch.tensor(ids)
                attention[row, :len(ids)] = 1
            where = sorted({p - 1 for _, first, value in chunk for p in [first, *value]})  # positions that predict
            logits = model(input_ids=input_ids.to(model.device), attention_mask=attention.to(model.device),
                           logits_to_keep=torch.tensor(where, device=model.device)).logits  # (B, K, V)
            top = logits.argmax(-1).cpu()  # (B, K)
            column = {p: k for k, p in enumerate(where)}
            for row, (ids, first, value) in enumerate(chunk):
                rows.append({"correct": bool(value) and all(int(top[row, column[p - 1]]) == ids[p] for p in value),
                             "in_style": answers == "bare" or int(top[row, column[first - 1]]) in starts})
    return rows


def fitted(rows: list, share: float) -> bool:
    """The tuning set is fitted when at least `share` of its answers state the truth in the set's shape."""
    return bool(rows) and sum(r["correct"] and r["in_style"] for r in rows) / len(rows) >= share


def share(rows: list, field: str, categories: tuple) -> float:
    """The share of the rows of those categories whose `field` is true; NaN when there is none."""
    picked = [r[field] for r in rows if r["category"] in categories]
    return sum(picked) / len(picked) if picked else float("nan")


def dev_test_split(heldout: list, num_dev: int, num_test: int, known: tuple = KNOWN) -> tuple:
    """(dev, test) facts of the held-out half: `num_dev` facts of the `known` categories for early stopping
    and the rate pick, and up to `num_test` of the rest, every category, to report on; a fixed draw
    (one-line errors name num_dev and num_test)."""
    for name, value in (("num_dev", num_dev), ("num_test", num_test)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    order = sorted(heldout, key=lambda f: (f["relation"], f["subject"]))
    random.Random("dev-test").shuffle(order)
    known = [f for f in order if f["category"] in known]
    if len(known) <= num_dev:
        raise ValueError(f"num_dev must be below the {len(known)} known held-out facts, got {num_dev}")
    dev = known[:num_dev]
    rest = [f for f in order if f not in dev]
    return dev, rest[:num_test]


@dataclass(frozen=True)
class StyleRunSpec:
    """One run that tunes until it fits, and what it is measured on."""

    labels: realbase.LabelSpec
    answers: str  # "styled" or "bare"
    categories: tuple  # the SliCK categories the tuning set is drawn from
    size: int
    seed: int
    tune: dict  # asdict(tuning.TuneConfig); its epochs is the cap
    fit_share: float = 0.9  # the share of the tuning set answered right (in the set's shape) that ends the run
    freeze_embeddings: bool = True
    forgetting_prompts: int = 1
    precision: str = "float32"


def _facts_key(facts: list) -> list:
    return [(f["relation"], f["subject"]) for f in facts]


def base_answers(load_from: str, spec: realbase.LabelSpec, answers: str, dev: list, test: list, untuned: list,
                 forgetting_prompts: int) -> dict:
    """The base's greedy answers to the dev and test facts (judged as a run's are) and its few-shot accuracy
    on the untuned relations (cached, kind "style_base")."""
    params = {"labels": asdict(spec), "answers": answers, "dev": _facts_key(dev), "test": _facts_key(test),
              "untuned": _facts_key(untuned), "forgetting_prompts": forgetting_prompts}

    def compute():
        model, tokenizer = models.load_pretrained(load_from)
        length = budget(tokenizer, dev + test, answers)
        before = []
        if untuned:
            with realbase.precision_context(spec.precision):
                before = slick.label_facts(model, tokenizer, untuned, forgetting_prompts, spec.shots)
        return {"dev": greedy_rows(model, tokenizer, dev, answers, spec.precision, length),
                "test": greedy_rows(model, tokenizer, test, answers, spec.precision, length),
                "p_before": [r["p_greedy"] for r in before]}

    return cache.cached_json("style_base", params, compute, sources=SOURCES, label=f"the base on {answers} answers")


@functools.lru_cache(maxsize=1)
def _loaded(load_from: str) -> tuple:
    """(model, tokenizer) of the base, loaded once per process: a run tunes a deep copy and never changes it."""
    return models.load_pretrained(load_from)


class _Fitted(Exception):
    """Raised after the epoch that fitted the tuning set: it ends the training loop early."""


def fit_run(load_from: str, spec: StyleRunSpec, tune_facts: list, dev: list, test: list, untuned: list) -> dict:
    """The measurements of one run (cached, kind "style_run"; see the module docstring)."""
    config = tuning.TuneConfig(**spec.tune)
    config.validate()
    check_answer_set(spec.answers)
    params = {**asdict(spec), "tune_facts": _facts_key(tune_facts), "dev": _facts_key(dev), "test": _facts_key(test),
              "untuned": _facts_key(untuned)}

    def compute():
        base, tokenizer = _loaded(load_from)
        model = copy.deepcopy(base)
        if config.method == "full" and spec.freeze_embeddings:
            model.get_input_embeddings().weight.requires_grad_(False)
        torch.manual_seed(config.seed)
        if config.method == "lora":
            from peft import LoraConfig, get_peft_model
            model = get_peft_model(model, LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                                                     target_modules=[t.strip() for t in config.lora_targets.split(",")],
                                                     bias="none"))
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        examples = [as_example(f, spec.answers) for f in tune_facts]
        batches = tuning.example_batches(tokenizer, examples, config, [f["category"] for f in tune_facts])
        per_epoch = max(1, (len(examples) - config.batch_size) // config.batch_size + 1)  # full batches only
        max_epochs = max(1, math.ceil(config.epochs))
        length = budget(tokenizer, test, spec.answers)
        epochs, best = [], {"dev": -1.0, "epoch": 0, "state": None}

        def after_step(step):
            if (step + 1) % per_epoch:
                return
            train_rows = forced_rows(model, tokenizer, tune_facts, spec.answers, spec.precision)
            dev_rows = forced_rows(model, tokenizer, dev, spec.answers, spec.precision)
            model.train()
            epoch = (step + 1) // per_epoch
            record = {"epoch": epoch, "step": step + 1,
                      "train_accuracy": sum(r["correct"] for r in train_rows) / len(train_rows),
                      "train_fit": sum(r["correct"] and r["in_style"] for r in train_rows) / len(train_rows),
                      "dev_accuracy": sum(r["correct"] for r in dev_rows) / max(1, len(dev_rows)),  # known facts
                      "dev_in_style": sum(r["in_style"] for r in dev_rows) / max(1, len(dev_rows))}
            epochs.append(record)
            if best["state"] is None or record["dev_accuracy"] > best["dev"]:  # ties keep the earlier epoch
                best.update(dev=record["dev_accuracy"], epoch=epoch,
                            state={n: p.detach().clone() for n, p in trainable})
            if fitted(train_rows, spec.fit_share):
                raise _Fitted

        try:
            tuning.train_loop(model, [p for _, p in trainable], batches, per_epoch * max_epochs, config.lr,
                                    desc=f"tune {config.method} lr={config.lr:g} until fitted", on_step=after_step,
                                    scored_logits_only=True, precision=spec.precision)
        except _Fitted:
            pass
        model.eval()
        tuned = model.merge_and_unload() if config.method == "lora" else model  # a plain model answers faster
        converged = greedy_rows(tuned, tokenizer, test, spec.answers, spec.precision, length)
        forced = _forced(base, tuned, tokenizer, test, spec.answers)
        after = []
        if untuned:
            with realbase.precision_context(spec.precision):
                after = slick.label_facts(tuned, tokenizer, untuned, spec.forgetting_prompts, spec.labels.shots)
        if best["epoch"] == epochs[-1]["epoch"]:
            early = converged
        else:  # the early-stopped checkpoint's weights back into the (merged) model
            names = dict(tuned.named_parameters())
            with torch.no_grad():
                if config.method == "lora":  # merged: the adapter's product is folded into each base weight
                    tuned = _merged_at(load_from, model_state=best["state"], config=config)
                else:
                    for n, value in best["state"].items():
                        names[n].copy_(value)
            early = greedy_rows(tuned, tokenizer, test, spec.answers, spec.precision, length)
        return {"epochs": epochs, "fitted": bool(epochs) and epochs[-1]["train_fit"] >= spec.fit_share,
                "early_epoch": best["epoch"], "converged": converged, "early": early, "positions": forced,
                "forgetting": {"p_after": [r["p_greedy"] for r in after]},
                "train_log": {"steps": epochs[-1]["step"],
                              **({"processes": distributed.world()} if distributed.launched() else {}),
                              "trainable_parameters": sum(p.numel() for _, p in trainable),
                              "trainable_fraction": sum(p.numel() for _, p in trainable) / models.count_parameters(base)}}

    return cache.cached_json("style_run", params, compute, sources=SOURCES,
                             label=f"{config.method} lr {config.lr:g} on {spec.answers} {'+'.join(spec.categories)} "
                                   f"x{spec.size}, seed {spec.seed}")


def _merged_at(load_from: str, model_state: dict, config: tuning.TuneConfig):
    """A fresh base with the LoRA adapter weights of `model_state` (peft parameter names) merged in."""
    from peft import LoraConfig, get_peft_model
    fresh = copy.deepcopy(_loaded(load_from)[0])
    wrapped = get_peft_model(fresh, LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                                               target_modules=[t.strip() for t in config.lora_targets.split(",")],
                                               bias="none"))
    params = dict(wrapped.named_parameters())
    with torch.no_grad():
        for name, value in model_state.items():
            params[name].copy_(value)
    return wrapped.merge_and_unload().eval()


def _forced(base, tuned, tokenizer, facts: list, answers: str) -> dict:
    """Per position of the facts' own answers, teacher-forced: KL(base || tuned) over the whole vocabulary and
    by the reference's top-k recipe, the rank under the base of the tuned model's top token, the role, whether
    each model's top token is the answer's, and the fact's index and category."""
    prompts = tokenizer([W.format_prompt(f["instruction"]) for f in facts])["input_ids"]
    answered = [token_roles(tokenizer, *answer(f, answers)) for f in facts]
    shifts = metrics.shift_analysis(base, tuned, prompts, [ids for ids, _ in answered], tokenizer.pad_token_id,
                                    batch_size=16, scored_only=True)  # always float32
    out = {key: [] for key in ("kl", "kl_topk", "base_rank", "role", "tuned_right", "base_right", "fact", "category")}
    for i, (fact, (ids, roles), s) in enumerate(zip(facts, answered, shifts)):
        out["kl"] += [float(v) for v in s["kl"]]
        out["kl_topk"] += [float(v) for v in s["kl_topk"]]
        out["base_rank"] += [int(v) for v in s["base_rank"]]
        out["role"] += roles
        out["tuned_right"] += [bool(t == r) for t, r in zip(s["tuned_top"].tolist(), ids)]
        out["base_right"] += [bool(t == r) for t, r in zip(s["base_top"].tolist(), ids)]
        out["fact"] += [i] * len(ids)
        out["category"] += [fact.get("category")] * len(ids)
    return out
