"""code_fingerprint sees the code that decides, and nothing that only moves it."""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from router.core.fingerprint import code_fingerprint

REPO = Path(__file__).resolve().parents[1]


def define(source: str, name: str = "f", filename: str = "tools.py", **scope: Any) -> Any:
    """Compile ``source`` as a module of its own and return one of its names."""
    namespace: dict[str, Any] = {"__name__": "tools", **scope}
    # exec of test-owned source: the only way to place one function at two line numbers
    exec(compile(textwrap.dedent(source), filename, "exec"), namespace)  # noqa: S102
    return namespace[name]


ROUTE = """
def f(text, limit=3):
    if text in {"a", "b", "c"}:
        return route(text[:limit])
    return "other"
"""


def test_the_same_function_has_the_same_fingerprint() -> None:
    fn = define(ROUTE)
    assert code_fingerprint(fn) == code_fingerprint(fn)
    assert code_fingerprint(fn) == code_fingerprint(define(ROUTE))
    assert len(code_fingerprint(fn)) == 64 and int(code_fingerprint(fn), 16) >= 0


def test_a_changed_body_constant_name_or_default_changes_the_fingerprint() -> None:
    base = code_fingerprint(define(ROUTE))
    variants = [
        ROUTE.replace("return route(text[:limit])", "return route(text[limit:])"),  # body
        ROUTE.replace('"other"', '"others"'),  # constant
        ROUTE.replace('{"a", "b", "c"}', '{"a", "b", "d"}'),  # a set constant
        ROUTE.replace("route(", "reroute("),  # a called name
        ROUTE.replace("limit=3", "limit=4"),  # a default
        ROUTE.replace("text, limit=3", "text, *, limit=3"),  # the signature
        ROUTE.replace("def f", "async def f"),  # the flags
    ]
    fingerprints = {code_fingerprint(define(source)) for source in variants}
    assert base not in fingerprints and len(fingerprints) == len(variants)


def test_a_changed_kw_default_changes_the_fingerprint() -> None:
    first = define("def f(*, mode='fast'): return mode")
    second = define("def f(*, mode='slow'): return mode")
    assert code_fingerprint(first) != code_fingerprint(second)


def test_closure_numbers_count_by_value_and_other_values_by_type() -> None:
    source = """
    def make(threshold):
        def f(score):
            return score > threshold
        return f
    """
    make = define(source, "make")
    assert code_fingerprint(make(0.5)) != code_fingerprint(make(0.7))  # a threshold decides
    assert code_fingerprint(make(3)) != code_fingerprint(make(4))
    assert code_fingerprint(make("/srv/a.db")) == code_fingerprint(
        make("/tmp/b.db")
    )  # where, not what
    assert code_fingerprint(make(1)) != code_fingerprint(make(True))
    assert code_fingerprint(make(("a", "b"))) != code_fingerprint(make(["a", "b"]))


def test_a_changed_inner_function_changes_the_outer_fingerprint() -> None:
    source = """
    def f(items):
        def keep(item):
            return item > 1
        return [i for i in items if keep(i)] + list(map(lambda i: i * 2, items))
    """
    base = code_fingerprint(define(source))
    assert base != code_fingerprint(define(source.replace("item > 1", "item > 2")))
    assert base != code_fingerprint(define(source.replace("i * 2", "i * 3")))
    assert base != code_fingerprint(define(source.replace("if keep(i)", "if not keep(i)")))


def test_moving_a_function_down_its_file_keeps_the_fingerprint() -> None:
    here = define(ROUTE, filename="tools.py")
    lower = define("\n" * 40 + "import json\n\n" + ROUTE, filename="moved/tools.py")
    assert here.__code__.co_firstlineno != lower.__code__.co_firstlineno
    assert code_fingerprint(here) == code_fingerprint(lower)


def test_reformatting_comments_and_docstrings_keep_the_fingerprint() -> None:
    compact = """
    def f(x):
        if x > 1 and x < 5: return [1, 2, 3]
        try: y = x + 1
        except ValueError: return 0
        return y
    """
    spread = '''
    def f(x):
        """Pick a route; the docstring is for people, so it is not seen."""
        # A comment.
        if (x > 1
                and x < 5):
            return [1,
                    2, 3]

        try:
            y = (x
                 + 1)  # another comment
        except ValueError:
            return 0
        return y
    '''
    assert code_fingerprint(define(compact)) == code_fingerprint(define(spread))
    edited = spread.replace("Pick a route", "Choose a route")
    assert code_fingerprint(define(spread)) == code_fingerprint(define(edited))


def test_the_fingerprint_is_stable_across_processes_and_hash_seeds(tmp_path: Path) -> None:
    (tmp_path / "seeded_tools.py").write_text(
        textwrap.dedent(
            """
            import functools

            def classify(x):
                if x in {"alpha", "beta", "gamma", "delta", "epsilon"}:
                    return "greek"
                return "other" if x not in frozenset({b"x", b"y", 1.5, None}) else "odd"

            def make(names):
                allowed = set(names)
                table = {name: len(name) for name in names}
                def check(x):
                    return x in allowed and table[x] > 1
                return check

            class Tool:
                KINDS = frozenset({"read", "write", "delete"})
                def __call__(self, kind):
                    return kind in self.KINDS

            FUNCTIONS = [
                classify,
                make(["one", "two", "three", "four", "five", "six"]),
                functools.partial(classify, x={"q", "r", "s"}),
                Tool(),
                Tool,
                lambda y: y in {"k", "l", "m", "n"},
            ]
            """
        )
    )
    code = (
        f"import sys; sys.path[:0] = [{str(tmp_path)!r}, {str(REPO)!r}]\n"
        "from router.core.fingerprint import code_fingerprint\n"
        "import seeded_tools\n"
        "print(' '.join(code_fingerprint(fn) for fn in seeded_tools.FUNCTIONS))\n"
    )
    outputs = set()
    for seed in ("0", "1", "2", "123"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(run.stdout.strip())
    assert len(outputs) == 1
    spec = importlib.util.spec_from_file_location("seeded_tools", tmp_path / "seeded_tools.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    here = " ".join(code_fingerprint(fn) for fn in module.FUNCTIONS)  # this process's seed
    assert outputs == {here} and len(set(here.split())) == 6


def test_a_frozenset_default_counts_by_its_members_not_their_order() -> None:
    make = define("def make(s):\n    def f(x, s=s):\n        return x in s\n    return f", "make")
    ascending, descending = set(), set()
    for n in (1, 9, 17):  # ints that share a slot, so insertion order shows in iteration
        ascending.add(n)
    for n in (17, 9, 1):
        descending.add(n)
    assert list(ascending) != list(descending)
    assert code_fingerprint(make(frozenset(ascending))) == code_fingerprint(
        make(frozenset(descending))
    )


def test_mutable_state_in_a_closure_counts_by_its_type_only() -> None:
    make = define("def make(s):\n    return lambda x: x in s", "make")
    assert code_fingerprint(make([])) == code_fingerprint(
        make([5])
    )  # a list the code appends to as it runs
    assert code_fingerprint(make({})) == code_fingerprint(make({"seen": 1}))
    assert code_fingerprint(make(set())) == code_fingerprint(make({1}))
    assert code_fingerprint(make([])) != code_fingerprint(make({}))


def test_lambdas_are_fingerprinted_by_their_code() -> None:
    assert code_fingerprint(lambda x: x + 1) == code_fingerprint(lambda x: x + 1)
    assert code_fingerprint(lambda x: x + 1) != code_fingerprint(lambda x: x + 2)
    assert code_fingerprint(lambda x: x + 1) != code_fingerprint(lambda x: x - 1)


def test_partials_count_their_function_args_and_keywords() -> None:
    fn = define(ROUTE)
    base = code_fingerprint(functools.partial(fn, "a"))
    assert base == code_fingerprint(functools.partial(fn, "a"))
    assert base == code_fingerprint(
        functools.partial(fn, "b")
    )  # a string bound at run time: by type
    assert base != code_fingerprint(functools.partial(fn, 1))
    assert base != code_fingerprint(functools.partial(fn, "a", limit=2))
    assert base != code_fingerprint(fn)
    changed = define(ROUTE.replace('"other"', '"else"'))
    assert base != code_fingerprint(functools.partial(changed, "a"))


CLASSES = """
class Tool:
    def __init__(self, name):
        self.name = name

    def run(self, x):
        return x * 2

    def __call__(self, x):
        return self.run(x) + 1
"""


def test_bound_methods_count_their_function() -> None:
    tool = define(CLASSES, "Tool")
    assert code_fingerprint(tool("a").run) == code_fingerprint(tool("b").run)
    changed = define(CLASSES.replace("x * 2", "x * 3"), "Tool")
    assert code_fingerprint(tool("a").run) != code_fingerprint(changed("a").run)
    assert code_fingerprint(tool("a").__call__) != code_fingerprint(tool("a").run)


def test_callable_objects_count_their_class_and_call() -> None:
    tool = define(CLASSES, "Tool")
    assert code_fingerprint(tool("a")) == code_fingerprint(tool("b"))
    changed_call = define(CLASSES.replace("+ 1", "+ 2"), "Tool")
    changed_helper = define(CLASSES.replace("x * 2", "x * 3"), "Tool")
    assert code_fingerprint(tool("a")) != code_fingerprint(changed_call("a"))
    assert code_fingerprint(tool("a")) != code_fingerprint(changed_helper("a"))


def test_classes_count_their_own_methods_in_name_order() -> None:
    tool = define(CLASSES, "Tool")
    reordered = (
        CLASSES.replace("    def run(self, x):\n        return x * 2\n\n", "")
        + "\n    def run(self, x):\n        return x * 2\n"
    )
    assert code_fingerprint(tool) == code_fingerprint(define(reordered, "Tool"))
    assert code_fingerprint(tool) != code_fingerprint(define(CLASSES + "    LIMIT = 1\n", "Tool"))
    renamed = CLASSES.replace("def run", "def go").replace("self.run", "self.go")
    assert code_fingerprint(tool) != code_fingerprint(define(renamed, "Tool"))


def test_recursive_closures_terminate() -> None:
    source = """
    def make():
        def even(n):
            return n == 0 or odd(n - 1)
        def odd(n):
            return n != 0 and even(n - 1)
        def fact(n):
            return 1 if n < 2 else n * fact(n - 1)
        return even, fact
    """
    even, fact = define(source, "make")()
    assert code_fingerprint(even) == code_fingerprint(define(source, "make")()[0])
    assert code_fingerprint(fact) != code_fingerprint(even)
    changed = define(source.replace("n * fact", "n + fact"), "make")()[1]
    assert code_fingerprint(fact) != code_fingerprint(changed)


def test_a_cyclic_container_in_a_closure_terminates() -> None:
    items: list[Any] = [1]
    items.append(items)
    assert len(code_fingerprint(lambda: items)) == 64


def test_async_functions_are_fingerprinted_by_their_code() -> None:
    source = """
    async def f(client, text):
        reply = await client.send(text)
        return reply.strip()
    """
    base = code_fingerprint(define(source))
    assert base == code_fingerprint(define("\n\n" + source))
    assert base != code_fingerprint(define(source.replace("send", "post")))
    assert base != code_fingerprint(
        define(source.replace("async def", "def").replace("await ", ""))
    )


def test_wrapped_functions_count_the_wrapper_and_the_wrapped() -> None:
    decorator = """
    import functools

    def retry(fn):
        @functools.wraps(fn)
        def wrapper(*args):
            for _ in range(3):
                return fn(*args)
        return wrapper
    """
    retry = define(decorator, "retry")
    fewer = define(decorator.replace("range(3)", "range(2)"), "retry")
    first, second = define("def f(x): return x + 1"), define("def f(x): return x + 2")
    assert code_fingerprint(retry(first)) == code_fingerprint(retry(first))
    assert code_fingerprint(retry(first)) != code_fingerprint(retry(second))
    assert code_fingerprint(retry(first)) != code_fingerprint(fewer(first))
    cached = functools.lru_cache(first)
    assert code_fingerprint(cached) != code_fingerprint(functools.lru_cache(second))


def test_builtins_count_their_module_and_name() -> None:
    assert code_fingerprint(len) == code_fingerprint(len)
    assert code_fingerprint(len) != code_fingerprint(abs)
    assert code_fingerprint(str.lower) != code_fingerprint(str.upper)
    assert code_fingerprint([].append) == code_fingerprint([1].append)


def test_other_objects_in_a_closure_count_by_their_type() -> None:
    make = define("def make(client):\n    return lambda: client.get()", "make")

    class Client:
        pass

    class Other:
        pass

    assert code_fingerprint(make(Client())) == code_fingerprint(make(Client()))
    assert code_fingerprint(make(Client())) != code_fingerprint(make(Other()))


def test_a_called_helper_is_seen_by_name_only() -> None:
    """The documented limit: globals and libraries the code calls count by name."""
    source = "def f(x):\n    return helper(x)"
    first = define(source, helper=lambda x: x + 1)
    second = define(source, helper=lambda x: x + 2)
    assert code_fingerprint(first) == code_fingerprint(second)
