"""One run as a self-contained HTML page, derived from its events alone. Pure.

``render_page`` takes what ``router.core.timeline.render`` takes and words events as it does
(its describers). It draws a header of the run's totals; its spend as it accumulated (a step
chart and a table); for a graph run, its nodes and the path its steps took; and its timeline,
one row per model turn (a graph run: per step) in log order, each tool call (graph: each
node) of the row in a lane of its own, with retries and the waits for a person marked.

The page holds its CSS, SVG and a few lines of script, and loads nothing. Its key numbers
carry ids and data attributes for tools and tests: ``#total-cost[data-nusd]``,
``#total-tokens[data-in][data-out]``, ``#steps``, ``#waits`` and ``#retries`` (each with
``data-value``), rows with ``data-seq`` and ``data-step``, lanes with ``data-outcome`` and
``data-tries``, spend rows with the running totals after them.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence

import msgspec

from .events import KINDS, Event, GraphStarted, ModelResponded, StepRouted
from .fsm import RunState
from .graph_fsm import GraphState
from .run_layout import (
    BAD,
    WAITING,
    Lane,
    Point,
    Row,
    Visit,
    Wait,
    lanes_of,
    rows_of,
    spend_of,
    visits_of,
    waits_of,
)
from .timeline import describe

__all__ = ["render_page"]


def render_page(run_id: str, events: Sequence[Event], state: RunState | GraphState) -> str:
    """The run's page, one HTML document: its header, spend, graph (a graph run) and timeline.

    events: the run's log in seq order; state: their fold (``fsm.fold`` or
    ``graph_fsm.fold_graph``), whose totals the header shows. Every text from the log is
    escaped, so a hostile argument or result shows as text and never runs.
    """
    graph = isinstance(state, GraphState)
    points, waits, rows = spend_of(events), waits_of(events), rows_of(events, graph)
    lanes = [lanes_of(row, graph) for row in rows]
    retries = sum(lane.retries for row_lanes in lanes for lane in row_lanes)
    parts = [
        f"<!doctype html><html lang=en><meta charset=utf-8><title>run {_e(run_id)}</title>",
        f"<style>{_CSS}</style><body>",
        _header(run_id, state, len(waits), retries),
        _spend_html(points),
    ]
    if graph and events and isinstance(events[0], GraphStarted):
        parts.append(_graph_html(events, events[0]))
    parts.append("<section id=timeline><h2>timeline</h2>")
    parts.extend(
        _row_html(row, row_lanes, waits, points) for row, row_lanes in zip(rows, lanes, strict=True)
    )
    parts.append(f"</section><script>{_SCRIPT}</script></body></html>")
    return "".join(parts)


# --- HTML ---------------------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value))


def _usd(nusd: int) -> str:
    return f"${nusd / 1e9:.6f}"


def _fact(key: str, label: str, text: str, value: object = None, **data: object) -> str:
    attrs = "".join(f' data-{k}="{_e(v)}"' for k, v in data.items())
    if value is not None:
        attrs += f' data-value="{_e(value)}"'
    return f"<dt>{_e(label)}</dt><dd id={key}{attrs}>{text}</dd>"


def _header(run_id: str, state: RunState | GraphState, waits: int, retries: int) -> str:
    u, nusd = state.usage, state.cost_nusd
    facts = [
        _fact("phase", "status", _e(state.phase), state.phase),
        _fact("steps", "steps", _e(state.steps), state.steps),
    ]
    if isinstance(state, RunState):
        facts.append(_fact("tool-calls", "tool calls", _e(state.tool_calls), state.tool_calls))
        facts.append(_fact("rejected", "rejected or denied", _e(state.rejected), state.rejected))
    tokens = f"{u.total_tokens} ({u.input_tokens} in / {u.output_tokens} out)"
    sizes = {"in": u.input_tokens, "out": u.output_tokens}
    facts.append(_fact("total-tokens", "tokens", tokens, u.total_tokens, **sizes))
    facts.append(_fact("total-cost", "cost", _usd(nusd), nusd / 1e9, nusd=nusd))
    facts.append(_fact("waits", "waits for a person", _e(waits), waits))
    facts.append(_fact("retries", "retries", _e(retries), retries))
    facts.append(_fact("principal", "principal", _e(state.principal.id)))
    if isinstance(state, RunState):
        facts.append(_fact("model", "model", _e(state.model)))
        output = state.output or state.held_output
        label = "answer" if state.output else "answer held for review"
    else:
        facts.append(_fact("graph", "graph", _e(state.graph)))
        output, label = msgspec.json.encode(state.state).decode(), "state"
    if state.reason:
        facts.append(_fact("reason", "reason", _e(state.reason)))
    if output:
        facts.append(_fact("output", label, f"<pre>{_e(output)}</pre>"))
    return (
        f"<header><h1>run <span id=run-id>{_e(run_id)}</span></h1>"
        f"<dl class=facts>{''.join(facts)}</dl></header>"
    )


def _spend_html(points: list[Point]) -> str:
    if not points:
        return "<section id=spend><h2>spend</h2><p>Nothing spent: no model turn yet.</p></section>"
    rows = "".join(
        f"<tr data-seq={p.seq} data-tokens={p.tokens_in + p.tokens_out} data-nusd={p.nusd} "
        f"data-total-tokens={p.total_tokens} data-total-nusd={p.total_nusd}>"
        f"<td><a href=#e{p.seq}>{p.seq}</a><td class=what>{_e(p.what)}<td>{p.tokens_in}"
        f"<td>{p.tokens_out}<td>{_usd(p.nusd)}<td>{p.total_tokens}"
        f"<td>{_usd(p.total_nusd)}</tr>"
        for p in points
    )
    head = "".join(
        f"<th>{h}"
        for h in ("seq", "what", "tokens in", "tokens out", "cost", "total tokens", "total cost")
    )
    return (
        f"<section id=spend><h2>spend</h2>{_chart(points)}"
        f"<table id=spend-table><tr>{head}</tr>{rows}</table></section>"
    )


def _chart(points: list[Point]) -> str:
    """The running totals as a step chart: cost on the left axis, tokens on the right."""
    width, height, left, right, top, bottom = 720, 200, 90, 90, 24, 30
    most_nusd = points[-1].total_nusd or 1
    most_tokens = points[-1].total_tokens or 1

    def x(i: int) -> float:
        return left + (width - left - right) * i / len(points)

    def y(value: int, most: int) -> float:
        return top + (height - top - bottom) * (1 - value / most)

    def path(values: list[int], most: int) -> str:
        steps = "".join(f"H{x(i):.1f}V{y(v, most):.1f}" for i, v in enumerate(values, 1))
        return f"M{x(0):.1f},{y(0, most):.1f}{steps}"

    tokens = [p.total_tokens for p in points]
    every = -(-len(points) // 20)  # at most about 20 seq labels, so that they do not overlap
    dots = "".join(
        f'<circle class=dot cx="{x(i):.1f}" cy="{y(p.total_nusd, most_nusd):.1f}" r=4 '
        f"data-goto={p.seq}><title>{_e(f'seq {p.seq}, {p.what}: total {t} tokens, ')}"
        f"{_usd(p.total_nusd)}</title></circle>"
        + (
            f'<text x="{x(i):.1f}" y="{height - 12}" text-anchor=middle>{p.seq}</text>'
            if i % every == 0 or i == len(points)
            else ""
        )
        for i, (p, t) in enumerate(zip(points, tokens, strict=True), 1)
    )
    base = y(0, 1)
    return (
        f"<svg id=spend-chart width={width} height={height} role=img "
        f'viewBox="0 0 {width} {height}"><title>running totals of cost and tokens</title>'
        f'<line class=axis x1={left} y1="{base:.1f}" x2={width - right} y2="{base:.1f}"/>'
        f"<text class=cost x={left - 6} y={top + 4} text-anchor=end>{_usd(most_nusd)}</text>"
        f'<text class=cost x={left - 6} y="{base:.1f}" text-anchor=end>$0</text>'
        f"<text class=tokens x={width - right + 6} y={top + 4}>{most_tokens} tokens</text>"
        f'<text class=tokens x={width - right + 6} y="{base:.1f}">0</text>'
        f"<text x={left} y=12>total cost (line) and tokens (area) after each seq</text>"
        f'<path class=tokens d="{path(tokens, most_tokens)}V{base:.1f}Z"/>'
        f'<path class=cost d="{path([p.total_nusd for p in points], most_nusd)}"/>'
        f"{dots}</svg>"
    )


def _graph_html(events: Sequence[Event], started: GraphStarted) -> str:
    visits = visits_of(events, started)
    seen = Counter(v.node for step in visits.values() for v in step if v.outcome != "pending")
    nodes = sorted({part[5:] for part in started.parts if part.startswith("node:")} | set(seen))
    items = "".join(
        f'<li class="node{" taken" if seen[n] else ""}" data-node="{_e(n)}" '
        f"data-visits={seen[n]}>{_e(n)}{f' ×{seen[n]}' if seen[n] else ''}</li>"
        for n in nodes
    )
    ended = any(isinstance(e, StepRouted) and not e.next for e in events)
    return (
        f"<section id=graph><h2>graph {_e(started.graph)}</h2>"
        "<p>The log records the nodes each step ran, not the graph's edges: here are the "
        "graph's nodes (those the run visited highlighted) and the path it took, step by "
        f"step.</p><ul id=graph-nodes>{items}</ul>{_path_svg(visits, ended)}</section>"
    )


_COLUMN, _LINE, _BOX_WIDTH, _BOX_HEIGHT, _LEFT, _TOP = 170, 36, 136, 26, 50, 28


def _path_svg(visits: dict[int, list[Visit]], ended: bool) -> str:
    """The visits as columns of boxes, one column a step, joined by the hops taken: every
    box of a step to every box of the next (one hop between the columns when they are too
    many to tell apart), from the start and to the end."""
    steps = sorted(visits)
    if not steps:
        return "<p>No step ran yet.</p>"

    def mid(row: int) -> float:
        return _TOP + row * _LINE + _BOX_HEIGHT / 2

    def x(column: int) -> int:
        return _LEFT + column * _COLUMN

    columns = [visits[s] for s in steps]
    hops = [_hop(16, mid(0), x(0), mid(r)) for r in range(len(columns[0]))]
    for c, (here, there) in enumerate(zip(columns, columns[1:], strict=False)):
        if len(here) * len(there) > 16:
            hops.append(_hop(x(c) + _BOX_WIDTH, mid(0), x(c + 1), mid(0)))
            continue
        hops.extend(
            _hop(x(c) + _BOX_WIDTH, mid(a), x(c + 1), mid(b))
            for a in range(len(here))
            for b in range(len(there))
        )
    end = x(len(columns) - 1) + _BOX_WIDTH + 24
    if ended:
        hops.extend(_hop(end - 24, mid(r), end - 6, mid(0)) for r in range(len(columns[-1])))
        hops.append(f'<circle class=end cx={end} cy="{mid(0):.1f}" r=6><title>end</title></circle>')
    boxes = [
        f"<text x={x(c)} y=16>step {step}</text>"
        + "".join(_box(v, step, x(c), _TOP + r * _LINE) for r, v in enumerate(visits[step]))
        for c, step in enumerate(steps)
    ]
    width, height = end + 20, _TOP + max(map(len, columns)) * _LINE + 6
    return (
        f"<svg id=graph-path width={width} height={height} role=img "
        f'viewBox="0 0 {width} {height}"><title>the path the run took</title>'
        f'<circle class=start cx=10 cy="{mid(0):.1f}" r=6><title>start</title></circle>'
        f"{''.join(hops)}{''.join(boxes)}</svg>"
    )


def _hop(x1: float, y1: float, x2: float, y2: float) -> str:
    return f'<line class=hop x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}"/>'


def _box(visit: Visit, step: int, x: int, y: int) -> str:
    name = visit.node + (f"[{visit.item}]" if visit.item else "")
    shown = name if len(name) <= 18 else name[:17] + "\u2026"
    state = "ok" if visit.outcome == "ok" else "pending" if visit.outcome == "pending" else "bad"
    retried = " retried" if visit.tries > 1 else ""
    tries = f" ({visit.tries} tries)" if visit.tries > 1 else ""
    return (
        f'<g class="visit {state}{retried}" data-node="{_e(visit.node)}" data-step={step} '
        f'data-outcome="{_e(visit.outcome)}" data-tries={visit.tries}>'
        f"<title>{_e(f'{name}: {visit.outcome}, {visit.tries} attempt(s)')}</title>"
        f"<rect x={x} y={y} width={_BOX_WIDTH} height={_BOX_HEIGHT} rx=4 />"
        f"<text x={x + 6} y={y + 17}>{_e(shown + tries)}</text></g>"
    )


def _row_html(row: Row, lanes: list[Lane], waits: list[Wait], points: list[Point]) -> str:
    first, last = row.events[0][0], row.events[-1][0]
    title, headline = _row_head(row)
    total = next((p for p in reversed(points) if p.seq <= last), None)
    tokens, nusd = (total.total_tokens, total.total_nusd) if total else (0, 0)
    mine = [w for w in waits if first <= w.start <= last]
    classes = ["row", row.kind]
    classes += ["waited"] if mine else []
    classes += ["retried"] if any(lane.retries for lane in lanes) else []
    step = f" data-step={row.step}" if row.step >= 0 else ""
    parts = [
        f'<div class="{" ".join(classes)}" data-seq={first} data-last-seq={last}{step} '
        f"data-total-tokens={tokens} data-total-nusd={nusd}>",
        f"<h3>{_e(title)}</h3><pre class=headline>{_e(headline)}</pre>",
    ]
    if row.kind != "start":
        parts.append(
            f"<p class=total>running total: <span class=total-tokens>{tokens} tokens</span>, "
            f"<span class=total-cost>{_usd(nusd)}</span></p>"
        )
    parts.extend(_lane_html(lane, row.events) for lane in lanes)
    parts.extend(_wait_html(wait) for wait in mine)
    parts.append(_events_html(row.events))
    parts.append("</div>")
    return "".join(parts)


def _row_head(row: Row) -> tuple[str, str]:
    """The row's title, and its headline: the turn's model call, the step's routing."""
    if row.kind == "start":
        title, event = "start", row.events[0][1]
    elif row.kind == "turn":
        turn = next((e for _, e in row.events if isinstance(e, ModelResponded)), None)
        title = f"step {row.step}" if turn else "a model call without an answer"
        event = turn or row.events[-1][1]
    else:
        routed = next((e for _, e in row.events if isinstance(e, StepRouted)), None)
        title = f"step {row.step}" + ("" if routed else " (not routed yet)")
        event = routed or row.events[-1][1]
    label, text = describe(event)
    return title, _lines(f"{label}  {text}")


def _lines(text: str) -> str:
    """The describer's lines without the timeline's indentation."""
    return "\n".join(line.strip() for line in text.splitlines())


def _lane_html(lane: Lane, events: list[tuple[int, Event]]) -> str:
    count, outcome, tries = len(events), lane.outcome, lane.tries
    state = "bad" if outcome in BAD else "waiting" if outcome in WAITING else "open"
    state = "ok" if outcome == "ok" else state

    def at(index: int) -> float:  # -1, a graph step's start, is the track's left end
        return 100 * (index + 1) / (count + 1)

    bars = "".join(
        f'<span class="seg {kind}" style="left:{at(a):.2f}%;width:{at(b) - at(a):.2f}%"></span>'
        for a, b, kind in lane.spans
    )
    marks = "".join(
        f'<span class=mark style="left:{at(index):.2f}%" data-goto={events[index][0]} '
        f'title="{_e(_lines("  ".join(describe(event))))}"></span>'
        for index, event in lane.points
    )
    ran = (
        f"{tries} attempts ({tries - 1} {'retry' if tries == 2 else 'retries'})"
        if tries > 1
        else "1 attempt"
        if tries
        else "not run"
    )
    return (
        f'<div class="lane {state}{" retried" if tries > 1 else ""}" data-key="{_e(lane.key)}" '
        f'data-name="{_e(lane.name)}" data-outcome="{_e(outcome)}" data-tries={tries}>'
        f"<div class=who><b>{_e(lane.name)}</b> <code>{_e(lane.key)}</code> "
        f"<span class=outcome>{_e(outcome)}</span> <span class=tries>{ran}</span></div>"
        f"<div class=track>{bars}{marks}</div></div>"
    )


def _wait_html(wait: Wait) -> str:
    label, text = describe(wait.request)
    what = "waited for a reviewer" if wait.kind == "review" else "waited for a decision"
    if wait.decision is None:
        outcome, what = "still waiting", what.replace("waited", "waiting")
    else:
        decided, how = describe(wait.decision)
        took = wait.decision.at - wait.request.at
        # The clocks of the run and of the reviewer's tool may differ: no negative waits.
        outcome = f"{decided}: {how}" + (f" after {_duration(took)}" if took >= 0 else "")
    return (
        f'<div class="wait{" open" if wait.decision is None else ""}" data-wait={wait.kind} '
        f"data-from={wait.start} data-to={wait.end}><b>{what}</b> "
        f"{_e(label)}: {_e(_lines(text))} \u2192 {_e(_lines(outcome))}</div>"
    )


def _duration(us: int) -> str:
    seconds = us / 1e6
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.3f} s"


def _events_html(events: list[tuple[int, Event]]) -> str:
    items, loud = [], False
    for seq, event in events:
        label, text = describe(event)
        loud = loud or label.isupper()
        kind = KINDS.get(type(event), type(event).__name__)
        items.append(
            f"<li id=e{seq} data-seq={seq} data-kind={_e(kind)}"
            f"{' class=loud' if label.isupper() else ''}><span class=seq>{seq}</span>"
            f"<span class=label>{_e(label)}</span><span class=text>{_e(_lines(text))}</span></li>"
        )
    opened = " open" if loud else ""  # what went wrong or waited is shown unasked
    return (
        f"<details{opened}><summary>{len(events)} event{'s' if len(events) > 1 else ''}</summary>"
        f"<ol class=events>{''.join(items)}</ol></details>"
    )


_CSS = (
    "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:1100px;color:#222}"
    "h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}h3{font-size:1em;margin:0}"
    "dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px}"
    "dt{color:#666}dd{margin:0}"
    "pre{white-space:pre-wrap;margin:0;font:12px/1.4 ui-monospace,monospace}"
    ".row{border:1px solid #ddd;border-radius:6px;padding:6px 10px;margin:8px 0}"
    ".row.waited{border-left:6px solid #d90}.row.retried{border-right:6px solid #c60}"
    ".total{color:#555;font-size:12px;margin:2px 0}"
    ".lane{display:grid;grid-template-columns:330px 1fr;gap:8px;align-items:center;margin:3px 0}"
    ".who{font-size:12px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}"
    ".outcome{padding:0 4px;border-radius:3px;background:#eee}"
    ".ok .outcome{background:#dff0e4}.bad .outcome{background:#f8d7d7}"
    ".waiting .outcome{background:#ffedb8}.lane.retried .tries{color:#c60;font-weight:bold}"
    ".track{position:relative;height:16px;background:#f5f5f5;border-radius:3px}"
    ".seg{position:absolute}.seg.gap{top:7px;height:2px;background:#bbb}"
    ".seg.run{top:3px;height:10px;background:#4a7;border-radius:2px}"
    ".bad .seg.run{background:#c44}"
    ".seg.wait{top:1px;height:14px;background:repeating-linear-gradient("
    "45deg,#f5b800 0 4px,#fff3cc 4px 8px)}"
    ".mark{position:absolute;top:0;width:3px;height:16px;margin-left:-1px;background:#333;"
    "cursor:pointer}"
    "div.wait{background:#fff7e0;border:1px dashed #d90;border-radius:4px;padding:3px 6px;"
    "margin:4px 0;font-size:13px}div.wait.open{background:#ffe7a3}"
    "ol.events{list-style:none;padding:0;margin:4px 0;font:12px/1.4 ui-monospace,monospace}"
    "ol.events li{display:grid;grid-template-columns:3em 9em 1fr;gap:6px}"
    ".text{white-space:pre-wrap}li.loud .label{color:#b00;font-weight:bold}"
    "li.hit{background:#ffef9e}"
    "table{border-collapse:collapse;margin:8px 0}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right;font-size:12px}"
    "td.what{text-align:left;max-width:30em;overflow:hidden;text-overflow:ellipsis;"
    "white-space:nowrap}"
    "svg text{font:11px system-ui,sans-serif}.axis{stroke:#999}"
    "path.cost{fill:none;stroke:#c60;stroke-width:2}"
    "path.tokens{fill:#dce6f7;stroke:#36c;stroke-width:1}"
    "text.cost{fill:#c60}text.tokens{fill:#36c}.dot{fill:#c60;cursor:pointer}"
    "#graph-nodes{list-style:none;padding:0}"
    ".node{display:inline-block;margin:2px;padding:1px 8px;border:1px solid #bbb;"
    "border-radius:10px;color:#888}"
    ".node.taken{border-color:#36c;background:#e6eefa;color:#036;font-weight:bold}"
    ".visit rect{fill:#dff0e4;stroke:#4a7;stroke-width:2}"
    ".visit.bad rect{fill:#f8d7d7;stroke:#c44}.visit.retried rect{stroke:#c60}"
    ".visit.pending rect{fill:#fff;stroke:#999;stroke-dasharray:4 3}"
    ".hop{stroke:#36c;stroke-width:2}.start,.end{fill:#36c}"
)

# A click on a lane's mark or a chart's dot shows the event it stands for.
_SCRIPT = (
    'document.addEventListener("click",function(ev){'
    'var t=ev.target.closest&&ev.target.closest("[data-goto]");if(!t)return;'
    'var li=document.getElementById("e"+t.getAttribute("data-goto"));if(!li)return;'
    'var d=li.closest("details");if(d)d.open=true;'
    'var hit=document.querySelector("li.hit");if(hit)hit.classList.remove("hit");'
    'li.classList.add("hit");li.scrollIntoView({block:"center"});});'
)
