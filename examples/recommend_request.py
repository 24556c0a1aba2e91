"""The inputs of a `recommend` request, built from the model's own signature.

A shop's export takes the user features its dataset spec declares (EComm's: gender, age_level,
...), besides `user_id`, the history and the time, and TF Serving refuses a request whose
inputs differ from the signature's. So the clients ask the server for the signature first
(`GetModelMetadata`, or REST's `/metadata`) and fill every input: the user's id, history and
the time from the caller, user features from `--feature name=value`, and any feature not given
its documented missing value ("" for text, NaN for numbers: the model reads both as missing).
Plain Python, shared by `grpc_recommend.py` and `rest_recommend.py`.
"""

from __future__ import annotations

import argparse

HISTORY = ("history_item_ids", "history_events", "history_timestamps", "history_sessions")
EVENTS = ("click", "save", "purchase")


class RequestError(ValueError):
    """A value the caller gave that the signature cannot take (the message says which)."""


def _entry(fields: list[str]) -> bool:
    return fields[1] in EVENTS and fields[2].lstrip("-").isdigit()


def parse_history(text: str) -> list[tuple[str, str, int, str]]:
    """`item:event:unix_seconds[:session],...` (most recent first) -> [(item, event, seconds,
    session), ...], session "" where not given (a model whose spec names a session column
    takes `history_sessions`; an event without one counts in no session). An item id may hold
    ":"; `item:event:seconds` is read first, so a session is read only where that fails."""
    history = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        fields = part.rsplit(":", 2)
        if len(fields) == 3 and _entry(fields):
            history.append((fields[0], fields[1], int(fields[2]), ""))
            continue
        fields = part.rsplit(":", 3)
        if len(fields) != 4 or not _entry(fields):
            raise RequestError(f"--history entry {part!r} is not item:event:unix_seconds[:session] with event one "
                               f"of {', '.join(EVENTS)}")
        history.append((fields[0], fields[1], int(fields[2]), fields[3]))
    return history


def parse_features(pairs: list[str]) -> dict[str, str]:
    """`["gender=1", "income=5200.5"]` -> {"gender": "1", "income": "5200.5"}."""
    features = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise RequestError(f"--feature {pair!r} is not name=value")
        features[name] = value
    return features


def _cast(name: str, value, dtype: str):
    if dtype == "string":
        return str(value)
    try:
        return float(value) if dtype.startswith(("float", "double")) else int(value)
    except ValueError:
        raise RequestError(f"feature {name}={value!r}: the model takes a number ({dtype})") from None


def missing(dtype: str):
    """The value that tells the model a feature is unknown: "" for text, NaN for numbers."""
    return "" if dtype == "string" else float("nan") if dtype.startswith(("float", "double")) else 0


def request_inputs(signature: dict[str, str], user_id: str, history: list[tuple[str, str, int, str]], now: int,
                   features: dict[str, str] | None = None) -> dict[str, list]:
    """Every input of `signature` (input name -> dtype name: "string", "float32", "int64") for one
    user, as a batch of one (nested lists).

    Raises:
        RequestError: a feature the signature does not have, or a value it cannot take.
    """
    features = dict(features or {})
    unknown = sorted(set(features) - set(signature))
    if unknown:
        known = sorted(n for n in signature if n not in (*HISTORY, "user_id", "timestamp"))
        raise RequestError(f"the model has no input {', '.join(unknown)}; its user features: "
                           f"{', '.join(known) or 'none'}")
    history = [entry if len(entry) == 4 else (*entry, "") for entry in history]
    items, events, stamps, sessions = ([list(column) for column in zip(*history)] if history
                                       else ([""], [""], [0], [""]))
    given = {"user_id": user_id, "history_item_ids": items, "history_events": events,
             "history_timestamps": stamps, "history_sessions": sessions, "timestamp": now}
    inputs = {}
    for name, dtype in signature.items():
        if name in given:
            value = given[name]
        elif name in features:
            value = _cast(name, features[name], dtype)
        else:
            value = missing(dtype)
        inputs[name] = [value]
    return inputs


def add_arguments(parser: argparse.ArgumentParser, server: str, server_help: str) -> None:
    """The clients' shared flags; `server` is the default address, described by `server_help`."""
    parser.add_argument("--server", default=server, help=f"{server_help} (default %(default)s)")
    parser.add_argument("--model", default="recommend", help="the model's name in models.config (default %(default)s)")
    parser.add_argument("--user", required=True, help="the user's id (an unknown id is fine)")
    parser.add_argument("--history", default="", help="item:event:unix_seconds[:session],... most recent first (the session only "
                        "where the dataset spec names one)")
    parser.add_argument("--feature", action="append", default=[], metavar="NAME=VALUE",
                        help="a user feature (repeat the flag); the others are sent as missing")
    parser.add_argument("--top", type=int, default=10, help="how many rows to print (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each answer")


def print_list(out: dict, top: int) -> None:
    """The first `top` rows of one user's answer (`item_ids`, `scores` and the heads, each a
    sequence; item ids as text)."""
    print(f"{'rank':>4} {'item_id':>12} {'score':>8} {'p_click':>8} {'p_save':>8} {'p_purchase':>10}")
    for rank in range(min(top, len(out["item_ids"]))):
        print(f"{rank + 1:>4} {out['item_ids'][rank]:>12} {out['scores'][rank]:>8.4f} {out['click'][rank]:>8.4f} "
              f"{out['save'][rank]:>8.4f} {out['purchase'][rank]:>10.4f}")
