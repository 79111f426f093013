"""The cached evaluations: the base's completion probe and every metric of a tuned model on held-out questions.

Artifact kinds "base_probe", "base_answers", "evaluation", "icl_shift" and "training_fit"; all hash `SOURCES`.
"""

from __future__ import annotations

import difflib

import numpy as np
import torch

from . import cache, metrics, tuned, tuning, world as W
from .bases import BaseSpec, load_base, normal_epoch
from .sets import SetSpec, eval_questions, file_split, make_set
from .tuned import load_tuned, train_log, tune_params

__all__ = ["ICL_SHOTS", "JUDGEMENTS", "MAX_NEW_TOKENS", "SOURCES", "answer_record", "base_answers", "base_probe", "evaluate", "icl_prefix", "icl_shift",
           "most_similar_person", "position_records", "probe", "response_roles", "token_budget", "training_fit"]

SOURCES = tuned.SOURCES + ("evaluation.py", "metrics.py")
MAX_NEW_TOKENS = 48


def token_budget(tokenizer, texts: list, minimum: int) -> int:
    """Enough new tokens to generate the longest of `texts` under this tokenizer (at least `minimum`).

    The word-level synthetic tokenizer needs few; a real model's subword
    tokenizer may spell a date "21 May 1982" in eight pieces.
    """
    longest = max((len(tokenizer(" " + t, add_special_tokens=False)["input_ids"]) for t in texts), default=0)
    return max(minimum, longest + 1)


def probe(model, tokenizer, people: list) -> dict:
    """Completion-probe accuracy per attribute: does "X was born on" continue with the true value?"""
    out = {}
    for attribute in W.ATTRIBUTES:
        prompts = [W.probe_prompt(p, attribute) for p in people]
        budget = token_budget(tokenizer, [p.attributes[attribute] for p in people], minimum=4)
        _, responses = metrics.greedy_responses(model, tokenizer, prompts, max_new_tokens=budget)
        texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
        out[attribute] = float(np.mean([t.strip().startswith(p.attributes[attribute])
                                        for t, p in zip(texts, people)]))
    return out


def base_probe(spec: BaseSpec, epoch: int | None = None) -> dict:
    """The base's probe accuracy on known and unknown people (cached)."""

    def compute():
        model, tokenizer = load_base(spec, epoch)
        world = W.generate_world(spec.world)
        return {"known": probe(model, tokenizer, [p for p in world.people if p.known]),
                "unknown": probe(model, tokenizer, [p for p in world.people if not p.known])}

    epoch = normal_epoch(spec, epoch)
    return cache.cached_json("base_probe", {**spec.params(), "epoch": epoch}, compute, sources=SOURCES,
                             label=f"seed {spec.world.seed}" + (f", epoch {epoch}" if epoch else ""))


def base_answers(spec: BaseSpec, epoch: int | None = None) -> list:
    """The base's own greedy answers to the held-out questions, prompted in the template, judged (cached).

    They sit beside the tuned models' answers in every chapter's table of answers.
    """

    def compute():
        model, tokenizer = load_base(spec, epoch)
        world = W.generate_world(spec.world)
        questions = eval_questions(world)
        budget = token_budget(tokenizer, [q.response for q in questions], minimum=MAX_NEW_TOKENS)
        _, responses = metrics.greedy_responses(model, tokenizer, [q.prompt for q in questions], budget)
        texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
        return {"answers": [answer_record(q, t, world, set()) for q, t in zip(questions, texts)]}

    epoch = normal_epoch(spec, epoch)
    return cache.cached_json("base_answers", {**spec.params(), "epoch": epoch}, compute, sources=SOURCES,
                             label=f"seed {spec.world.seed}" + (f", epoch {epoch}" if epoch else ""))["answers"]


ICL_SHOTS = 3  # in-context examples shown to the URIAL-style base comparator


def icl_prefix(examples: list) -> str:
    """URIAL-style context: the first tuning examples of distinct attributes, in the template."""
    shots, seen = [], set()
    for i, example in enumerate(examples):
        key = example.attribute or i  # file examples have no attribute: take the first ones
        if key not in seen:
            seen.add(key)
            shots.append(example.prompt + example.response)
        if len(shots) == ICL_SHOTS:
            break
    return "\n\n".join(shots) + "\n\n"


# --- evaluation --------------------------------------------------------------------------------

def evaluate(base: BaseSpec, data: SetSpec, config: tuning.TuneConfig, epoch: int | None = None,
             icl: bool = False) -> dict:
    """Every metric of STUDY.md for one tuned model on the held-out questions (cached).

    icl=True adds the comparison with the base shown in-context examples
    (positions "kl_icl" and "base_rank_icl", kind "icl_shift"): a second pass
    over every response, so only the chapters that read it ask for it.
    """
    params = tune_params(base, data, config, epoch)
    result = cache.cached_json("evaluation", params, lambda: _evaluate(base, data, config, params["base_epoch"]),
                               sources=SOURCES, label=tuned.run_label(data, config, params["base_epoch"]))
    if icl:
        result["positions"].update(icl_shift(base, data, config, epoch))
    return result


def _models(base: BaseSpec, data: SetSpec, config: tuning.TuneConfig, epoch: int | None) -> dict:
    """The base, the tuned model, the held-out questions and the tuning set of one run."""
    world = W.generate_world(base.world)
    questions = eval_questions(world) if data.synthetic else file_split(data.path)[1]
    base_model, tokenizer = load_base(base, epoch)
    tuned_model, _ = load_tuned(base, data, config, epoch)
    return {"world": world, "questions": questions, "base_model": base_model, "tuned_model": tuned_model,
            "tokenizer": tokenizer, "tuning_set": make_set(world, data, config.seed)}


def _responses(base: BaseSpec, data: SetSpec, config: tuning.TuneConfig, epoch: int | None) -> dict:
    """`_models` and the tuned model's greedy responses to the held-out questions."""
    run = _models(base, data, config, epoch)
    tokenizer = run["tokenizer"]
    budget = token_budget(tokenizer, [e.response for e in run["tuning_set"]], minimum=MAX_NEW_TOKENS)
    prompt_ids, responses = metrics.greedy_responses(run["tuned_model"], tokenizer,
                                                     [q.prompt for q in run["questions"]], budget)
    return {**run, "prompt_ids": prompt_ids, "responses": responses}


def _evaluate(base: BaseSpec, data: SetSpec, config: tuning.TuneConfig, epoch: int | None) -> dict:
    run = _responses(base, data, config, epoch)
    world, questions, tokenizer, tuning_set = run["world"], run["questions"], run["tokenizer"], run["tuning_set"]
    tuned_model, responses = run["tuned_model"], run["responses"]
    shifts = metrics.shift_analysis(run["base_model"], tuned_model, run["prompt_ids"], responses,
                                    tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    tuning_people = {e.person for e in tuning_set}
    # answers are checked against the world's ground truth; a file's answers have none to check
    answers = [answer_record(q, text, world, tuning_people) for q, text in zip(questions, texts)] \
        if data.synthetic else []
    responses_on_view = [] if data.synthetic else [{"question": q.instruction, "answer": t.strip()}
                                                   for q, t in zip(questions, texts)]
    known_people = [p for p in world.people if p.known]
    return {
        "answers": answers,
        "positions": position_records(questions, responses, shifts, tokenizer),
        "probe_after": probe(tuned_model, tokenizer, known_people),
        "probe_before": base_probe(base, epoch)["known"],
        # wall-clock seconds stay in the tuned model's folder: the evaluation holds only results,
        # so the same seed gives a byte-identical evaluation
        "train_log": {k: v for k, v in train_log(base, data, config, epoch).items() if k != "seconds"},
        "file_answers": responses_on_view,  # an instruction file's held-out answers, unjudged
        "response_ids": responses,  # the greedy responses, so `icl_shift` scores them without generating again
    }


def icl_shift(base: BaseSpec, data: SetSpec, config: tuning.TuneConfig, epoch: int | None = None) -> dict:
    """The tuned model's responses scored against the base shown `ICL_SHOTS` tuning examples first (cached).

    URIAL's comparison: per response position, the KL and the tuned token's
    rank under the in-context base, in the order of `evaluate`'s positions
    (the evaluation's own greedy responses, read from its record).
    """
    params = tune_params(base, data, config, epoch)

    def compute():
        responses = evaluate(base, data, config, epoch)["response_ids"]
        run = _models(base, data, config, params["base_epoch"])
        tokenizer = run["tokenizer"]
        prompt_ids = [tokenizer(q.prompt)["input_ids"] for q in run["questions"]]
        context = icl_prefix(run["tuning_set"])
        icl_prompt_ids = [tokenizer(context + q.prompt)["input_ids"] for q in run["questions"]]
        shifts = metrics.shift_analysis(run["base_model"], run["tuned_model"], prompt_ids, responses,
                                        tokenizer.pad_token_id, base_prompts=icl_prompt_ids)
        return {"kl_icl": [float(v) for shift in shifts for v in shift["kl"]],
                "base_rank_icl": [int(v) for shift in shifts for v in shift["base_rank"]]}

    return cache.cached_json("icl_shift", params, compute, sources=SOURCES,
                             label=tuned.run_label(data, config, params["base_epoch"]))


def training_fit(base: BaseSpec, data: SetSpec, config: tuning.TuneConfig, epoch: int | None = None) -> dict:
    """How well a tuned model fits its own tuning set (cached): the share of distinct training facts whose
    value tokens it predicts exactly when teacher-forced, and the final training loss.

    Cheaper than generating every answer and enough to say whether new facts were absorbed.
    """
    params = tune_params(base, data, config, epoch)

    def compute():
        world = W.generate_world(base.world)
        examples = make_set(world, data, config.seed)
        distinct = list({(e.person, e.attribute): e for e in examples}.values())
        model, tokenizer = load_tuned(base, data, config, params["base_epoch"])
        hits = []
        with torch.no_grad():
            for example in distinct:
                ids, _, value_mask = tuning.encode_example(tokenizer, example.prompt, example.response,
                                                           example.value_span)
                logits = model(input_ids=torch.tensor([ids], device=model.device)).logits[0]
                predicted = logits[:-1].argmax(-1).tolist()  # token t predicts token t+1
                hits.append(all(predicted[t - 1] == ids[t] for t, v in enumerate(value_mask) if v))
        loss = train_log(base, data, config, params["base_epoch"])["loss"]
        return {"fit_accuracy": float(np.mean(hits)), "num_facts": len(distinct),
                "final_loss": float(np.mean(loss[-10:]))}

    return cache.cached_json("training_fit", params, compute, sources=SOURCES,
                             label=tuned.run_label(data, config, params["base_epoch"]))


JUDGEMENTS = ("correct", "wrong", "wrong, borrowed", "no value stated")


def answer_record(question: W.Example, text: str, world: W.World, tuning_people: set) -> dict:
    """What one answer claims, checked against ground truth; wrong values checked for borrowing.

    `judgement` reads the asked attribute only: "correct", "wrong", "wrong, borrowed"
    (the stated value is the most similar tuning person's) or "no value stated".
    `borrowed` counts the wrong claims about any attribute that the most similar
    tuning person holds; `borrow_chance` is the same count expected from a random
    tuning person.
    """
    person = world.by_name[question.person]
    claims = W.parse_claims(text)
    stated = claims.get(question.attribute)
    wrong = {a: v for a, v in claims.items() if v != person.attributes[a]}
    record = {"person": person.name, "known": person.known, "attribute": question.attribute,
              "correct": stated == question.value, "stated": stated is not None,
              "hallucinated": stated is not None and stated != question.value,
              "num_claims": len(claims), "num_wrong_claims": len(wrong), "length": len(text.split())}
    borrowed, chance = [], []
    tuning_group = [world.by_name[n] for n in sorted(tuning_people)]
    similar = most_similar_person(person, tuning_group) if wrong else None
    for attribute, value in wrong.items():
        borrowed.append(similar is not None and similar.attributes[attribute] == value)
        chance.append(float(np.mean([q.attributes[attribute] == value for q in tuning_group])) if tuning_group else 0.0)
    record["borrowed"] = sum(borrowed)
    record["borrow_chance"] = float(sum(chance))
    if stated is None:
        judgement = "no value stated"
    elif stated == question.value:
        judgement = "correct"
    else:
        judgement = "wrong, borrowed" if similar is not None and similar.attributes[question.attribute] == stated \
            else "wrong"
    record.update(question=question.instruction, truth=question.value, answer=text.strip(),
                  stated_value=stated, judgement=judgement)
    return record


def most_similar_person(person: W.Person, candidates: list):
    """The tuning-set person whose name is most like this one (shared surname, first name, then spelling)."""
    first, last = person.name.split()

    def score(other):
        o_first, o_last = other.name.split()
        return (o_last == last, o_first == first, difflib.SequenceMatcher(None, person.name, other.name).ratio())

    others = [c for c in candidates if c.name != person.name]
    return max(others, key=score) if others else None


def response_roles(tokenizer, response: list) -> list:
    """The role (W.ROLES) of each token of a response, for any tokenizer.

    A token takes the role of the word its text falls in: decoding the response
    one token longer at a time gives each token's character span, and the word
    (a run of letters and digits) around the span's first letter or digit is
    classified by `world.token_role`. Special tokens and pieces without a letter
    or digit are format. With the word-level tokenizer this is exactly
    `token_role` of each token; with a subword tokenizer, "Par" + "is" are both
    value tokens of "Paris".
    """
    special = set(tokenizer.all_special_ids)
    text = tokenizer.decode(response, skip_special_tokens=True)
    roles, start = [], 0
    for t, token_id in enumerate(response):
        end = len(tokenizer.decode(response[:t + 1], skip_special_tokens=True))
        piece = text[start:end]
        first = next((i for i, c in enumerate(piece) if c.isalnum()), None)
        if token_id in special or first is None:
            roles.append("format")
        else:
            lo = hi = start + first
            while lo > 0 and text[lo - 1].isalnum():
                lo -= 1
            while hi < len(text) and text[hi].isalnum():
                hi += 1
            roles.append(W.token_role(text[lo:hi]))
        start = max(start, end)
    return roles


def position_records(questions, responses, shifts, tokenizer) -> dict:
    """Flat per-position arrays: KL, top-k KL, base rank, token role, position, person group."""
    out = {"kl": [], "kl_topk": [], "kl_top10": [], "base_rank": [], "role": [], "position": [], "known": [],
           "token": []}
    for question, response, shift in zip(questions, responses, shifts):
        tokens = tokenizer.convert_ids_to_tokens(response)
        roles = response_roles(tokenizer, response)
        for t, token in enumerate(tokens):
            out["kl"].append(float(shift["kl"][t]))
            out["kl_topk"].append(float(shift["kl_topk"][t]))
            out["kl_top10"].append(float(shift["kl_top10"][t]))
            out["base_rank"].append(int(shift["base_rank"][t]))
            out["role"].append(roles[t])
            out["position"].append(t)
            out["known"].append(question.known)
            out["token"].append(token)
    return out

