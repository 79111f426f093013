"""The study's pipeline, cached step by step: world -> base -> tuned model -> evaluation.

Each expensive step goes through `cache.cached`,
keyed by every parameter that affects it plus the package source, so a chapter
that repeats another chapter's run reuses it and a changed parameter redoes
only what depends on it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from . import cache, metrics, models, tuning, world as W

SYNTHETIC_PREFIX = "synthetic:"
CHECKPOINT_FRACTIONS = (0.25, 0.35, 0.45)  # extra snapshots of every base, for "less pretrained" comparisons
MAX_NEW_TOKENS = 48


# --- the synthetic base ------------------------------------------------------------------------

@dataclass(frozen=True)
class BaseSpec:
    """Everything that decides a synthetic base model."""

    world: W.WorldConfig
    pretrain: tuning.PretrainConfig
    base_model: str = models.SYNTHETIC  # or a real model, further pretrained on the world's corpus
    base_fingerprint: str = models.SYNTHETIC  # what identifies that model's weights

    @property
    def synthetic(self) -> bool:
        return self.base_model == models.SYNTHETIC

    def params(self) -> dict:
        out = {"world": asdict(self.world), "pretrain": asdict(self.pretrain)}
        if not self.synthetic:
            out["base_model"] = {"name": self.base_model, "fingerprint": self.base_fingerprint}
        return out


def base_spec(seed: int = 0, size: str = "small", num_known: int = 200, num_unknown: int = 100,
              num_paraphrases: int = 5, pretrain_epochs: int = tuning.PretrainConfig.epochs,
              num_format_docs: int = 300, pretrain_lr: float = tuning.PretrainConfig.lr,
              base_model: str = models.SYNTHETIC) -> BaseSpec:
    """Validate notebook parameters and name the base they describe (nothing is built yet).

    base_model "synthetic" pretrains a `size` Llama from scratch on the world's
    corpus. Any other base_model (a folder, a hub id, "gemma3-270m") is loaded
    with its own tokenizer and further pretrained on the same corpus for
    `pretrain_epochs` at `pretrain_lr` (a real model wants a far smaller rate,
    e.g. 1e-4, and a few epochs), so every chapter keeps its ground truth of
    known and unknown people; `size` is then unused.
    """
    world_config = W.WorldConfig(num_known=num_known, num_unknown=num_unknown, num_paraphrases=num_paraphrases,
                                 num_format_docs=num_format_docs, seed=seed)
    world_config.validate()
    models.check_size(size)
    models.check_base_model(base_model)
    W._check_int("pretrain_epochs", pretrain_epochs, minimum=1)
    if isinstance(pretrain_lr, bool) or not isinstance(pretrain_lr, (int, float)) or not 0 < pretrain_lr < 1:
        raise ValueError(f"pretrain_lr must be between 0 and 1, got {pretrain_lr!r}")
    if base_model != models.SYNTHETIC:
        size = "pretrained"  # the real model's own architecture; no size choice enters the cache key
    return BaseSpec(world_config, tuning.PretrainConfig(size=size, epochs=pretrain_epochs, lr=pretrain_lr,
                                                        batch_size=16, seed=seed),
                    base_model, models.fingerprint(base_model))


def tokenizer_texts(world: W.World) -> list:
    """Every text the study can show a model, so the word-level vocabulary covers them all."""
    rng = random.Random(0)
    texts = W.pretraining_corpus(world)
    for person in world.people:
        for attribute in W.ATTRIBUTES:
            texts.append(W.probe_prompt(person, attribute))
            for template in W.QUESTION_TEMPLATES[attribute]:
                texts.append(W.format_prompt(template.format(name=person.name)))
            for style in W.ANSWER_STYLES:
                texts.append(W.make_example(person, attribute, style, rng).response)
    texts += [" ".join(W.value_pool(a)) for a in W.ATTRIBUTES]
    texts.append(W.STYLE_OPENER)
    return texts


def build_base(spec: BaseSpec) -> Path:
    """Pretrain (or reuse) the base on the world's corpus; the folder loads with AutoModelForCausalLM."""

    def build(folder: Path) -> None:
        world = W.generate_world(spec.world)
        if spec.synthetic:
            tokenizer = models.train_tokenizer(tokenizer_texts(world))
            model = models.build_model(spec.pretrain.size, len(tokenizer), spec.pretrain.seed)
        else:
            model, tokenizer = models.load_pretrained(spec.base_model)
        checkpoints = {}

        def snapshot(epoch):  # keep less-trained copies of the same run
            checkpoints[epoch] = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

        start = time.perf_counter()
        log = tuning.pretrain(model, tokenizer, W.pretraining_corpus(world), spec.pretrain,
                              snapshot_epochs=[max(1, round(f * spec.pretrain.epochs)) for f in CHECKPOINT_FRACTIONS],
                              on_snapshot=snapshot)
        log["seconds"] = time.perf_counter() - start
        log["parameters"] = models.count_parameters(model)
        models.save(model, tokenizer, folder, extra={"base_spec": spec.params()})
        final = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        for epoch, state in checkpoints.items():
            model.load_state_dict(state)
            models.save(model, tokenizer, folder / "checkpoints" / f"epoch_{epoch}")
        model.load_state_dict(final)
        (folder / "pretrain_log.json").write_text(json.dumps(log))

    return cache.cached("base", spec.params(), build)


def base_folder(spec: BaseSpec, epoch: int | None = None) -> Path:
    folder = build_base(spec)
    if epoch is None or epoch == spec.pretrain.epochs:
        return folder
    sub = folder / "checkpoints" / f"epoch_{epoch}"
    if not sub.exists():
        allowed = sorted(int(p.name.split("_")[1]) for p in (folder / "checkpoints").iterdir())
        raise ValueError(f"epoch must be one of {allowed + [spec.pretrain.epochs]}, got {epoch}")
    return sub


def checkpoint_epochs(spec: BaseSpec) -> list:
    return sorted({max(1, round(f * spec.pretrain.epochs)) for f in CHECKPOINT_FRACTIONS} | {spec.pretrain.epochs})


def pretrain_log(spec: BaseSpec) -> dict:
    return json.loads((build_base(spec) / "pretrain_log.json").read_text())


def load_base(spec: BaseSpec, epoch: int | None = None):
    return models.load_pretrained(str(base_folder(spec, epoch)))


# --- probes and answers ------------------------------------------------------------------------

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

    return cache.cached_json("base_probe", {**spec.params(), "epoch": epoch}, compute)


# --- instruction sets --------------------------------------------------------------------------

SET_KINDS = ("known", "unknown", "mix", "counterfactual", "file")
FILE_HELDOUT = (0.1, 200)  # an instruction file keeps its last 10% (at most 200) for evaluation


@dataclass(frozen=True)
class SetSpec:
    """An instruction set drawn from the world's tuning-split people, or read from an Alpaca JSON file."""

    kind: str = "known"  # known | unknown | mix | counterfactual (known people, wrong answers) | file
    size: int = 600
    style: str = "simplified"  # short | simplified | long
    unknown_fraction: float = 0.5  # for kind="mix"
    path: str = ""  # for kind="file": the Alpaca JSON file
    fingerprint: str = ""  # for kind="file": SHA-256 of the file, so an edited file is a new set

    @property
    def synthetic(self) -> bool:
        return self.kind != "file"

    def validate(self) -> None:
        if self.kind not in SET_KINDS:
            raise ValueError(f"set kind must be one of {', '.join(SET_KINDS)}, got {self.kind!r}")
        if self.style not in W.ANSWER_STYLES:
            raise ValueError(f"style must be one of {', '.join(W.ANSWER_STYLES)}, got {self.style!r}")
        W._check_int("set size", self.size, minimum=1)
        if not self.synthetic:
            pool, _ = file_split(self.path)
            if self.size > len(pool):
                raise ValueError(f"set size must be at most {len(pool)} for instruction file {self.path!r} "
                                 f"(its examples minus the held-out ones), got {self.size}")


def file_split(path: str) -> tuple:
    """(tuning pool, held-out) Examples of an Alpaca JSON file; the held-out ones are its last items."""
    from .data import load_alpaca
    items = load_alpaca(path)
    if len(items) < 2:
        raise ValueError(f"instruction file {path!r} has {len(items)} example; it needs at least 2 "
                         "(one to tune on, one held out)")
    heldout = max(1, min(FILE_HELDOUT[1], round(len(items) * FILE_HELDOUT[0])))
    examples = [file_example(item) for item in items]
    return examples[:-heldout], examples[-heldout:]


def file_example(item: dict) -> W.Example:
    """An Alpaca item in the study's template; it carries no ground truth (no person, attribute or value)."""
    instruction = item["instruction"] + (f"\n{item['input']}" if item["input"].strip() else "")
    return W.Example(instruction=instruction, response=item["output"], person="", attribute="", value="",
                     value_span=(-1, -1), known=True, style="file")


def file_set_spec(path: str, size: int) -> SetSpec:
    """The SetSpec of an Alpaca JSON file (checked now, before any work)."""
    from .data import load_alpaca
    load_alpaca(path)  # a one-line error for a missing or malformed file
    digest = hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()
    spec = SetSpec(kind="file", size=size, path=str(path), fingerprint=digest)
    spec.validate()
    return spec


def make_set(world: W.World, spec: SetSpec, seed: int) -> list:
    spec.validate()
    if spec.kind == "file":
        pool, _ = file_split(spec.path)
        order = list(range(len(pool)))
        random.Random(seed).shuffle(order)
        return [pool[i] for i in order[:spec.size]]
    if spec.kind == "mix":
        return W.mixed_set(world, spec.size, spec.unknown_fraction, spec.style, seed)
    return W.instruction_set(world, spec.kind != "unknown", spec.size, spec.style, seed,
                             counterfactual=spec.kind == "counterfactual")


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


def eval_questions(world: W.World, seed: int = 12345) -> list:
    """Held-out questions: every attribute of every held-out person, known and unknown."""
    rng = random.Random(seed)
    return [W.make_example(p, a, "simplified", rng) for p in world.people if p.heldout for a in W.ATTRIBUTES]


# --- tuning ------------------------------------------------------------------------------------

def tune(base: BaseSpec, data: SetSpec, config: tuning.TuneConfig, epoch: int | None = None) -> Path:
    """Tune (or reuse) a model; the folder holds a peft adapter (LoRA) or a full model, plus the loss log."""
    config.validate()
    data.validate()
    params = {"base": base.params(), "base_epoch": epoch, "set": asdict(data), "tune": asdict(config)}

    def build(folder: Path) -> None:
        world = W.generate_world(base.world)
        examples = make_set(world, data, config.seed)
        model, tokenizer = load_base(base, epoch)
        groups = ["known" if e.known else "unknown" for e in examples]
        start = time.perf_counter()
        tuned, log = tuning.finetune(model, tokenizer, examples, config, groups)
        log["seconds"] = time.perf_counter() - start
        tuned.save_pretrained(folder / "model")  # peft format for LoRA, a full model otherwise
        (folder / "train_log.json").write_text(json.dumps(log))

    return cache.cached("tuned", params, build)


def load_tuned(base: BaseSpec, data: SetSpec, config: tuning.TuneConfig, epoch: int | None = None):
    """(merged tuned model, tokenizer). LoRA adapters are merged, so evaluation runs a plain model."""
    folder = tune(base, data, config, epoch)
    model, tokenizer = load_base(base, epoch)
    if config.method == "lora":
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, folder / "model").merge_and_unload()
    else:
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(folder / "model", dtype=torch.float32)
    model.eval()
    return model, tokenizer


def train_log(base: BaseSpec, data: SetSpec, config: tuning.TuneConfig, epoch: int | None = None) -> dict:
    return json.loads((tune(base, data, config, epoch) / "train_log.json").read_text())


# --- evaluation --------------------------------------------------------------------------------

def evaluate(base: BaseSpec, data: SetSpec, config: tuning.TuneConfig, epoch: int | None = None) -> dict:
    """Every metric of STUDY.md for one tuned model on the held-out questions (cached)."""
    params = {"base": base.params(), "base_epoch": epoch, "set": asdict(data), "tune": asdict(config)}
    return cache.cached_json("evaluation", params, lambda: _evaluate(base, data, config, epoch))


def _evaluate(base: BaseSpec, data: SetSpec, config: tuning.TuneConfig, epoch: int | None) -> dict:
    world = W.generate_world(base.world)
    questions = eval_questions(world) if data.synthetic else file_split(data.path)[1]
    base_model, tokenizer = load_base(base, epoch)
    tuned_model, _ = load_tuned(base, data, config, epoch)
    prompts = [q.prompt for q in questions]
    tuning_set = make_set(world, data, config.seed)
    budget = token_budget(tokenizer, [e.response for e in tuning_set], minimum=MAX_NEW_TOKENS)
    prompt_ids, responses = metrics.greedy_responses(tuned_model, tokenizer, prompts, budget)
    shifts = metrics.shift_analysis(base_model, tuned_model, prompt_ids, responses, tokenizer.pad_token_id)
    context = icl_prefix(tuning_set)
    icl_prompt_ids = [tokenizer(context + p)["input_ids"] for p in prompts]
    shifts_icl = metrics.shift_analysis(base_model, tuned_model, prompt_ids, responses, tokenizer.pad_token_id,
                                        base_prompts=icl_prompt_ids)
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    tuning_people = {e.person for e in tuning_set}
    # answers are checked against the world's ground truth; a file's answers have none to check
    answers = [answer_record(q, text, world, tuning_people) for q, text in zip(questions, texts)] \
        if data.synthetic else []
    positions = position_records(questions, responses, shifts, tokenizer)
    positions["kl_icl"] = [float(v) for shift in shifts_icl for v in shift["kl"]]
    positions["base_rank_icl"] = [int(v) for shift in shifts_icl for v in shift["base_rank"]]
    known_people = [p for p in world.people if p.known]
    result = {
        "answers": answers,
        "positions": positions,
        "probe_after": probe(tuned_model, tokenizer, known_people),
        "probe_before": base_probe(base, epoch)["known"],
        # wall-clock seconds stay in the tuned model's folder: the evaluation holds only results,
        # so the same seed gives a byte-identical evaluation
        "train_log": {k: v for k, v in train_log(base, data, config, epoch).items() if k != "seconds"},
        "examples": [{"question": q.instruction, "answer": t} for q, t in zip(questions[:3], texts[:3])],
    }
    return result


def answer_record(question: W.Example, text: str, world: W.World, tuning_people: set) -> dict:
    """What one answer claims, checked against ground truth; wrong values checked for borrowing."""
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
    out = {"kl": [], "kl_topk": [], "base_rank": [], "role": [], "position": [], "known": [], "token": []}
    for question, response, shift in zip(questions, responses, shifts):
        tokens = tokenizer.convert_ids_to_tokens(response)
        roles = response_roles(tokenizer, response)
        for t, token in enumerate(tokens):
            out["kl"].append(float(shift["kl"][t]))
            out["kl_topk"].append(float(shift["kl_topk"][t]))
            out["base_rank"].append(int(shift["base_rank"][t]))
            out["role"].append(roles[t])
            out["position"].append(t)
            out["known"].append(question.known)
            out["token"].append(token)
    return out
