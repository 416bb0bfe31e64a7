"""The embedded default KG: a seeded, deterministic generator of a small family/geography world.

Its relations follow the patterns KGE papers talk about, so held-out triples are inferable from
train and the decoders differ visibly (TransE cannot model symmetric relations; RotatE can):

=================  ====================  ==================================================
relation           pattern               meaning
=================  ====================  ==================================================
married_to         symmetric             a perfect matching of persons of one generation
sister_city_of     symmetric             a perfect matching of cities
parent_of          antisymmetric, 1-N    a forest over four generations of persons
child_of           inverse of parent_of
grandparent_of     composition           parent_of . parent_of
lives_in           N-1                   families mostly live in their root's city
has_resident       inverse of lives_in   1-N
city_in            N-1                   cities to countries
citizen_of         composition           lives_in . city_in
=================  ====================  ==================================================
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch

from .kg import KG

PATTERNS = {
    "married_to": "symmetric",
    "sister_city_of": "symmetric",
    "parent_of": "antisymmetric (1-N)",
    "child_of": "inverse (of parent_of)",
    "grandparent_of": "composition (parent_of.parent_of)",
    "lives_in": "N-1",
    "has_resident": "inverse (of lives_in)",
    "city_in": "N-1",
    "citizen_of": "composition (lives_in.city_in)",
}


def generate_kg(num_persons: int = 800, num_cities: int = 120, num_countries: int = 8,
                generations: int = 4, stay_probability: float = 0.9, valid_fraction: float = 0.1,
                test_fraction: float = 0.1, seed: int = 0) -> KG:
    """Generate the default KG. The same arguments always give the same KG (ids, names, splits)."""
    if num_persons < 2 * generations or num_cities < 2 or num_countries < 1:
        raise ValueError("generate_kg: need num_persons >= 2*generations, num_cities >= 2, num_countries >= 1")
    generator = torch.Generator().manual_seed(seed)

    def randint(high: int, size: int) -> List[int]:
        return torch.randint(high, (size,), generator=generator).tolist()

    def permutation(n: int) -> List[int]:
        return torch.randperm(n, generator=generator).tolist()

    persons = [f"person_{i}" for i in range(num_persons)]
    cities = [f"city_{i}" for i in range(num_cities)]
    countries = [f"country_{i}" for i in range(num_countries)]
    entity_names = persons + cities + countries
    country_base = num_persons + num_cities

    facts: Dict[str, List[Tuple[int, int]]] = {name: [] for name in PATTERNS}
    per_generation = num_persons // generations
    generation_of = [min(i // per_generation, generations - 1) for i in range(num_persons)]
    members = [[i for i in range(num_persons) if generation_of[i] == g] for g in range(generations)]

    # parent_of forest: each person of generation g > 0 has one parent in generation g - 1.
    parent = {}
    for g in range(1, generations):
        choices = randint(len(members[g - 1]), len(members[g]))
        for child, choice in zip(members[g], choices):
            parent[child] = members[g - 1][choice]
            facts["parent_of"].append((parent[child], child))
            facts["child_of"].append((child, parent[child]))
    for child, mother in parent.items():
        if mother in parent:
            facts["grandparent_of"].append((parent[mother], child))

    # married_to: a perfect matching inside each generation (symmetric: both directions are true).
    for group in members:
        order = [group[i] for i in permutation(len(group))]
        for a, b in zip(order[0::2], order[1::2]):
            facts["married_to"] += [(a, b), (b, a)]

    # sister cities: a perfect matching of cities.
    order = permutation(num_cities)
    for a, b in zip(order[0::2], order[1::2]):
        facts["sister_city_of"] += [(num_persons + a, num_persons + b), (num_persons + b, num_persons + a)]

    # cities lie in countries; families mostly stay in their root's city.
    country_of_city = randint(num_countries, num_cities)
    for c, k in enumerate(country_of_city):
        facts["city_in"].append((num_persons + c, country_base + k))
    home = {}
    root_cities = randint(num_cities, num_persons)
    moves = torch.rand(num_persons, generator=generator).tolist()
    for i in range(num_persons):  # ids are in generation order, so parents come first
        if i in parent and moves[i] < stay_probability:
            home[i] = home[parent[i]]
        else:
            home[i] = root_cities[i]
        facts["lives_in"].append((i, num_persons + home[i]))
        facts["has_resident"].append((num_persons + home[i], i))
        facts["citizen_of"].append((i, country_base + country_of_city[home[i]]))

    relation_names = list(PATTERNS)
    triples = torch.tensor([(h, r, t) for r, name in enumerate(relation_names) for h, t in facts[name]],
                           dtype=torch.int64)
    triples = torch.unique(triples, dim=0)
    triples = triples[torch.randperm(len(triples), generator=generator)]
    num_valid = int(valid_fraction * len(triples))
    num_test = int(test_fraction * len(triples))
    held_out, train = triples[: num_valid + num_test], triples[num_valid + num_test:]
    # Every held-out entity must occur in train: move held-out triples that would break that.
    seen = torch.zeros(len(entity_names), dtype=torch.bool)
    seen[train[:, 0]] = True
    seen[train[:, 2]] = True
    keep = seen[held_out[:, 0]] & seen[held_out[:, 2]]
    train = torch.cat([train, held_out[~keep]])
    held_out = held_out[keep]
    num_valid = len(held_out) * num_valid // max(num_valid + num_test, 1)
    return KG(name="synthetic", train=train, valid=held_out[:num_valid], test=held_out[num_valid:],
              num_entities=len(entity_names), num_relations=len(relation_names),
              entity_names=entity_names, relation_names=relation_names, relation_info=dict(PATTERNS))
