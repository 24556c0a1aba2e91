"""The page `make bench` writes (bench/RESULTS.md): an overview table, then one section per
benchmark (quality, speed, scale) holding its parts' markdown under the exact command, date,
commit, wall and load of each part, and, for speed, headline figures gathered from the parts'
tables. Each section sits between `<!-- section:NAME {json head} -->` and
`<!-- /section:NAME -->` markers, so that a later run can read the page back
(`read_sections`) and replace some sections verbatim. Standard library only; nothing here runs
a part or writes a file."""

from __future__ import annotations

import json
import re
from pathlib import Path

SECTIONS = ("quality", "speed", "scale")
TITLES = {"quality": "Quality on EComm and Taobao", "speed": "Speed: training throughput and serving latency",
          "scale": "Scale: 10^5, 10^6 and 10^7 synthetic events"}
WHAT = {
    "quality": "every metric of docs/EVALUATION.md (Recall@10/50/100, HitRate@10/50/100, NDCG@10; any, "
               "save, purchase; all items, excl_seen, new_gt) with 95% bootstrap intervals, for the final list, "
               "the two-tower model alone, the merged candidate set and each of its sources, and each baseline; "
               "the ranker's heads (AUC, GAUC, log loss, ECE before/after Platt, single-task AUC); the final list "
               "over the best baseline (paired ratio); the runs' training speed",
    "speed": "two-tower training pairs/s against the 50k target; the ranker's training rows/s beside it; exported "
             "top-100 retrieval latency against the matmul floor; `recommend` (retrieval + ranking) latency "
             "against the 20 ms target and the retrieval export alone",
    "scale": "synthetic logs of 10^5, 10^6, 10^7 events through the data, retrieval, candidates and ranking "
             "stages: wall time and peak memory per stage, the slope of cost against size, the 30 min / 8 GB target",
}
SHORT = {"quality": "final list, two-tower, candidate sources and baselines: every docs/EVALUATION.md metric with "
                    "95% intervals; ranker heads",
         "speed": "training pairs/s and rows/s; exported latency against the matmul floor and the 20 ms target",
         "scale": "10^5..10^7 synthetic events: wall and peak memory per stage, slopes"}
BEGIN = re.compile(r"^<!-- section:(\w+) (\{.*\}) -->$", re.M)


# --------------------------------------------------------------------------------------------
# Reading the parts' markdown


def demote(text: str, top: int = 3) -> str:
    """Shift the part's headings so that its highest one is at level `top` (outside code fences)."""
    levels = [len(m.group(1)) for m in re.finditer(r"^(#{1,6}) ", text, re.M)]
    if not levels:
        return text
    shift = top - min(levels)
    out, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        m = re.match(r"^(#{1,6}) ", line)
        if m and not fenced:
            line = "#" * max(1, min(6, len(m.group(1)) + shift)) + line[len(m.group(1)):]
        out.append(line)
    return "\n".join(out)


def md_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every markdown table of `text`: (header cells, body rows)."""
    tables, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            current.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif current:
            if len(current) >= 2 and set("".join(current[1])) <= set("-: "):
                tables.append((current[0], current[2:]))
            current = []
    return tables


def number(cell: str) -> float | None:
    """The number a table cell starts with ("1,234.5 [..]" -> 1234.5); None if it starts with none."""
    m = re.match(r"^\s*(-?[\d,]+(?:\.\d+)?)", cell or "")
    return float(m.group(1).replace(",", "")) if m else None


# --------------------------------------------------------------------------------------------
# The speed section's headline figures


def throughput_lines(retrieval: str, ranker: str) -> list[str]:
    """Training throughput gathered from retrieval_bench's and ranker_bench's markdown: the
    two-tower pairs/s row, then each of the ranker bench's rows; none if neither table is there."""
    throughput = []
    for header, rows in md_tables(retrieval):
        if header[:2] == ["figure", "measured"]:
            for row in rows:
                if "pairs/s" in row[0]:
                    throughput.append(("two-tower (retrieval)", "pairs/s", row[1], row[2], "retrieval_bench"))
    for header, rows in md_tables(ranker):
        if header[:2] == ["model", "unit"]:
            for row in rows:
                throughput.append((row[0], row[1], row[2], row[3], "ranker_bench"))
    if not throughput:
        return []
    lines = ["**Training throughput** (each measured in its part's own process; see the parts below)", "",
             "| model | unit | measured | baseline | part |", "|---|---|---:|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in throughput]
    lines.append("")
    return lines


def serving_lines(retrieval: str, serving: str) -> list[str]:
    """`recommend` latency (serving_bench's markdown) beside the matmul floor and the retrieval
    export of the nearest catalogue size at the same batch (retrieval_bench's); none unless both
    tables are there."""
    floors = {}
    for header, rows in md_tables(retrieval):
        if "floor p50 ms" in header and "exported p50 ms" in header:
            h = {name: i for i, name in enumerate(header)}
            for row in rows:
                floors[(number(row[0]), row[1])] = {k: number(row[h[k]]) for k in (
                    "floor p50 ms", "floor p99 ms", "exported p50 ms", "exported p99 ms")}
    serving_rows = []
    for header, rows in md_tables(serving):
        if "recommend p50 ms" in header:
            h = {name: i for i, name in enumerate(header)}
            serving_rows = [(number(r[0]), r[h["batch"]], number(r[h["recommend p50 ms"]]),
                             number(r[h["recommend p99 ms"]]), r[h["target"]] if "target" in h else "") for r in rows]
    if not (floors and serving_rows):
        return []
    lines = ["**Serving latency against the matmul floor** (p50 / p99 ms; the floor is a bare `matmul` + "
             "`top_k(100)` over random vectors of the nearest catalogue size, timed by retrieval_bench in "
             "another process than serving_bench's `recommend`: compare orders of magnitude, not digits)", "",
             "| recommend catalogue | batch | recommend | floor items | floor | retrieval export | "
             "retrieval export / floor (p50) | recommend / floor (p50) | target |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for items, batch, p50, p99, target in serving_rows:
        same = [k for k in floors if k[1] == batch]
        if not same or items is None:
            continue
        key = min(same, key=lambda k: abs((k[0] or 0) - items))
        f = floors[key]
        ratio = f"{p50 / f['floor p50 ms']:.1f}" if p50 and f["floor p50 ms"] else "-"
        export_ratio = (f"{f['exported p50 ms'] / f['floor p50 ms']:.2f}"
                        if f["exported p50 ms"] and f["floor p50 ms"] else "-")
        lines.append(f"| {items:,.0f} | {batch} | {p50:.2f} / {p99:.2f} | {key[0]:,.0f} | "
                     f"{f['floor p50 ms']:.2f} / {f['floor p99 ms']:.2f} | "
                     f"{f['exported p50 ms']:.2f} / {f['exported p99 ms']:.2f} | {export_ratio} | {ratio} | {target} |")
    lines.append("")
    return lines


def speed_summary(records: dict[str, dict]) -> list[str]:
    """Headline speed figures gathered from the parts' tables (best effort: a table that is not
    there is left out). `records`: part name -> its record (`markdown`)."""
    retrieval = records.get("speed-retrieval", {}).get("markdown", "")
    ranker = records.get("speed-ranker", {}).get("markdown", "")
    serving = records.get("speed-serving", {}).get("markdown", "")
    return throughput_lines(retrieval, ranker) + serving_lines(retrieval, serving)


# --------------------------------------------------------------------------------------------
# Sections and the page


def render_section(name: str, records: list[dict], meta: dict) -> str:
    """A section from its parts' records (name, command, status, date, commit, wall_s, load,
    markdown, error, tail): its marker with the JSON head, a table of the parts, the speed
    summary, then each part's error and markdown (headings demoted to level 3)."""
    commits = list(dict.fromkeys(r.get("commit") or meta["commit"] for r in records))
    head = {"date": meta["date"], "commit": ", ".join(commits) or meta["commit"],
            "status": "failed" if any(r["status"] == "failed" for r in records)
            else "missing" if any(r["status"] == "missing" for r in records) else "ok",
            "commands": [r["command"] for r in records]}
    lines = [f"<!-- section:{name} {json.dumps(head)} -->", f"## {TITLES[name]}", "",
             f"What it measures: {WHAT[name]}.", "",
             f"- run: {meta['date']} by `{meta['command']}`; commit at the start of each part below",
             f"- machine: {meta['machine']}", ""]
    lines += ["| part | exact command | status | started | commit | wall | load average (1/5/15 min) start / end |",
              "|---|---|---|---|---|---:|---|"]
    for r in records:
        lines.append(f"| {r['name']} | `{r['command']}` | {r['status']} | {r['date']} | {r.get('commit', '-')} | "
                     f"{r['wall_s']:.0f} s | {r['load_start']} / {r['load_end']} |")
    lines.append("")
    if name == "speed":
        lines += speed_summary({r["name"]: r for r in records})
    for r in records:
        if r["status"] != "ok":
            lines += [f"**{r['name']}: {r['status'].upper()}**: {r['error']}", ""]
            if r.get("tail"):
                lines += ["```", r["tail"].replace("```", "` ` `"), "```", ""]
        if r.get("markdown", "").strip():
            lines += [demote(r["markdown"].strip()), ""]
    lines.append(f"<!-- /section:{name} -->")
    return "\n".join(lines)


def placeholder(name: str) -> str:
    """The section of a benchmark never run: its title, what it measures, how to fill it."""
    head = {"date": None, "commit": None, "status": "not run", "commands": []}
    return "\n".join([f"<!-- section:{name} {json.dumps(head)} -->", f"## {TITLES[name]}", "",
                      f"What it measures: {WHAT[name]}.", "",
                      f"Not run yet: `make bench ARGS=\"--parts {name}\"` fills this section and leaves the others "
                      "as they are.", "", f"<!-- /section:{name} -->"])


def read_sections(path: Path) -> dict[str, str]:
    """The sections of an existing bench/RESULTS.md, verbatim (markers included); {} without
    the file."""
    if not path.is_file():
        return {}
    text = path.read_text()
    out = {}
    for m in BEGIN.finditer(text):
        name = m.group(1)
        end = text.find(f"<!-- /section:{name} -->", m.start())
        if end >= 0:
            out[name] = text[m.start():end + len(f"<!-- /section:{name} -->")]
    return out


def section_head(text: str) -> dict:
    """The JSON head of a section's marker; {} when there is none or it does not parse."""
    m = BEGIN.search(text)
    try:
        return json.loads(m.group(2)) if m else {}
    except json.JSONDecodeError:
        return {}


def render(sections: dict[str, str], meta: dict) -> str:
    """The page: its title and caveats, the overview (a row per section from its head), then
    every section of SECTIONS (each in `sections`) in that order. `meta`: date, commit, machine."""
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`bench/make_benchmarks.py`); last written " f"{meta['date']} at commit "
        f"{meta['commit']} on {meta['machine']}.",
        "",
        "Every figure is of this machine, and the machine is shared: each part records the load average "
        "(1/5/15 min) around it; compare timings only between runs with a similar, low load. Each section "
        "carries its own date, commit and the exact command of every table, and is rewritten only when "
        "its part runs again (`make bench ARGS=\"--parts scale\"` replaces the scale section alone). "
        "Flags, definitions and caveats: `bench/README.md`.",
        "",
        "| section | what it measures | last run | commit | status | reproduce |",
        "|---|---|---|---|---|---|",
    ]
    for name in SECTIONS:
        head = section_head(sections[name])
        commands = "<br>".join(f"`{c}`" for c in head.get("commands") or []) or "-"
        lines.append(f"| [{name}](#{anchor(TITLES[name])}) | {SHORT[name]} | {head.get('date') or '-'} | "
                     f"{head.get('commit') or '-'} | {head.get('status', '?')} | {commands} |")
    lines.append("")
    for name in SECTIONS:
        lines += [sections[name], ""]
    return "\n".join(lines)


def anchor(title: str) -> str:
    """The markdown anchor of a heading (GitHub's: lower case, punctuation dropped, spaces to -)."""
    return re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")
