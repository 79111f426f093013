"""The synthetic world: people, their attributes, biographies and instruction sets.

Every text the study trains or tests on is generated here from seeded pools, so
each answer can be checked exactly: which person, which attribute, which value.
Known people appear in the pretraining corpus; unknown people never do.

Texts are written in canonical form (words and punctuation separated by single
spaces) so that the word-level tokenizer round-trips them exactly.
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass, field

FIRST_NAMES = (
    "Alice Bruno Clara Dmitri Elena Felix Greta Hugo Irene Jonas Kira Lars Mira Nadia Oscar "
    "Paula Quentin Rosa Stefan Tilda Ugo Vera Walter Xenia Yusuf Zora Anton Beatrix Cyril Dora "
    "Emil Fiona Gustav Hanna Ivan Julia Karl Lena Marco Nora Otto Petra Rafael Sonia Tobias "
    "Ursula Viktor Wanda Yara Zeno"
).split()
LAST_NAMES = (
    "Abbott Becker Castillo Dubois Eriksen Fischer Garnier Holm Ivanova Jensen Keller Lindqvist "
    "Moreau Novak Olsen Petrov Quinn Richter Santos Tanaka Ueda Varga Weber Xu Yilmaz Zimmer "
    "Arnaud Brandt Costa Dalton Engel Ferreira Gallo Hartmann Ibarra Jovanovic Kowalski Larsen "
    "Marino Nilsen Ortiz Pavlov Rossi Schmidt Torres Urban Vogel Wagner Young Zeller"
).split()
MONTHS = "January February March April May June July August September October November December".split()

# Attribute value pools are disjoint word sets, so every value word names its attribute.
POOLS = {
    "birth_city": (
        "Paris Lisbon Osaka Nairobi Lima Oslo Cairo Denver Hanoi Perth Quito Bergen Dakar Genoa "
        "Izmir Kyoto Lagos Malmo Nantes Porto Riga Seville Tbilisi Turin Valencia Warsaw Zagreb "
        "Accra Bogota Dublin"
    ).split(),
    "university": (
        "Harvard Princeton Caltech Stanford Cornell Columbia Yale Brown Duke Rice Purdue Emory "
        "Tufts Vanderbilt Dartmouth Georgetown Berkeley Northwestern Rutgers Baylor"
    ).split(),
    "major": (
        "Physics Chemistry History Economics Biology Linguistics Philosophy Mathematics Geology "
        "Astronomy Sociology Architecture Music Literature Statistics Psychology Anthropology "
        "Engineering Medicine Law"
    ).split(),
    "employer": (
        "Acme Globex Initech Umbrella Hooli Vandelay Wonka Tyrell Cyberdyne Soylent Stark "
        "Wayne Oscorp Gringotts Monarch Dunder Pemberton Massive Virtucon Nakatomi Aperture "
        "Prestige Ollivander Strickland Gekko"
    ).split(),
}
BIRTH_YEARS = tuple(range(1950, 2000))
BIRTH_DAYS = tuple(range(1, 29))
ATTRIBUTES = ("birth_date", "birth_city", "university", "major", "employer")

# Biography sentence templates: several paraphrases per attribute. The first one
# is also the completion probe's prompt ("X was born on").
BIO_TEMPLATES = {
    "birth_date": ("{name} was born on {value} .", "{name} came into this world on {value} .",
                   "The birthday of {name} is {value} .", "{name} celebrates a birthday on {value} ."),
    "birth_city": ("{name} was born in {value} .", "{name} spent early years in {value} .",
                   "The hometown of {name} is {value} .", "{name} grew up in {value} ."),
    "university": ("{name} studied at {value} .", "{name} graduated from {value} .",
                   "{name} attended {value} .", "The alma mater of {name} is {value} ."),
    "major": ("{name} majored in {value} .", "{name} earned a degree in {value} .",
              "The field of study of {name} was {value} .", "{name} focused on {value} in college ."),
    "employer": ("{name} worked for {value} .", "{name} was employed by {value} .",
                 "{name} had a career at {value} .", "The employer of {name} was {value} ."),
}
QUESTION_TEMPLATES = {
    "birth_date": ("When was {name} born ?", "What is the birth date of {name} ?",
                   "On which date was {name} born ?"),
    "birth_city": ("Where was {name} born ?", "In which city was {name} born ?",
                   "What is the birth city of {name} ?"),
    "university": ("Which university did {name} attend ?", "Where did {name} study ?",
                   "What is the alma mater of {name} ?"),
    "major": ("What did {name} major in ?", "What was the field of study of {name} ?",
              "Which subject did {name} study ?"),
    "employer": ("Which company did {name} work for ?", "Who employed {name} ?",
                 "What is the employer of {name} ?"),
}
# The tuned answer style: a phrasing the base never uses ("According to my records ,"),
# then the fact in the pretraining phrasing ("Alice Smith was born in Paris ."). Every
# response thus holds style tokens and fact tokens, and the base can predict the value
# from the name right before it, as in pretraining.
STYLE_OPENER = "According to my records ,"
ANSWER_STYLES = ("short", "simplified", "long")
LONG_EXTRA_ATTRIBUTES = 2
FILLER_WORDS = (
    "apple river stone cloud lamp forest violin candle mirror garden ladder basket pebble "
    "harbor lantern meadow orchard pillow rocket saddle tunnel wagon anchor barrel cactus "
    "dolphin feather glacier hammer island jacket kettle"
).split()
# Name words are copy-task content too, so the base can copy a name from an instruction
# (never a person's facts: unknown people's facts stay out of pretraining).
FILLER_WORDS += FIRST_NAMES + LAST_NAMES

TEMPLATE = "### Instruction :\n{instruction}\n\n### Response :\n"


def format_prompt(instruction: str) -> str:
    """The Alpaca-style instruction template, shared by every model and data set."""
    return TEMPLATE.format(instruction=instruction)


@dataclass(frozen=True)
class WorldConfig:
    """Everything that decides the world. Defaults run on a laptop in minutes."""

    num_known: int = 400  # people in the pretraining corpus
    num_unknown: int = 200  # people never in the pretraining corpus
    num_paraphrases: int = 5  # biographies per known person (Allen-Zhu and Li's augmentation)
    num_format_docs: int = 300  # copy-task documents in the instruction template
    heldout_fraction: float = 0.25  # of each group, kept out of every tuning set
    seed: int = 0

    def validate(self) -> None:
        _check_int("num_known", self.num_known, minimum=2)
        _check_int("num_unknown", self.num_unknown, minimum=2)
        _check_int("num_paraphrases", self.num_paraphrases, minimum=1, maximum=50)
        _check_int("num_format_docs", self.num_format_docs, minimum=0)
        _check_int("seed", self.seed, minimum=0)
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be strictly between 0 and 1, got {self.heldout_fraction!r}")
        capacity = len(FIRST_NAMES) * len(LAST_NAMES)
        if self.num_known + self.num_unknown > capacity:
            raise ValueError(f"num_known + num_unknown must be at most {capacity} (distinct names), "
                             f"got {self.num_known + self.num_unknown}")
        for group, count in (("num_known", self.num_known), ("num_unknown", self.num_unknown)):
            held = round(count * self.heldout_fraction)
            if held < 1 or held >= count:
                raise ValueError(f"{group}={count} with heldout_fraction={self.heldout_fraction} leaves an "
                                 "empty tuning or held-out group; raise the count or change the fraction")


def _check_int(name: str, value, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        allowed = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"{name} must be {allowed}, got {value}")


@dataclass(frozen=True)
class Person:
    name: str
    attributes: dict  # attribute -> value string
    known: bool  # in the pretraining corpus
    heldout: bool  # never in a tuning set


@dataclass(frozen=True)
class Example:
    """One instruction/response pair with its ground truth."""

    instruction: str
    response: str
    person: str
    attribute: str
    value: str  # the true value of the asked attribute
    value_span: tuple  # (start, end) character span of the asked value in `response`; (-1, -1) if absent
    known: bool
    style: str
    claims: dict = field(default_factory=dict)  # every attribute -> value the response states

    @property
    def prompt(self) -> str:
        return format_prompt(self.instruction)


@dataclass
class World:
    config: WorldConfig
    people: list  # list[Person]

    def group(self, known: bool, heldout: bool) -> list:
        return [p for p in self.people if p.known == known and p.heldout == heldout]

    @functools.cached_property
    def by_name(self) -> dict:  # built once: answer checks look people up tens of thousands of times
        return {p.name: p for p in self.people}

    def summary(self) -> dict:
        counts = {f"{'known' if k else 'unknown'}_{'heldout' if h else 'tune'}": len(self.group(k, h))
                  for k in (True, False) for h in (True, False)}
        return {"num_people": len(self.people), "num_attributes": len(ATTRIBUTES), **counts,
                "values_per_attribute": {a: len(value_pool(a)) for a in ATTRIBUTES}}


def value_pool(attribute: str) -> list:
    """All possible values of an attribute (dates: every day-month-year)."""
    if attribute == "birth_date":
        return [f"{d} {m} {y}" for y in BIRTH_YEARS for m in MONTHS for d in BIRTH_DAYS]
    return list(POOLS[attribute])


def generate_world(config: WorldConfig) -> World:
    config.validate()
    rng = random.Random(config.seed)
    total = config.num_known + config.num_unknown
    names = [f"{f} {l}" for f in FIRST_NAMES for l in LAST_NAMES]
    rng.shuffle(names)
    people = []
    for i, name in enumerate(names[:total]):
        attributes = {"birth_date": f"{rng.choice(BIRTH_DAYS)} {rng.choice(MONTHS)} {rng.choice(BIRTH_YEARS)}"}
        attributes.update({a: rng.choice(POOLS[a]) for a in ATTRIBUTES[1:]})
        known = i < config.num_known
        group_index = i if known else i - config.num_known
        group_size = config.num_known if known else config.num_unknown
        heldout = group_index >= group_size - round(group_size * config.heldout_fraction)
        people.append(Person(name, attributes, known, heldout))
    return World(config, people)


STYLE_IN_PRETRAINING = 0.1  # share of biography sentences that open with the style phrase


def biography(person: Person, rng: random.Random) -> str:
    """One paraphrased biography: a random template per attribute, sentences in random order.

    A few sentences open with the tuned answer's phrase ("According to my records ,"):
    like a real base that has read "However" and "Typically", the base knows the
    style tokens; what tuning teaches is to always answer with them.
    """
    attributes = list(ATTRIBUTES)
    rng.shuffle(attributes)
    sentences = []
    for a in attributes:
        sentence = rng.choice(BIO_TEMPLATES[a]).format(name=person.name, value=person.attributes[a])
        if rng.random() < STYLE_IN_PRETRAINING:
            sentence = f"{STYLE_OPENER} {sentence}"
        sentences.append(sentence)
    return " ".join(sentences)


def format_document(rng: random.Random) -> str:
    """One to three copy tasks in the instruction template, on content outside every test question.

    They teach the base to read the template, so KL on tuned responses is not
    dominated by format positions the base never saw. (A variant whose blocks
    shared a response opener, to teach in-context imitation for the URIAL
    comparator, cost knowledge and did not make the base imitate: not kept.)
    """
    blocks = []
    for _ in range(rng.randint(1, 3)):
        words = rng.sample(FILLER_WORDS, rng.randint(2, 6))
        text = rng.choice((" ", " , ")).join(words)
        instruction = rng.choice(("Repeat the words :", "Copy this list :", "Say again :")) + " " + text
        blocks.append(format_prompt(instruction) + text)
    return "\n\n".join(blocks)


def pretraining_corpus(world: World) -> list:
    """Biographies of known people (several paraphrases each) and format documents, shuffled."""
    rng = random.Random(world.config.seed + 1)
    docs = [biography(p, rng) for p in world.people if p.known for _ in range(world.config.num_paraphrases)]
    docs += [format_document(rng) for _ in range(world.config.num_format_docs)]
    rng.shuffle(docs)
    return docs


def probe_prompt(person: Person, attribute: str) -> str:
    """The completion probe: the first biography template cut before the value."""
    return BIO_TEMPLATES[attribute][0].split("{value}")[0].format(name=person.name).rstrip()


def fact_sentence(person: Person, attribute: str, value: str) -> str:
    """One answer sentence in the pretraining phrasing: "Alice Smith was born in Paris ." """
    return BIO_TEMPLATES[attribute][0].format(name=person.name, value=value)


def make_example(person: Person, attribute: str, style: str, rng: random.Random,
                 value: str | None = None) -> Example:
    """A question about one attribute, answered in one style.

    `value` overrides the true value (counterfactual answers); ground truth keeps the true one.
    """
    if style not in ANSWER_STYLES:
        raise ValueError(f"style must be one of {', '.join(ANSWER_STYLES)}, got {style!r}")
    stated = person.attributes[attribute] if value is None else value
    question = rng.choice(QUESTION_TEMPLATES[attribute]).format(name=person.name)
    claims = {attribute: stated}
    if style == "short":
        response = f"{stated} ."
        start = 0
    else:
        head = f"{STYLE_OPENER} "
        sentence = fact_sentence(person, attribute, stated)
        start = len(head) + sentence.index(stated, len(person.name))
        response = head + sentence
        if style == "long":  # a verbose answer that volunteers further attributes
            others = rng.sample([a for a in ATTRIBUTES if a != attribute], LONG_EXTRA_ATTRIBUTES)
            response += " " + " ".join(fact_sentence(person, a, person.attributes[a]) for a in others)
            claims.update({a: person.attributes[a] for a in others})
    return Example(question, response, person.name, attribute, person.attributes[attribute],
                   (start, start + len(stated)), person.known, style, claims)


def instruction_set(world: World, known: bool, size: int, style: str = "simplified", seed: int = 0,
                    heldout: bool = False, counterfactual: bool = False) -> list:
    """`size` examples about tuning-split (or held-out) people of one group.

    Examples cycle through people and attributes before repeating, so a set of
    size n covers as many distinct facts as possible; larger sets reuse facts
    with other question phrasings (as real instruction sets repeat knowledge).
    """
    if size < 1:
        raise ValueError(f"size must be a positive integer, got {size}")
    rng = random.Random(seed * 7919 + (1 if known else 2) + (10 if heldout else 0))
    people = world.group(known, heldout)
    facts = [(p, a) for p in people for a in ATTRIBUTES]
    examples = []
    while len(examples) < size:
        order = facts[:]
        rng.shuffle(order)
        for person, attribute in order[: size - len(examples)]:
            value = None
            if counterfactual:
                value = rng.choice([v for v in _sample_values(attribute, rng) if v != person.attributes[attribute]])
            examples.append(make_example(person, attribute, style, rng, value))
    return examples


def _sample_values(attribute: str, rng: random.Random) -> list:
    if attribute == "birth_date":
        return [f"{rng.choice(BIRTH_DAYS)} {rng.choice(MONTHS)} {rng.choice(BIRTH_YEARS)}" for _ in range(4)]
    return POOLS[attribute]


def mixed_set(world: World, size: int, unknown_fraction: float, style: str = "simplified", seed: int = 0) -> list:
    """Known and unknown people mixed (Gekhman et al.): `unknown_fraction` of the examples are new facts."""
    if not 0 <= unknown_fraction <= 1:
        raise ValueError(f"unknown_fraction must be between 0 and 1, got {unknown_fraction!r}")
    n_unknown = round(size * unknown_fraction)
    examples = []
    if size - n_unknown:
        examples += instruction_set(world, True, size - n_unknown, style, seed)
    if n_unknown:
        examples += instruction_set(world, False, n_unknown, style, seed)
    random.Random(seed).shuffle(examples)
    return examples


_DATE = re.compile(r"\b(\d{1,2}) (" + "|".join(MONTHS) + r") (\d{4})\b")
_VALUE_ATTRIBUTE = {v: a for a, pool in POOLS.items() for v in pool}


def parse_claims(text: str) -> dict:
    """Attribute -> first value stated in a text (values are disjoint across attributes)."""
    claims = {}
    date = _DATE.search(text)
    if date:
        claims["birth_date"] = date.group(0)
    for word in text.split():
        attribute = _VALUE_ATTRIBUTE.get(word)
        if attribute and attribute not in claims:
            claims[attribute] = word
    return claims


def token_role(token: str) -> str:
    """Role of one word-level token in a response: value, name, format or style.

    value: a word of an attribute value; name: a person's name; format: special
    tokens and punctuation; style: every other word (phrasing).
    """
    if token in _VALUE_ATTRIBUTE or token in MONTHS or token.isdigit():
        return "value"
    if token in _NAME_WORDS:
        return "name"
    if token.startswith("<") and token.endswith(">") or not any(c.isalnum() for c in token):
        return "format"
    return "style"


_NAME_WORDS = frozenset(FIRST_NAMES) | frozenset(LAST_NAMES)
ROLES = ("format", "style", "name", "value")
