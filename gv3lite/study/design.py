"""The study's main design as data: a replicated two-level fractional factorial 2^(6-2) over the paper's single
ingredients, in blocks of 16 runs (one block per seed).

Owns `FACTORS` (letter, name, the recipe fields of its -1 and +1 levels), `GENERATORS` (E = -ACD, F = -BCD),
`fraction` (the 16 runs as a ±1 table), `defining_relation`, `alias_chains`, `resolution`, the two named corners
(`GHOSTNETV3_CORNER`, `CONVENTIONAL_CORNER`), `FACTORIAL_GRID` (the grid name of its rows in runs.csv),
`run_label`/`parse_label` (a run's cell name, e.g. ``A+B+C-D-E-F-``),
`block_order` (runs in random order within a block, from the block's seed) and `design_recipe` (levels -> `Recipe`).

Why a factorial (issue 21): with k two-level ingredients every run enters every main effect (variance 4σ²/N), where
one-at-a-time contrasts use 2 cells each (2σ²/n per cell). The levels are the two presets of ``gv3lite.recipe``:
+1 is the GhostNetV3 preset's value for reparam (A) and KD (B), and the conventional preset's value for RandAugment
(E) and random erasing (F); Mixup (C) and CutMix (D) are off in both presets, so +1 is the augment grid's value
(mixup_alpha 0.8, cutmix_alpha 1.0). Every other field is equal in both presets. With E = -ACD and F = -BCD the
GhostNetV3 recipe (A+ B+ C- D- E- F-) and the conventional recipe (A- B- C- D- E+ F+) are both runs of every block,
so the whole-recipe contrast is inside every block, and their recipes (and run ids) equal the ``recipe`` grid's cells.
Defining relation I = -ACDE = -BCDF = +ABEF: resolution IV (main effects are aliased with three-factor interactions
only; two-factor interactions with each other). Source of the method: Box, Hunter & Hunter, *Statistics for
Experimenters* (2nd ed.), ch. 6.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gv3lite.recipe import PRESETS

BASE_PRESET = "ghostnetv3"  # the fields no factor sets come from this preset (equal in both presets)


@dataclass(frozen=True)
class Factor:
    """One two-level ingredient: ``letter`` (A-F), ``name``, and the recipe fields of its ``low`` (-1) and ``high``
    (+1) levels."""
    letter: str
    name: str
    low: dict
    high: dict


_V3, _CONV = PRESETS["ghostnetv3"], PRESETS["conventional"]
_BRANCHES = ("num_conv_branches", "use_scale_branch", "use_identity_branch")
FACTORS = (
    Factor("A", "reparam", {k: _CONV[k] for k in _BRANCHES}, {k: _V3[k] for k in _BRANCHES}),
    Factor("B", "kd", {"teacher": _CONV["teacher"]}, {"teacher": _V3["teacher"]}),
    Factor("C", "mixup", {"mixup_alpha": 0.0}, {"mixup_alpha": 0.8}),
    Factor("D", "cutmix", {"cutmix_alpha": 0.0}, {"cutmix_alpha": 1.0}),
    Factor("E", "randaugment", {"auto_augment": _V3["auto_augment"]}, {"auto_augment": _CONV["auto_augment"]}),
    Factor("F", "random_erasing", {"random_erasing": _V3["random_erasing"]},
           {"random_erasing": _CONV["random_erasing"]}),
)
LETTERS = "".join(f.letter for f in FACTORS)
BY_NAME = {f.name: f for f in FACTORS}
BASE_FACTORS = "ABCD"                         # the full 2^4 factorial of one block
GENERATORS = {"E": "-ACD", "F": "-BCD"}       # the added factors as signed products of base factors
GHOSTNETV3_CORNER = dict(A=1, B=1, C=-1, D=-1, E=-1, F=-1)
CONVENTIONAL_CORNER = dict(A=-1, B=-1, C=-1, D=-1, E=1, F=1)
FACTORIAL_GRID = "factorial"  # the grid name of the factorial's rows in runs.csv (the one-factor grids have theirs)


def _check_generators(generators: dict) -> dict:
    parsed = {}
    for letter, word in generators.items():
        sign, letters = (-1, word[1:]) if word.startswith("-") else (1, word.lstrip("+"))
        unknown = set(letters) - set(BASE_FACTORS)
        if letter not in LETTERS or letter in BASE_FACTORS or unknown or len(letters) < 2:
            added = ", ".join(sorted(set(LETTERS) - set(BASE_FACTORS)))
            raise ValueError(f"generator {letter} = {word}: an added factor ({added}) "
                             f"must be a signed product of two or more base factors {', '.join(BASE_FACTORS)}; "
                             f"fix the generator, e.g. E = -ACD")
        parsed[letter] = (sign, letters)
    if sorted(parsed) != sorted(set(LETTERS) - set(BASE_FACTORS)):
        raise ValueError(f"generators {sorted(parsed)} must define each of {sorted(set(LETTERS) - set(BASE_FACTORS))}")
    return parsed


def fraction(generators: dict | None = None) -> pd.DataFrame:
    """The 16 runs of one block: columns ``A``..``F`` (±1), the base factors in standard order (A changes
    fastest). Raises ``ValueError`` for a generator that is not a signed product of two or more base factors or
    that makes two runs equal (a singular design: the main effects would not be estimable)."""
    parsed = _check_generators(generators or GENERATORS)
    rows = []
    for levels in itertools.product((-1, 1), repeat=len(BASE_FACTORS)):
        run = dict(zip(BASE_FACTORS, reversed(levels)))
        for letter, (sign, word) in parsed.items():
            run[letter] = sign * int(np.prod([run[x] for x in word]))
        rows.append({x: run[x] for x in LETTERS})
    table = pd.DataFrame(rows)
    rank = np.linalg.matrix_rank(np.column_stack([np.ones(len(table)), table.to_numpy()]))
    if rank < 1 + len(LETTERS) or table.duplicated().any():
        raise ValueError(f"generators {generators} make the main effects inestimable (design rank {rank} < "
                         f"{1 + len(LETTERS)}); use generators whose words differ, e.g. E = -ACD, F = -BCD")
    return table


def _multiply(a: tuple, b: tuple) -> tuple:
    """(sign, letters) x (sign, letters): letters that appear twice cancel (x² = 1)."""
    letters = "".join(sorted(set(a[1]) ^ set(b[1])))
    return a[0] * b[0], letters


def defining_relation(generators: dict | None = None) -> list[tuple[int, str]]:
    """The defining words (sign, letters) of the fraction, e.g. ``[(-1, 'ACDE'), (-1, 'BCDF'), (1, 'ABEF')]``:
    each generator X = ±W gives the word ±WX, and every product of words is a word."""
    parsed = _check_generators(generators or GENERATORS)
    words = [(sign, "".join(sorted(word + letter))) for letter, (sign, word) in parsed.items()]
    found = []
    for r in range(1, len(words) + 1):
        for combo in itertools.combinations(words, r):
            product = (1, "")
            for w in combo:
                product = _multiply(product, w)
            found.append(product)
    return sorted(found, key=lambda w: (len(w[1]), w[1]))


def resolution(generators: dict | None = None) -> int:
    """The length of the shortest defining word (IV = 4 for the default generators)."""
    return min(len(w) for _, w in defining_relation(generators))


def word_text(sign: int, letters: str) -> str:
    return ("-" if sign < 0 else "+") + letters


def relation_text(generators: dict | None = None) -> str:
    """``I = -ACDE = -BCDF = +ABEF``."""
    return "I = " + " = ".join(word_text(*w) for w in defining_relation(generators))


def alias_chains(generators: dict | None = None, max_order: int = 2) -> list[list[tuple[int, str]]]:
    """Every effect of up to ``max_order`` letters with what it is aliased with (up to ``max_order`` letters too),
    one chain per estimable column, e.g. ``[(1, 'AE'), (1, 'BF'), (-1, 'CD')]``; a chain's estimate is the signed
    sum of its effects. Main effects come first, then chains of two-factor interactions."""
    words = defining_relation(generators)
    chains, seen = [], set()
    for order in range(1, max_order + 1):
        for effect in itertools.combinations(LETTERS, order):
            effect = "".join(effect)
            if effect in seen:
                continue
            chain = [(1, effect)] + [_multiply((1, effect), w) for w in words]
            chain = sorted({(s, e) for s, e in chain if 0 < len(e) <= max_order}, key=lambda x: (len(x[1]), x[1]))
            seen.update(e for _, e in chain)
            chains.append(chain)
    return chains


def chain_text(chain) -> str:
    """``AE + BF - CD`` (the first effect's sign taken as +)."""
    first = chain[0][0]
    return " ".join((f"{'-' if s * first < 0 else '+'} " if i else "") + e for i, (s, e) in enumerate(chain))


def run_label(levels: dict) -> str:
    """A run's cell name from its levels: ``A+B+C-D-E-F-``."""
    return "".join(f"{x}{'+' if levels[x] > 0 else '-'}" for x in LETTERS)


def parse_label(label: str) -> dict:
    """The levels of a cell name written by `run_label`; ``ValueError`` naming the expected form otherwise."""
    if len(label) != 2 * len(LETTERS) or label[::2] != LETTERS or set(label[1::2]) - {"+", "-"}:
        raise ValueError(f"{label!r} is not a factorial cell name; expected the form A+B-C-D+E-F+ "
                         f"(factors {LETTERS} in order, each + or -)")
    return {x: 1 if s == "+" else -1 for x, s in zip(label[::2], label[1::2])}


def block_order(seed: int, generators: dict | None = None) -> list[str]:
    """The 16 cell names of one block in the order they are trained: a random permutation drawn from the block's
    ``seed`` (numpy's default generator), so the order is recorded by the seed alone."""
    labels = [run_label(r) for r in fraction(generators).to_dict("records")]
    return [labels[i] for i in np.random.default_rng(seed).permutation(len(labels))]


def level_fields(levels: dict) -> dict:
    """The recipe fields of a run (the base preset's values for every field no factor sets)."""
    fields = {}
    for f in FACTORS:
        if levels[f.letter] not in (-1, 1):
            raise ValueError(f"factor {f.letter} ({f.name}) at level {levels[f.letter]!r}; levels are -1 and +1")
        fields.update(f.high if levels[f.letter] > 0 else f.low)
    return fields
