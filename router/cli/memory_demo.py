"""``router demo memory``: a context policy at work on a long run, and a note remembered in
one run and recalled in the next, all scripted (no network, no model to download).

The first run reads a 40-page ledger, one page a turn, through a 3,000-token window: older
pages are cut, then summarised (a scripted summariser, its summaries recorded), and at the
end the agent remembers what it found. The second run, for the same principal, asks a
follow-up question: the note comes back from long-term memory before the first model call.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..core.events import Limits, Message, Principal, Usage
from ..core.limits import Price, PriceTable
from ..core.protocols import Memory, ModelTurn, ProposedCall
from ..core.tokens import ByteBound, message_tokens
from ..core.tools import Tools, tool
from ..memory.context import ContextPolicy
from ..memory.embedding import HashedEmbedder
from ..models.scripted import ScriptedModel
from ..run.engine import Engine
from ..run.memories import Recall, Remembering
from ..run.runtime import Runtime

__all__ = ["FOLLOW_UP", "NOTE", "PAGES", "TASK", "demo_memory", "memory_engine"]

PAGES = 40
TASK = "Read the whole ledger of customer 42, page by page, and report anything unusual."
NOTE = "Customer 42 (Grace Hopper) was charged 1,200.00 twice on page 17 of the ledger."
FOLLOW_UP = "Customer 42 is on the phone about a double charge. What do we know?"
PRINCIPAL = Principal(id="agent-7", roles=frozenset({"support"}))
_BOUND = ByteBound()


@tool(inline=True, idempotent=True)
def read_ledger(page: int) -> str:
    """Read one page of customer 42's ledger."""
    charge = "1,200.00 (duplicate of the line above)" if page == 17 else "0.00"
    lines = [f"page {page} line {i}: invoice {page * 100 + i} paid in full" for i in range(8)]
    return "\n".join([*lines, f"page {page} adjustments: {charge}"])


def _usage(messages: Sequence[Message]) -> Usage:
    return Usage(input_tokens=sum(message_tokens(_BOUND, m) for m in messages), output_tokens=30)


def _reader(messages: Sequence[Message]) -> ModelTurn:
    """Reads the next page, remembers what it found, then reports."""
    read = sum(1 for m in messages if m.role == "tool" and m.name == "read_ledger")
    read += sum(
        int(m.content.split("pages read: ")[1].split()[0])
        for m in messages
        if "pages read: " in m.content
    )
    usage = _usage(messages)
    if read < PAGES:
        call = ProposedCall("", "read_ledger", f'{{"page": {read}}}')
        return ModelTurn(tool_calls=(call,), usage=usage)
    if not any(m.name == "remember" for m in messages if m.role == "tool"):
        call = ProposedCall("", "remember", f'{{"text": "{NOTE}", "importance": 0.9}}')
        return ModelTurn(tool_calls=(call,), usage=usage)
    return ModelTurn(text=f"All {PAGES} pages read. {NOTE}", usage=usage)


def _answerer(messages: Sequence[Message]) -> ModelTurn:
    recalled = [m.content for m in messages if m.content.startswith("[router: from long-term")]
    if recalled:
        note = recalled[0].split("\n- ")[1]
        return ModelTurn(text=f"From our notes: {note}", usage=_usage(messages))
    return ModelTurn(text="We have no notes on this customer.", usage=_usage(messages))


def _summarizer(messages: Sequence[Message]) -> ModelTurn:
    text = messages[-1].content
    pages = text.count("[result of read_ledger")
    earlier = text.split("pages read: ")[1].split()[0] if "pages read: " in text else "0"
    found = " Page 17 holds a duplicate charge of 1,200.00." if "duplicate" in text else ""
    summary = f"pages read: {pages + int(earlier)} of the ledger.{found}"
    return ModelTurn(text=summary, usage=Usage(input_tokens=len(text), output_tokens=25))


def memory_engine(runtime: Runtime, remembering: Remembering, *, follow_up: bool) -> Engine:
    """The reader (first run) or the answerer (second run), with the demo's memory."""
    tools = Tools([read_ledger, *remembering.tools(runtime.clock)])
    prices = PriceTable({"demo-model": Price(3.0, 15.0, context_window=3_500, output_reserve=500)})
    return Engine(
        runtime,
        ScriptedModel(_answerer if follow_up else _reader, name="demo-model"),
        tools,
        prices=prices,
        limits=Limits(max_steps=PAGES + 5, max_tool_calls=PAGES + 5, max_cost_usd=1.0),
        context=ContextPolicy(keep_recent=2, shorten_results_to=120),
        summarizer=ScriptedModel(_summarizer, name="demo-model"),
        memory=remembering,
        agent="ledger-demo",
    )


def demo_memory(memory: Memory) -> Remembering:
    """The demo's long-term memory: the hashed embedder, a recall of up to 3 notes."""
    return Remembering(memory, HashedEmbedder(), recall=Recall(limit=3, budget_tokens=200))
