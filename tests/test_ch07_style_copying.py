"""Chapter 7's interval verdicts (Ghosh et al. 2024, §5) on hand-made runs: every outcome of each part, inconclusive
included, the combined verdict, and the null row (tuning that changed nothing)."""

import math

import pandas as pd
import pytest

from tunestudy import ch07_style_copying as C

REPRODUCED, PARTLY, NOT, INCONCLUSIVE, PREMISE = ("reproduced", "partly reproduced", "not reproduced", "inconclusive",
                                                  "premise not met")
STYLES = ("short", "simplified", "long")


def style_rows(long_extra, full_extra=None, simplified=(0.9, 0.95, 0.92), borrow=(0.10, 0.10, 0.10),
               chance=(0.04, 0.04, 0.04), styled=1.0):
    """Per seed: wrong facts per answer about unknown people after the simplified style `simplified[seed]`, after
    the long style that plus `long_extra[seed]` for LoRA (`full_extra[seed]` for full, default the same); a borrowing
    share `borrow[seed]` against a chance share `chance[seed]` in every style; LoRA's answers in the tuned style on a
    share `styled`."""
    full_extra = long_extra if full_extra is None else full_extra
    rows = []
    for seed, base in enumerate(simplified):
        for method, extra in (("lora", long_extra[seed]), ("full", full_extra[seed])):
            for style in STYLES:
                wrong = base + (extra if style == "long" else 0.0) + (0.05 if style == "short" else 0.0)
                rows.append({"method": method, "style": style, "seed": seed, "wrong_claims_per_answer_unknown": wrong,
                             "borrow_rate": borrow[seed], "borrow_chance": chance[seed],
                             "style_share": 0.0 if style == "short" else styled})
    return pd.DataFrame(rows)


# --- long_worse ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra, expected", [
    ((1.8, 1.6, 1.7), REPRODUCED),  # both methods invent about two more facts per answer on every seed
    ((-0.3, -0.2, -0.25), NOT),  # the long style helps
    ((0.0, 0.0, 0.0), NOT),  # the null row: the same answers after every style
    ((0.4, -0.3, 0.1), INCONCLUSIVE),  # one seed the other way: straddles 0
])
def test_long_style_on_every_outcome(extra, expected):
    result = C.verdict_long_style_invents(style_rows(extra))
    assert result["verdict"] == expected and expected in result["sentence"]
    numbers = result["numbers"]
    assert numbers["seeds"] == 3 and numbers["threshold"] == C.LONG_MORE_WRONG
    assert numbers["estimate"] == pytest.approx(sum(extra) / 3)


def test_long_style_needs_every_method():
    # full invents far more after the long style, LoRA does not: the smaller increase decides
    result = C.verdict_long_style_invents(style_rows((0.0, 0.0, 0.0), full_extra=(1.8, 1.9, 1.7)))
    assert result["verdict"] == NOT
    assert result["numbers"]["by_method"]["full"]["mean"] == pytest.approx(1.8)


def test_long_style_pairs_within_the_seed():
    # the seeds' levels differ a lot, the increase is the same on each: the paired interval is exact
    result = C.verdict_long_style_invents(style_rows((0.5, 0.5, 0.5), simplified=(0.2, 1.5, 0.8)))
    assert result["verdict"] == REPRODUCED and result["numbers"]["interval"] == pytest.approx([0.5, 0.5])


def test_long_style_premise_and_one_seed():
    rows = style_rows((1.8, 1.6, 1.7))
    assert C.verdict_long_style_invents(rows[rows["style"] != "long"])["verdict"] == PREMISE
    one = C.verdict_long_style_invents(rows[rows.seed == 0])
    assert one["verdict"] == INCONCLUSIVE and math.isnan(one["numbers"]["interval"][0])


# --- borrows ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("borrow, chance, expected", [
    ((0.16, 0.12, 0.14), (0.04, 0.04, 0.04), REPRODUCED),  # 3-4x chance on every seed
    ((0.06, 0.05, 0.055), (0.04, 0.04, 0.04), NOT),  # above chance, but well under twice it
    ((0.04, 0.03, 0.035), (0.04, 0.03, 0.035), NOT),  # the null row: the similar person no likelier than any
    ((0.16, 0.05, 0.10), (0.04, 0.04, 0.04), INCONCLUSIVE),  # 4x, 1.25x, 2.5x: straddles 2x
])
def test_borrows_on_every_outcome(borrow, chance, expected):
    result = C.verdict_full_borrows(style_rows((1.8, 1.6, 1.7), borrow=borrow, chance=chance))
    assert result["verdict"] == expected and expected in result["sentence"]
    numbers = result["numbers"]
    assert numbers["seeds"] == 3 and numbers["threshold"] == C.BORROW_RATIO
    expected_ratio = math.exp(sum(math.log(b / c) for b, c in zip(borrow, chance)) / 3)
    assert numbers["ratio"] == pytest.approx(expected_ratio)


def test_borrows_reads_only_full_and_averages_the_styles():
    rows = style_rows((1.8, 1.6, 1.7), borrow=(0.16, 0.12, 0.14))
    rows.loc[rows.method == "lora", "borrow_rate"] = 0.0  # LoRA's borrowing is not the claim's
    rows.loc[(rows.method == "full") & (rows["style"] == "short"), "borrow_rate"] = float("nan")  # no wrong value
    result = C.verdict_full_borrows(rows)
    assert result["verdict"] == REPRODUCED and result["numbers"]["per_seed"]["0"] == pytest.approx(4.0)


def test_borrows_with_nothing_borrowed_or_nothing_wrong():
    nothing = C.verdict_full_borrows(style_rows((1.8, 1.6, 1.7), borrow=(0.0, 0.0, 0.0)))
    assert nothing["verdict"] == NOT and nothing["numbers"]["ratio"] == 0.0
    some = C.verdict_full_borrows(style_rows((1.8, 1.6, 1.7), borrow=(0.16, 0.0, 0.14)))
    assert some["verdict"] == INCONCLUSIVE  # a zero share has no log ratio
    rows = style_rows((1.8, 1.6, 1.7))
    rows[["borrow_rate", "borrow_chance"]] = float("nan")
    assert C.verdict_full_borrows(rows)["verdict"] == PREMISE


# --- lora_style ------------------------------------------------------------------------------------------------

def positions(shifted_by_seed, unshifted=50):
    """LoRA's scored positions: per seed, {role: number of shifted tokens}, plus `unshifted` style tokens the base
    ranks first."""
    rows = []
    for seed, counts in enumerate(shifted_by_seed):
        for role, n in counts.items():
            rows += [{"seed": seed, "role": role, "base_rank_icl": 8}] * n
        rows += [{"seed": seed, "role": "style", "base_rank_icl": 1}] * unshifted
    return pd.DataFrame(rows)


def lora_rows(styled=1.0, seeds=3):
    return pd.DataFrame([{"method": "lora", "style": "simplified", "seed": s, "style_share": styled}
                         for s in range(seeds)])


@pytest.mark.parametrize("shifted, expected", [
    (({"style": 70, "value": 10, "name": 20}, {"style": 75, "value": 10, "name": 15}, {"style": 72, "value": 8,
                                                                                      "format": 20}), REPRODUCED),
    (({"style": 30, "value": 50, "name": 20}, {"style": 25, "value": 60, "name": 15}, {"style": 35, "value": 55,
                                                                                      "format": 10}), NOT),
    (({"style": 80, "value": 20}, {"style": 30, "value": 70}, {"style": 60, "value": 40}), INCONCLUSIVE),
])
def test_lora_style_on_every_outcome(shifted, expected):
    result = C.verdict_lora_style_tokens(positions(shifted), lora_rows())
    assert result["verdict"] == expected and expected in result["sentence"]
    numbers = result["numbers"]
    assert numbers["seeds"] == 3 and numbers["threshold"] == C.STYLE_MAJORITY
    shares = [s.get("style", 0) / sum(s.values()) for s in shifted]
    assert numbers["values"] == pytest.approx(shares)


def test_lora_style_null_row_is_premise_not_met():
    # a LoRA that learned nothing answers like the base (no tuned style) and shifts nothing against its own base
    assert C.verdict_lora_style_tokens(positions([{}, {}, {}]), lora_rows(styled=1.0))["verdict"] == PREMISE
    styled_shift = positions([{"style": 70, "value": 10}] * 3)
    assert C.verdict_lora_style_tokens(styled_shift, lora_rows(styled=0.0))["verdict"] == PREMISE


def test_lora_style_counts_only_tokens_ranked_below_the_top_three():
    table = positions([{"style": 70, "value": 30}, {"style": 72, "value": 28}, {"style": 68, "value": 32}])
    table.loc[(table.role == "style") & (table.base_rank_icl == 8), "base_rank_icl"] = C.SHIFTED_RANK  # not shifted
    result = C.verdict_lora_style_tokens(table, lora_rows())
    assert result["verdict"] == NOT and result["numbers"]["estimate"] == 0.0


# --- the chapter's verdict -------------------------------------------------------------------------------------

def parts(long_worse, borrows, lora_style):
    return {"long_worse": {"verdict": long_worse}, "borrows": {"verdict": borrows},
            "lora_style": {"verdict": lora_style}}


@pytest.mark.parametrize("outcomes, expected", [
    ((REPRODUCED, REPRODUCED, REPRODUCED), REPRODUCED),
    ((REPRODUCED, NOT, REPRODUCED), PARTLY),
    ((NOT, REPRODUCED, PREMISE), PARTLY),  # a part whose premise fails is not shown to hold
    ((REPRODUCED, NOT, INCONCLUSIVE), PARTLY),  # partly whatever the undecided part gives
    ((NOT, NOT, NOT), NOT),
    ((NOT, NOT, PREMISE), NOT),
    ((REPRODUCED, INCONCLUSIVE, REPRODUCED), INCONCLUSIVE),  # reproduced or partly: undecided
    ((NOT, INCONCLUSIVE, NOT), INCONCLUSIVE),  # partly or not: undecided
    ((PREMISE, PREMISE, PREMISE), PREMISE),
])
def test_chapter_verdict_from_its_parts(outcomes, expected):
    result = C.verdict_style_copying(parts(*outcomes))
    assert result["verdict"] == expected and result["sentence"].endswith(expected)
    assert result["numbers"]["parts"] == dict(zip(C.PARTS, outcomes))


def test_null_row_is_never_reproduced_or_partly():
    # tuning that changed nothing: the same answers in every style, wrong values matching the similar person no more
    # than chance, no tuned style and no shifted token
    rows = style_rows((0.0, 0.0, 0.0), borrow=(0.04, 0.03, 0.035), chance=(0.04, 0.03, 0.035), styled=0.0)
    lora = rows[(rows.method == "lora") & (rows["style"] == "simplified")]
    found = {"long_worse": C.verdict_long_style_invents(rows), "borrows": C.verdict_full_borrows(rows),
             "lora_style": C.verdict_lora_style_tokens(positions([{}, {}, {}]), lora)}
    assert all(v["verdict"] not in (REPRODUCED, PARTLY) for v in found.values())
    assert C.verdict_style_copying(found)["verdict"] == NOT
