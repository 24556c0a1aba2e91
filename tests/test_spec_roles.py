"""Spec roles (`roles:` in a dataset spec): a category, brand, price or session column under any
name does what a column named like the role does; a role naming nothing is refused; a spec
without a role is told what it gives up; a session column makes co-visitation's sessions."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from conftest import CSV_SPEC, event_lines, tiny_log, tiny_rows, write_spec
from shopping_mtl.candidates.config import BaselineConfig
from shopping_mtl.candidates.covisit import CovisitServing, covisit, covisitation_counts
from shopping_mtl.candidates.registry import ServingContext, item_order_table
from shopping_mtl.data.readers import read_dataset
from shopping_mtl.data.spec import default_features, load_spec
from shopping_mtl.errors import ConfigError, DataError
from shopping_mtl.features import FeatureSet, FeatureSpec
from shopping_mtl.history import HISTORY_ITEM_IDS
from shopping_mtl.ranking import examples
from shopping_mtl.ranking.cross import CROSS_FEATURES
from shopping_mtl.retrieval.examples import item_catalogue
from shopping_mtl.scale.covisit_table import session_keys

SHOP_SPEC = """\
name: shop
root: .
events:
  paths: [events.csv]
  header: false
  columns: [user_id, item_id, behavior, timestamp]
  timestamp_format: unix
  behaviors: {{click: click, save: save, purchase: purchase}}
items:
  paths: [items.csv]
  header: true
  key: item_id
  types: {{{category}: string, price: float}}
{roles}features:
  history_length: 10
  history_features: [item_id, {category}]
  user: {{user_id: {{type: id}}}}
  item: {{item_id: {{type: id}}, {category}: {{type: categorical}}, price: {{type: numeric, transform: log1p, buckets: 4}}}}
  context: [hour, weekday]
"""


def write_shop(folder, category: str, roles: str = ""):
    """tiny_log() as a CSV shop whose item table calls the category `category`; returns the spec."""
    folder.mkdir(parents=True, exist_ok=True)
    events, items = tiny_log()
    seconds = events["timestamp"].astype("int64") // 10**9
    (folder / "events.csv").write_text("".join(
        f"{u},{i},{e},{t}\n" for u, i, e, t in zip(events["user_id"], events["item_id"], events["event"], seconds)))
    items.rename(columns={"category": category}).to_csv(folder / "items.csv", index=False)
    return write_spec(folder, SHOP_SPEC.format(category=category, roles=roles))


def ranker_inputs(spec_path):
    """The ranker's inputs for fixed (user, item) rows of the shop, as the pipeline builds them."""
    spec = load_spec(str(spec_path))
    data = read_dataset(spec)
    features = FeatureSet.adapt(FeatureSpec.from_dict(spec.feature_section), data.events, items=data.items)
    catalogue = item_catalogue(data.events, data.items, features)
    rng = np.random.default_rng(1)
    rows = pd.DataFrame({"user_id": [f"u{i}" for i in rng.integers(0, 40, 200)],
                         "item_id": [f"i{i}" for i in rng.integers(0, 60, 200)],
                         "two_tower_score": rng.random(200).astype(np.float32)})
    at = data.events["timestamp"].max() + pd.Timedelta(hours=1)
    arrays = examples.ranking_inputs(rows, data.events, at, None, catalogue, features, history_length=10)
    return data, arrays


def test_a_category_under_another_name_gives_the_same_features_as_one_named_category(tmp_path):
    named, named_inputs = ranker_inputs(write_shop(tmp_path / "named", "category"))
    role, role_inputs = ranker_inputs(write_shop(tmp_path / "role", "category_code",
                                                 "roles: {category: category_code}\n"))
    # The canonical item table names the role's column by its role.
    pd.testing.assert_frame_equal(role.items, named.items)
    assert role.spec.feature_section == named.spec.feature_section
    assert set(role_inputs) == set(named_inputs)
    for name in named_inputs:
        np.testing.assert_array_equal(role_inputs[name], named_inputs[name], err_msg=name)
    same_category = role_inputs["cross"][:, CROSS_FEATURES.index("uc_events")]
    assert (same_category > 0).any()

    # Without the role the same column is just an item feature: the category features are lost
    # (what a spec was silently given before roles; now the load says so).
    _, lost = ranker_inputs(write_shop(tmp_path / "lost", "category_code"))
    assert not lost["cross"][:, CROSS_FEATURES.index("uc_events")].any()


def test_a_category_carried_on_events_under_another_name_is_the_history_category(tmp_path):
    (tmp_path / "events.csv").write_text("".join(
        f"{u},{i},{b},{t},cat-{i}\n" for u, i, b, t in tiny_rows()))
    spec_path = write_spec(tmp_path, """\
        name: carried
        root: .
        roles: {category: category_id}
        events:
          paths: [events.csv]
          header: false
          columns: [user_id, item_id, behavior, timestamp, category_id]
          behaviors: {pv: click, fav: save, cart: save, buy: purchase}
          item_columns: {category_id: string}
        """)
    spec = load_spec(str(spec_path))
    events = read_dataset(spec).events
    assert list(events.columns) == ["user_id", "item_id", "event", "timestamp", "category"]
    assert set(events["category"]) == {"cat-a", "cat-b", "cat-c", "cat-d"}
    features = default_features(spec)
    assert features["history_features"] == ["item_id", "category"]
    assert "category" in features["item"] and "category_id" not in features["item"]


def test_a_price_and_brand_role_rename_their_columns_and_the_spec_defaults(tmp_path):
    (tmp_path / "events.csv").write_text(event_lines(tiny_rows()))
    (tmp_path / "items.csv").write_text("item_id,cat,maker,cost\na,c1,m1,10.0\nb,c1,m2,5.5\nc,c2,m1,100\nd,c2,m2,1\n")
    spec_path = write_spec(tmp_path, CSV_SPEC.replace(
        "types: {category: string, price: float}", "types: {cat: string, maker: string, cost: float}")
        + "roles: {category: cat, brand: maker, price: cost}\n"
        + "defaults: {ranking: {exclude_features: [item_id, maker]}}\n")
    spec = load_spec(str(spec_path))
    assert spec.roles == {"category": "cat", "brand": "maker", "price": "cost"}
    assert list(read_dataset(spec).items.columns) == ["item_id", "category", "brand", "price"]
    assert spec.defaults["ranking"]["exclude_features"] == ["item_id", "brand"]
    assert set(spec.feature_section["item"]) == {"item_id", "category", "brand", "price"}


@pytest.mark.parametrize("roles, items_types, events_extra, message", [
    ("{category: category_code}", "{cat: string, price: float}", "",
     "spec.yaml: roles.category names column 'category_code', which is not an item column the spec reads; "
     "item columns: cat, price"),
    ("{categroy: cat}", "{cat: string}", "",
     "spec.yaml: roles has unknown key 'categroy' (did you mean 'category'?); known: category, brand, price, session"),
    ("{session: visit}", "{category: string}", "",
     "spec.yaml: roles.session names column 'visit', which is not in events.columns "
     "['user_id', 'item_id', 'behavior', 'timestamp']"),
    ("{session: item_id}", "{category: string}", "",
     "spec.yaml: roles.session names column 'item_id', the events' item_id column"),
    ("{category: price}", "{category_code: string, price: float}", "",
     "spec.yaml: roles.category names column 'price' of type 'float'; a category column is string"),
    ("{category: category_code}", "{category: string, category_code: string}", "",
     "spec.yaml: roles.category names column 'category_code', but the spec also reads a column 'category'"),
    ("{category: cat, brand: cat}", "{cat: string}", "",
     "spec.yaml: roles.category and roles.brand both name column 'cat'"),
    ("[category]", "{cat: string}", "", "spec.yaml: roles must map a role"),
    ("{}", "{cat: string}", "  session: visit\n",
     "spec.yaml: events has unknown key 'session': the session column is a role, named at the spec's top "
     "level (roles: {session: visit})"),
])
def test_a_role_that_names_nothing_is_a_config_error_naming_the_file_role_and_columns(
        tmp_path, roles, items_types, events_extra, message):
    text = CSV_SPEC.replace("types: {category: string, price: float}", f"types: {items_types}")
    text = text.replace("  behaviors:", events_extra + "  behaviors:") + f"roles: {roles}\n"
    with pytest.raises(ConfigError) as err:
        load_spec(str(write_spec(tmp_path, text)))
    assert message in str(err.value)


def test_a_spec_without_a_category_or_session_role_is_told_what_it_gives_up(tmp_path, caplog):
    spec_path = write_shop(tmp_path, "category_code")
    with caplog.at_level(logging.INFO, logger="shopping_mtl.data.spec"):
        spec = load_spec(str(spec_path))
        load_spec(str(spec_path))  # the config and the data stage both load it: told once
    notes = [r.getMessage() for r in caplog.records]
    assert notes == [
        "spec spec.yaml: no category role: the ranker's same-category features and the history categories "
        "are left out (name it under roles: category: <column>)",
        "spec spec.yaml: no session role: co-visitation takes each user's calendar day (UTC) as one session "
        "(name it under roles: session: <column>)",
    ]
    assert spec.roles == {"price": "price"}
    # A column named like the role has it, unsaid.
    named = load_spec(str(write_shop(tmp_path / "named", "category")))
    assert named.roles == {"category": "category", "price": "price"}
    assert [n for n in named.role_notes() if "category" in n] == []
    # A category role whose column the features leave out gives the ranker no category either.
    text = SHOP_SPEC.format(category="category", roles="").replace(
        "category: {type: categorical}, ", "").replace("[item_id, category]", "[item_id]")
    unused = load_spec(str(write_spec(tmp_path / "named", text, "unused.yaml")))
    assert unused.role_notes()[-1] == (
        "spec unused.yaml: the category column 'category' is not under features.item: the ranker's "
        "same-category features and the history categories are left out (add it there)")


def test_the_bundled_specs_keep_their_columns_and_features():
    for name in ("ecomm", "taobao"):
        spec = load_spec(name)
        assert spec.roles["category"] == "category" and "session" not in spec.roles
        assert spec.events.session is None and not spec.events.canonical
        assert spec.items is None or not spec.items.canonical
        assert spec.feature_section["history_features"] == ["item_id", "category"]


def one_day_two_sessions() -> pd.DataFrame:
    """u1 visits twice on one day (a, b in the morning; c, d in the afternoon); u2 and u3 share
    session id "s1" with u1 but are other users; u2 has seen a."""
    at = pd.Timestamp("2024-03-01 08:00", tz="UTC")
    rows = [("u1", "a", 0, "s1"), ("u1", "b", 1, "s1"), ("u1", "c", 6, "s2"), ("u1", "d", 7, "s2"),
            ("u3", "e", 8, "s1"), ("u2", "a", 9, "t1")]
    return pd.DataFrame({
        "user_id": np.array([r[0] for r in rows], dtype=object),
        "item_id": np.array([r[1] for r in rows], dtype=object),
        "event": "click",
        "timestamp": [at + pd.Timedelta(hours=r[2]) for r in rows],
        "session_id": np.array([r[3] for r in rows], dtype=object),
    })


def pairs(counts: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(counts["source"], counts["target"]))


def test_two_sessions_of_one_user_on_one_day_do_not_co_visit():
    events = one_day_two_sessions()
    by_day = events.drop(columns="session_id")
    assert ("a", "c") in pairs(covisitation_counts(by_day))
    by_session = pairs(covisitation_counts(events))
    assert by_session == {("a", "b"), ("b", "a"), ("c", "d"), ("d", "c")}  # u3's "s1" is its own
    assert set(covisit(by_day, ["u2"], 10)["item_id"]) == {"b", "c", "d"}
    assert list(covisit(events, ["u2"], 10)["item_id"]) == ["b"]


def test_without_a_session_column_a_session_is_a_user_day_as_before():
    events, _ = tiny_log()
    codes, keys = session_keys(events)
    np.testing.assert_array_equal(keys[codes], events["timestamp"].dt.floor("D").to_numpy(dtype="datetime64[ns]"))
    day_text = events["timestamp"].dt.strftime("%Y-%m-%d").to_numpy(dtype=object)
    pd.testing.assert_frame_equal(covisitation_counts(events.assign(session_id=day_text)), covisitation_counts(events))
    users = sorted(set(events["user_id"]))
    pd.testing.assert_frame_equal(covisit(events.assign(session_id=day_text), users, 20), covisit(events, users, 20))


def write_visits(folder, sessions: list[str]):
    """tiny_rows() with a fifth column, the visit, on every row; a spec naming it the session."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "events.csv").write_text("".join(
        f"{u},{i},{b},{t},{s}\n" for (u, i, b, t), s in zip(tiny_rows(), sessions)))
    return write_spec(folder, """\
        name: visits
        root: .
        roles: {session: visit}
        events:
          paths: [events.csv]
          header: false
          columns: [user_id, item_id, behavior, timestamp, visit]
          behaviors: {pv: click, fav: save, cart: save, buy: purchase}
        """)


def test_a_spec_session_column_reaches_the_events_and_co_visitation(tmp_path):
    # u1's first day: a then b, in two visits; its last day: c then a, in one.
    sessions = ["v1", "v2", "v3", "w1", "w2", "w3", "x1", "v4", "v4", "w4", "x2"]
    spec = load_spec(str(write_visits(tmp_path, sessions)))
    assert spec.events.session == "visit" and spec.role_notes()[0].startswith("spec spec.yaml: no category role")
    events = read_dataset(spec).events
    assert list(events.columns) == ["user_id", "item_id", "event", "timestamp", "session_id"]
    assert set(zip(events["user_id"], events["item_id"], events["session_id"])) == {
        (u, i, s) for (u, i, _, _), s in zip(tiny_rows(), sessions)}
    by_day = covisitation_counts(events.drop(columns="session_id"))
    assert ("a", "b") in pairs(by_day)
    assert pairs(covisitation_counts(events)) == {("c", "a"), ("a", "c")}  # u1's last visit, v4

    # A session written as a missing value is a bad row, as an id is.
    with pytest.raises(DataError, match=r"events.csv:3: session is a missing value"):
        read_dataset(load_spec(str(write_visits(tmp_path / "bad", ["v1", "v2", "NaN", *sessions[3:]]))))


def test_a_log_without_logins_names_its_session_column_as_the_user(tmp_path):
    """Each session is then a user (histories, test users, co-visitation by the session's days)."""
    sessions = ["v1", "v1", "v2", "w1", "w2", "w2", "x1", "v3", "v3", "w3", "x2"]
    spec_path = write_visits(tmp_path, sessions)
    text = spec_path.read_text().replace("roles: {session: visit}\n", "").replace(
        "  columns: [user_id, item_id, behavior, timestamp, visit]\n",
        "  columns: [login, item_id, behavior, timestamp, visit]\n  user_id: visit\n")
    spec_path.write_text(text)
    events = read_dataset(load_spec(str(spec_path))).events
    assert list(events.columns) == ["user_id", "item_id", "event", "timestamp"]  # no session of its own
    assert sorted(set(events["user_id"])) == sorted(set(sessions))
    # v1 saw a and b on one day: the two co-visit; v3 (c, a) is a user of its own.
    assert {("a", "b"), ("b", "a"), ("c", "a"), ("a", "c")} <= pairs(covisitation_counts(events))


def test_served_co_visitation_agrees_with_the_offline_lists_on_sessions():
    """The export's co-visitation (pairs frozen from the events, seeds from the request's recent
    items) lists what the offline source lists, with sessions as without."""
    events, items = tiny_log()
    rng = np.random.default_rng(3)
    visits = events.assign(session_id=np.array([f"s{i}" for i in rng.integers(0, 3, len(events))], dtype=object))
    users = sorted(set(events["user_id"]))[:12]
    settings = BaselineConfig()
    for frame in (events, visits):
        context = ServingContext(frame, items, settings, 60, {}, None, item_order=item_order_table(items["item_id"]))
        module = CovisitServing(context, quota=30)
        history = [frame.loc[frame["user_id"] == u, "item_id"].to_numpy(dtype=str)[::-1] for u in users]
        width = max(len(h) for h in history)
        request = {HISTORY_ITEM_IDS: tf.constant([list(h) + [""] * (width - len(h)) for h in history])}
        served = module(request)
        offline = covisit(frame, users, 30, settings.covisit_recent_items, settings.covisit_decay,
                          settings.covisit_max_session_items)
        for row, user in enumerate(users):
            got = served.items[row].numpy()[served.valid[row].numpy()].astype(str)
            mine = offline[offline["user_id"] == user]
            assert list(got) == list(mine["item_id"]), user
            np.testing.assert_allclose(served.scores[row].numpy()[:len(got)], mine["score"], rtol=1e-5)
    assert not covisitation_counts(visits).equals(covisitation_counts(events))
