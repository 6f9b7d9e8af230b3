"""Properties of the filter: the dialects compose as logic says, whatever the attributes."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from autoscaler.eventing import filters

names = st.from_regex(filters.ATTRIBUTE_NAME, fullmatch=True).filter(lambda n: len(n) <= 8)
values = st.text(alphabet="abcAB.-", min_size=1, max_size=6)
events = st.dictionaries(names, values, max_size=6)


def leaf(attribute_values: st.SearchStrategy[tuple[str, str]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda dialect, pair: {dialect: {pair[0]: pair[1]}},
        st.sampled_from(["exact", "prefix", "suffix"]),
        attribute_values,
    )


expressions = st.recursive(
    leaf(st.tuples(names, values)),
    lambda inner: st.one_of(
        st.builds(lambda fs: {"all": fs}, st.lists(inner, max_size=3)),
        st.builds(lambda fs: {"any": fs}, st.lists(inner, max_size=3)),
        st.builds(lambda f: {"not": f}, inner),
    ),
    max_leaves=6,
)


def verdict(expression: list[dict[str, Any]], event: dict[str, str]) -> bool:
    parsed = filters.parse_trigger(
        {
            "metadata": {"name": "t"},
            "spec": {"broker": "b", "subscriber": {"uri": "http://x/"}, "filters": expression},
        }
    )
    return filters.matches(parsed, event)


@given(expressions, events)
def test_not_negates_and_double_negation_is_the_identity(
    expression: dict[str, Any], event: dict[str, str]
) -> None:
    plain = verdict([expression], event)
    assert verdict([{"not": expression}], event) is (not plain)
    assert verdict([{"not": {"not": expression}}], event) is plain


@given(st.lists(expressions, max_size=4), events)
def test_a_filters_list_is_the_and_of_its_entries_and_all_is_the_same(
    entries: list[dict[str, Any]], event: dict[str, str]
) -> None:
    each = [verdict([entry], event) for entry in entries]
    assert verdict(entries, event) is all(each)
    assert verdict([{"all": entries}], event) is all(each)
    assert verdict([{"any": entries}], event) is any(each)


@given(events, st.data())
def test_an_event_matches_attributes_taken_from_itself_and_not_a_changed_value(
    event: dict[str, str], data: st.DataObject
) -> None:
    chosen = data.draw(st.lists(st.sampled_from(sorted(event)), unique=True) if event else st.just([]))
    wanted = {key: event[key] for key in chosen}
    parsed = filters.parse_trigger(
        {
            "metadata": {"name": "t"},
            "spec": {"broker": "b", "subscriber": {"uri": "http://x/"}, "filter": {"attributes": wanted}},
        }
    )
    assert filters.matches(parsed, event)
    if chosen:
        changed = {**event, chosen[0]: event[chosen[0]] + "x"}
        assert not filters.matches(parsed, changed)
