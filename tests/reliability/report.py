"""Write ``docs/reliability.md`` from a results file of the suite: ``python -m tests.reliability.report``.

``make reliability`` runs the full suite (which writes ``tests/reliability/results/full.json``) and then
this. Options: ``--results FILE`` (default: the full run's), ``--out FILE`` (default: docs/reliability.md).
Everything the page says about a test comes from the results file: the module's and the test's
docstrings (what was tried), its figures, outcome and duration, and the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .results import FULL_RESULTS, ROOT

DOC = ROOT / "docs" / "reliability.md"
INTRO = """\
`tests/reliability/` is the project's own adversarial suite: the engine against the local S2 server
(`resumable_stream.testing`) in a process of its own, over real HTTP, with its fault injection driven
through `/_faults`, a proxy that resets connections at random points, real processes killed with
SIGKILL, real sockets dropped mid-event, gunicorn, Node.js running the official TypeScript SDK, and
generated bad input. Every test compares data exactly: it reads each stream's records with a parser of
its own (not the engine's), checks their layout, and compares every reader's events with them (each
chunk once, in order, with the log's cursor, nothing missing); it records its figures, and this page is
made from them.

`pytest -m reliability` runs the suite alone. `make test` runs it bounded (the same scenarios with
smaller counts: `RELIABILITY_SIZE=bounded`, the default); `make reliability` runs it in full
(`RELIABILITY_SIZE=full`) and regenerates this page (`python -m tests.reliability.report`) from
`tests/reliability/results/full.json`. Do not edit this page by hand.
"""
LEAD = """\
#### What the creator may be shown that the log never takes

The creator's own iterator is handed chunks as they are produced, before the log has taken them, so a
chunk can be shown to the creator and then never reach the log, if writing fails for good. The engine
bounds that window: the creator is handed unwritten chunks only while the oldest record the log has not
taken has waited less than `LIVE_LEAD` ({live_lead:g} s); past that it gets only written chunks, and once
writing has failed it gets none (it ends with the error). No other reader ever sees such a chunk. In
this run's outages and kills, the creators were shown {beyond:,} such chunks in all, produced within at
most {longest:g} s of each other.
"""


def _value(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) or "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _label(name: str) -> str:
    return name.replace("_", " ")


def _doc(text: str) -> tuple[str, str]:
    """A docstring's first line and the rest, unindented."""
    lines = [line.strip() for line in text.strip().splitlines()]
    first = lines[0] if lines else ""
    rest = "\n".join(lines[1:]).strip()
    return first, rest


def _table(rows: list[dict[str, Any]]) -> list[str]:
    keys = list(rows[0])
    out = ["| " + " | ".join(_label(k) for k in keys) + " |", "|" + " --- |" * len(keys)]
    out += ["| " + " | ".join(_value(row.get(k)) for k in keys) + " |" for row in rows]
    return out


OUTCOMES = {"passed": "passed", "xfailed": "**known bug** (strict xfail)", "failed": "**FAILED**",
            "xpassed": "**passes now** (remove its xfail mark)", "skipped": "skipped"}


def _group(base: str, members: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """One test, with its parameters side by side."""
    summary, detail = _doc(members[0][1].get("doc", ""))
    lines = [f"#### `{base}`", ""]
    if summary:
        lines += [summary + (" " + " ".join(detail.split()) if detail else ""), ""]
    done = [(f"`{param}` " if param else "") + f"{OUTCOMES.get(e.get('outcome', ''), '?')} in {e.get('seconds', 0):g} s"
            for param, e in members]
    lines += ["Outcome: " + "; ".join(done) + ".", ""]
    lines += [f"Failure of `{param}`: `{e['failure']}`" for param, e in members if e.get("failure")]
    plain: dict[str, dict[str, Any]] = {}
    for param, entry in members:
        for key, value in entry["figures"].items():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                lines += [f"{_label(key).capitalize()}{f' ({param})' if param else ''}:", "", *_table(value), ""]
            else:
                plain.setdefault(key, {})[param] = value
    if plain:
        params = [param for param, entry in members if entry["figures"]]
        lines += ["| figure | " + " | ".join(f"`{p}`" if p else "value" for p in params) + " |",
                  "| --- |" + " --- |" * len(params)]
        for key, values in plain.items():
            lines.append(f"| {_label(key)} | " + " | ".join(_value(values.get(p, "")) for p in params) + " |")
        lines.append("")
    return lines


def render(results: dict[str, Any]) -> str:
    tests: dict[str, dict[str, Any]] = results["tests"]
    machine = results["machine"]
    outcomes: dict[str, int] = {}
    for entry in tests.values():
        outcomes[entry.get("outcome", "unknown")] = outcomes.get(entry.get("outcome", "unknown"), 0) + 1
    checked = sum(int(t["figures"].get("chunk_deliveries_checked", 0)) for t in tests.values())
    failed = [key for key, entry in tests.items() if entry.get("outcome") not in ("passed", "xfailed")]
    seconds = sum(float(t.get("seconds", 0)) for t in tests.values())
    lines = ["# Reliability", "",
             "<!-- Generated by `python -m tests.reliability.report` from the results of `make reliability`. -->", "",
             INTRO, f"## The last {results['size']} run", "",
             f"- **When**: {results['started']} to {results.get('finished', '?')} (UTC), commit `{machine['commit']}`;"
             f" {seconds / 60:.1f} minutes of tests.",
             f"- **Machine**: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
             f"{machine['os']}, Python {machine['python']}; load average {machine['load_at_start'][0]:g} at the "
             f"start, {machine.get('load_at_end', ['?'])[0]} at the end (shared with other developers' work).",
             f"- **Outcome**: {', '.join(f'{n} {o}' for o, n in sorted(outcomes.items()))}"
             + (" (xfailed: a bug the suite found, shown by a strict xfail test, below)" if "xfailed" in outcomes
                else "") + ".",
             f"- **Exact data**: {checked:,} chunk deliveries to readers compared with the log, one by one"
             + (": nothing lost, nothing doubled, nothing out of order, in every test that passed."
                if not failed else f"; tests that did not pass: {', '.join(failed)}."),
             ""]
    bugs = [(key, entry) for key, entry in tests.items() if entry.get("outcome") in ("xfailed", "xpassed")]
    if bugs:
        lines += ["## Bugs the suite found", "",
                  "Each is shown by a test marked `xfail(strict=True)`: it fails today, and passes (then fails the "
                  "suite, so that its mark is removed) once the bug is fixed.", "", "| test | bug |", "| --- | --- |"]
        for key, entry in bugs:
            reason = entry.get("xfail_reason", "").removeprefix("bug: ")
            fixed = " (now passing: remove the mark)" if entry["outcome"] == "xpassed" else ""
            lines.append(f"| `{key}` | {reason}{fixed} |")
        lines.append("")
    lines += ["## What was tried", ""]
    leads = [t["figures"] for t in tests.values() if "creator_chunks_beyond_the_log" in t["figures"]]
    for module, info in results["modules"].items():
        title, rest = _doc(info["doc"])
        lines += [f"### {title}", "", f"`tests/reliability/{module}.py`. {rest}", ""]
        groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for key, entry in tests.items():
            if entry.get("module") == module:
                name = key.split("::", 1)[1]
                base, _, param = name.partition("[")
                groups.setdefault(base, []).append((param.rstrip("]"), entry))
        for base, members in groups.items():
            lines += _group(base, members)
        if leads and module == "test_outage":
            lines += [LEAD.format(live_lead=max(float(f.get("live_lead_seconds", 5.0)) for f in leads),
                                  beyond=sum(int(f["creator_chunks_beyond_the_log"]) for f in leads),
                                  longest=max(float(f.get("longest_lead_seconds", 0)) for f in leads))]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.report", description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=FULL_RESULTS)
    parser.add_argument("--out", type=Path, default=DOC)
    args = parser.parse_args(argv)
    if not args.results.is_file():
        print(f"no results at {args.results}: run `make reliability` first", file=sys.stderr)
        return 1
    args.out.write_text(render(json.loads(args.results.read_text())))
    print(f"wrote {args.out} from {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
