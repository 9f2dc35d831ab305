"""A run's page: drawn from its log alone, its text escaped, its numbers the run's own, and
shown by a real headless Chromium (with the HTML report) without a console error."""

from __future__ import annotations

from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import anyio
import pytest
from browser import BrowserTimeout, Chromium

from router import Engine as AgentEngine
from router import (
    GraphEngine,
    ManualClock,
    MemoryStore,
    Price,
    PriceTable,
    Principal,
    ProposedCall,
    Retry,
    ReviewRules,
    Runtime,
    ScriptedModel,
    SqliteStore,
    Tools,
    Usage,
    resolve_call,
    review_graph_run,
    review_run,
    tool,
)
from router.core.events import (
    ContextSummarized,
    Event,
    ModelResponded,
    NodeFailed,
    NodeFinished,
    StepRouted,
    ToolFailed,
    ToolStarted,
    ToolSucceeded,
)
from router.core.fsm import RunState
from router.core.graph_fsm import GraphState
from router.core.protocols import ModelTurn, Store
from router.core.report import Report
from router.core.run_page import render_page
from router.core.stored import decode_run
from router.graph import END, Graph
from router.models.scripted import call, say
from router.run.log import fold_run

USER = Principal(id="u")
HOSTILE = "<script>console.error('xss')</script><img src=x onerror=\"console.error('xss')\">"
PRICES = PriceTable({"scripted": Price(1.0, 2.0)})  # 1 000 nano-USD an input token, 2 000 out

Run = tuple[str, list[Event], RunState | GraphState]


class Crash(BaseException):
    """Stands for the process dying: nothing in router catches it."""


async def _load(store: Store, run_id: str) -> Run:
    events = decode_run(await store.read(run_id))
    return run_id, events, fold_run(events)


async def _parallel_retried_and_reviewed(path: Path) -> Run:
    """Four calls in one turn (one with hostile arguments and result, one retried until it
    works, one that fails on every attempt), then a payment a reviewer approves."""
    tries: list[int] = []

    @tool(idempotent=True)
    async def lookup(q: str) -> str:
        return f"found {q}"

    @tool(retry=Retry(attempts=3, base_delay_s=0), idempotent=True)
    async def flaky() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise ConnectionError("try again")
        return "ok"

    @tool(retry=Retry(attempts=2, base_delay_s=0), idempotent=True)
    async def broken() -> str:
        raise ValueError(HOSTILE)

    @tool
    async def pay(cents: int) -> str:
        return f"paid {cents}"

    turn = ModelTurn(
        tool_calls=(
            ProposedCall("", "lookup", f'{{"q": "{HOSTILE.replace(chr(34), chr(39))}"}}'),
            ProposedCall("", "lookup", '{"q": "b"}'),
            ProposedCall("", "flaky", "{}"),
            ProposedCall("", "broken", "{}"),
        ),
        usage=Usage(input_tokens=100, output_tokens=20),
    )
    script = [
        turn,
        call("pay", '{"cents": 500}', usage=Usage(input_tokens=150, output_tokens=7)),
        say(f"done {HOSTILE}", usage=Usage(input_tokens=210, output_tokens=33)),
    ]
    async with SqliteStore.open(path) as store:

        def engine() -> AgentEngine:
            return AgentEngine(
                Runtime(store, clock=ManualClock(0, 10), owner="t"),
                ScriptedModel(script),
                Tools([lookup, flaky, broken, pay]),
                review=ReviewRules(before_tools=frozenset({"pay"})),
                prices=PRICES,
            )

        await engine().start("go", principal=USER, run_id="agent <1>")
        await review_run(store, "agent <1>", "approve", by="ann <reviewer>")
        await engine().resume("agent <1>")
        return await _load(store, "agent <1>")


async def _interrupted() -> Run:
    """A payment cut short by a crash, retried on a reviewer's word."""
    paid: list[int] = []

    @tool
    async def pay(cents: int) -> str:
        paid.append(cents)
        if len(paid) == 1:
            raise Crash
        return "paid"

    store = MemoryStore()
    script = [call("pay", '{"cents": 5}', usage=Usage(input_tokens=40, output_tokens=4)), say("ok")]

    def engine() -> AgentEngine:
        return AgentEngine(
            Runtime(store, clock=ManualClock(0, 10), owner="t"),
            ScriptedModel(script),
            Tools([pay]),
            prices=PRICES,
        )

    with pytest.raises(Crash):
        await engine().start("go", principal=USER, run_id="r")
    await store.release_lease("r", "t")
    await engine().resume("r")  # interrupted: waits for a decision
    await resolve_call(store, "r", "call_1_0", "retry", by="ann")
    await engine().resume("r")
    return await _load(store, "r")


async def _graph() -> Run:
    """classify, a route to a fan-out of two nodes (one retried), then a node a reviewer
    approves; one node is never visited."""
    tries: list[int] = []

    async def classify(state: dict[str, Any]) -> dict[str, Any]:
        return {"kind": "urgent"}

    async def flaky(state: dict[str, Any]) -> dict[str, Any]:
        tries.append(1)
        if len(tries) < 2:
            raise ConnectionError("down")
        return {"notes": ["flaky"]}

    async def note(state: dict[str, Any]) -> dict[str, Any]:
        return {"notes": [HOSTILE]}

    g = Graph("triage <g>")
    for name, fn in [("classify", classify), ("fan", note), ("other", note), ("pay", note)]:
        g.add_node(name, fn)
    g.add_node("flaky", flaky, retry=Retry(attempts=3, base_delay_s=0))
    g.add_node("unused", note)
    g.start("classify")
    g.route("classify", lambda s: "fan" if s["kind"] else "unused", targets={"fan", "unused"})
    g.fanout("fan", ["flaky", "other"], then="pay")
    g.edge("pay", END)
    g.edge("unused", END)
    store = MemoryStore()
    engine = GraphEngine(
        Runtime(store, clock=ManualClock(0, 3)), g.compile(), review_before=frozenset({"pay"})
    )
    await engine.start({"text": HOSTILE}, principal=USER, run_id="g")
    await review_graph_run(store, "g", "approve", by="ann")
    await engine.resume("g")
    return await _load(store, "g")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    path = tmp_path_factory.mktemp("runs") / "log.db"

    async def build() -> dict[str, Run]:
        return {
            "agent": await _parallel_retried_and_reviewed(path),
            "interrupted": await _interrupted(),
            "graph": await _graph(),
        }

    return anyio.run(build)


# --- reading a page -----------------------------------------------------------------------


class Elements(HTMLParser):
    """Every element's tag and attributes, in document order."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str]]] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, {k: v or "" for k, v in attrs}))

    def having(self, tag: str, css_class: str = "", **attrs: str) -> list[dict[str, str]]:
        return [
            a
            for t, a in self.found
            if t == tag
            and css_class in a.get("class", "").split() + [""]
            and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]

    def by_id(self, key: str) -> dict[str, str]:
        (found,) = [a for _, a in self.found if a.get("id") == key]
        return found


def spent(events: Sequence[Event]) -> tuple[int, int, int]:
    """Tokens in, out and cost: summed from the events, independently of the page and fold."""
    spenders = ModelResponded | ContextSummarized | ToolSucceeded | ToolFailed
    spending = [e for e in events if isinstance(e, spenders | NodeFinished | NodeFailed)]
    return (
        sum(e.usage.input_tokens for e in spending),
        sum(e.usage.output_tokens for e in spending),
        sum(e.cost_nusd for e in spending),
    )


# --- the page, as text ---------------------------------------------------------------------


def test_hostile_text_in_arguments_results_answers_and_ids_is_escaped(runs: dict[str, Run]) -> None:
    for name, (run_id, events, state) in runs.items():
        page = render_page(run_id, events, state)
        assert page.count("<script") == 1 and "<img" not in page  # the page's own script only
        if name != "interrupted":
            assert "&lt;script&gt;console.error(" in page
    run_id, events, state = runs["agent"]
    page = render_page(run_id, events, state)
    assert "<span id=run-id>agent &lt;1&gt;</span>" in page
    assert "ann &lt;reviewer&gt;" in page


def test_every_event_is_listed_once_in_seq_order_and_every_turn_has_a_row(
    runs: dict[str, Run],
) -> None:
    for run_id, events, state in runs.values():
        found = Elements(render_page(run_id, events, state))
        listed = [int(a["data-seq"]) for a in found.having("li") if "data-seq" in a]
        assert listed == list(range(len(events)))
        rows = found.having("div", "row")
        assert [int(r["data-seq"]) for r in rows] == sorted(int(r["data-seq"]) for r in rows)
        steps = [int(r["data-step"]) for r in rows if "data-step" in r]
        if isinstance(state, RunState):
            assert steps == [e.step for e in events if isinstance(e, ModelResponded)]
            assert steps == list(range(1, state.steps + 1))
        else:
            assert steps == [e.step for e in events if isinstance(e, StepRouted)]
            assert len(steps) == state.steps == 4


def test_the_totals_are_the_runs_own(runs: dict[str, Run]) -> None:
    for run_id, events, state in runs.values():
        found = Elements(render_page(run_id, events, state))
        tokens_in, tokens_out, nusd = spent(events)
        report = Report().add_all((run_id, e) for e in events).runs[run_id]
        assert (tokens_in, tokens_out, nusd) == (
            report.tokens_in,
            report.tokens_out,
            report.cost_nusd,
        )
        assert (state.usage.input_tokens, state.usage.output_tokens, state.cost_nusd) == (
            tokens_in,
            tokens_out,
            nusd,
        )
        total = found.by_id("total-tokens")
        assert (int(total["data-in"]), int(total["data-out"])) == (tokens_in, tokens_out)
        assert int(found.by_id("total-cost")["data-nusd"]) == nusd
        assert int(found.by_id("steps")["data-value"]) == state.steps
        rows = found.having("div", "row")
        assert int(rows[-1]["data-total-nusd"]) == nusd  # the running total ends at the total
        spend = found.having("tr")[1:]
        if spend:
            assert int(spend[-1]["data-total-nusd"]) == nusd
            assert int(spend[-1]["data-total-tokens"]) == tokens_in + tokens_out
    _, events, _ = runs["agent"]
    assert spent(events) == (460, 60, 460 * 1000 + 60 * 2000)


def test_parallel_calls_have_lanes_with_their_outcomes_and_retries(runs: dict[str, Run]) -> None:
    run_id, events, state = runs["agent"]
    found = Elements(render_page(run_id, events, state))
    lanes = [
        (a["data-name"], a["data-outcome"], a["data-tries"]) for a in found.having("div", "lane")
    ]
    assert lanes == [
        ("lookup", "ok", "1"),
        ("lookup", "ok", "1"),
        ("flaky", "ok", "3"),
        ("broken", "failed", "2"),
        ("pay", "ok", "1"),
    ]
    assert found.by_id("retries")["data-value"] == "3"  # 2 of flaky's, 1 of broken's
    (wait,) = found.having("div", "wait")
    assert wait["data-wait"] == "review" and found.by_id("waits")["data-value"] == "1"
    assert [wait["data-from"], wait["data-to"]] == [
        str(i) for i, e in enumerate(events) if type(e).__name__.startswith("Review")
    ]


def test_an_interrupted_call_shows_its_wait_and_both_starts(runs: dict[str, Run]) -> None:
    run_id, events, state = runs["interrupted"]
    found = Elements(render_page(run_id, events, state))
    (lane,) = found.having("div", "lane")
    assert (lane["data-outcome"], lane["data-tries"]) == ("ok", "2")
    # started twice: before the crash, and on the reviewer's word (each start its own event)
    assert [e.call_id for e in events if isinstance(e, ToolStarted)] == ["call_1_0"] * 2
    (wait,) = found.having("div", "wait")
    assert wait["data-wait"] == "interrupt" and int(wait["data-to"]) > int(wait["data-from"])


def test_a_graph_run_draws_its_nodes_and_the_path_it_took(runs: dict[str, Run]) -> None:
    run_id, events, state = runs["graph"]
    found = Elements(render_page(run_id, events, state))
    nodes = {a["data-node"]: int(a["data-visits"]) for a in found.having("li", "node")}
    assert nodes == {"classify": 1, "fan": 1, "flaky": 1, "other": 1, "pay": 1, "unused": 0}
    assert found.having("li", "taken") == [
        a for a in found.having("li", "node") if a["data-visits"] != "0"
    ]
    visits = [(a["data-step"], a["data-node"], a["data-tries"]) for a in found.having("g", "visit")]
    ran = [(str(e.step), e.node, str(e.attempts)) for e in events if isinstance(e, NodeFinished)]
    assert visits == ran and ("2", "flaky", "2") in visits
    assert found.having("circle", "end")  # the run reached its end
    assert found.having("line", "hop")
    (wait,) = found.having("div", "wait")
    assert wait["data-wait"] == "review"


def test_a_run_with_no_events_still_has_a_page() -> None:
    page = render_page("nothing", [], RunState())
    assert "Nothing spent" in page and Elements(page).by_id("steps")["data-value"] == "0"


# --- in a browser ---------------------------------------------------------------------------

SHOW = """(() => {
  const number = (id, key) => Number(document.getElementById(id).dataset[key]);
  return {
    costText: document.getElementById("total-cost").textContent,
    nusd: number("total-cost", "nusd"),
    tokensIn: number("total-tokens", "in"),
    tokensOut: number("total-tokens", "out"),
    steps: number("steps", "value"),
    rows: [...document.querySelectorAll("div.row[data-step]")].map(r => Number(r.dataset.step)),
    events: document.querySelectorAll("ol.events li").length,
    runningTotals: [...document.querySelectorAll("div.row")].map(r => Number(r.dataset.totalNusd)),
    scripts: document.scripts.length,
    images: document.images.length,
    header: document.querySelector("header").innerText,
  };
})()"""


def test_the_run_pages_show_the_runs_numbers_in_chromium_without_console_errors(
    runs: dict[str, Run], tmp_path: Path
) -> None:
    with Chromium() as browser:
        for name, (run_id, events, state) in runs.items():
            path = tmp_path / f"{name}.html"
            path.write_text(render_page(run_id, events, state))
            shown = browser.open(path).evaluate(SHOW)
            tokens_in, tokens_out, nusd = spent(events)
            assert (shown["tokensIn"], shown["tokensOut"], shown["nusd"]) == (
                tokens_in,
                tokens_out,
                nusd,
            )
            assert shown["costText"] == f"${nusd / 1e9:.6f}"
            assert shown["steps"] == state.steps == len(shown["rows"])
            assert shown["events"] == len(events)
            assert shown["runningTotals"] == sorted(shown["runningTotals"])
            assert shown["runningTotals"][-1] == nusd
            assert (shown["scripts"], shown["images"]) == (1, 0)  # the hostile text stayed text
            assert (
                f"{tokens_in + tokens_out} ({tokens_in} in / {tokens_out} out)" in shown["header"]
            )
        assert browser.problems == []


def test_a_click_on_a_lanes_mark_shows_its_event(runs: dict[str, Run], tmp_path: Path) -> None:
    run_id, events, state = runs["agent"]
    path = tmp_path / "agent.html"
    path.write_text(render_page(run_id, events, state))
    with Chromium() as browser:
        page = browser.open(path)
        mark = '[data-name="broken"] .mark:last-child'
        seq = page.evaluate(f"document.querySelector('{mark}').dataset.goto")
        page.evaluate(f"document.querySelector('{mark}').click()")
        shown = page.evaluate("[...document.querySelectorAll('li.hit')].map(li => li.dataset.seq)")
        assert shown == [seq] and isinstance(events[int(seq)], ToolFailed)
        assert page.evaluate(f"document.getElementById('e{seq}').closest('details').open")
        assert browser.problems == []


def test_the_html_report_shows_the_runs_numbers_in_chromium(
    runs: dict[str, Run], tmp_path: Path
) -> None:
    report = Report().add_all((run_id, e) for run_id, events, _ in runs.values() for e in events)
    path = tmp_path / "report.html"
    path.write_text(report.html())
    with Chromium() as browser:
        table = browser.open(path).evaluate(
            """[...document.querySelectorAll("h2")].find(h => h.textContent === "runs")
                 .nextElementSibling.innerText.trim().split("\\n").slice(1)
                 .map(line => line.split("\\t"))"""
        )
        assert browser.problems == []
    shown = {row[0]: row for row in table}
    assert set(shown) == {run_id for run_id, _, _ in runs.values()}
    for run_id, events, state in runs.values():
        tokens_in, tokens_out, nusd = spent(events)
        assert shown[run_id][3:] == [
            str(state.steps),
            str(tokens_in),
            str(tokens_out),
            f"{nusd / 1e9:.6f}",
        ]


def test_the_harness_reports_console_errors_and_exceptions_and_times_out(tmp_path: Path) -> None:
    path = tmp_path / "noisy.html"
    path.write_text(
        "<!doctype html><title>noisy</title><p id=p>text</p><script>"
        "console.error('an error'); console.warn('a warning'); console.log('fine');"
        "setTimeout(() => { throw new Error('thrown') }, 0)</script>"
    )
    with Chromium(timeout_s=20) as browser:
        page = browser.open(path)
        later = "new Promise(done => setTimeout(() => done(document.body.innerText), 50))"
        assert page.evaluate(later) == "text"
        assert browser.problems[:2] == ["console.error: an error", "console.warning: a warning"]
        assert any("Error: thrown" in p for p in browser.problems[2:])
    with Chromium(timeout_s=20) as browser:
        browser.open(path)
        with pytest.raises(BrowserTimeout, match="for the event Never.fired within this wait's"):
            browser.wait_for("Never.fired", timeout_s=0.2)


def test_without_chromium_the_browser_tests_skip_or_fail_under_require(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import browser

    monkeypatch.setattr(browser, "chromium_path", lambda: None)
    monkeypatch.delenv("ROUTER_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        Chromium()
    monkeypatch.setenv("ROUTER_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="ROUTER_REQUIRE_BROWSER=1"):
        Chromium()
