"""The SQL package's own rules (pg_scheduler/shared/queries/): every name re-exported, statements
named ``<ENTITY>_<VERB>``, and a one-line legend above every statement of more than two
parameters. No database: these read the package's source."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator
from types import ModuleType

from pg_scheduler.shared import queries

ENTITIES = ("MIGRATION", "JOB", "WORKER", "LEADER", "PERIODIC", "QUEUE", "VACUUM", "CLUSTER", "DB")
VERBS = {
    "ADVANCE",
    "ANALYZE",
    "BUMP",
    "CANCEL",
    "CHECK",
    "CLAIM",
    "COMPLETE",
    "COUNT",
    "CREATE",
    "DECLARE",
    "DELETE",
    "DEREGISTER",
    "DISABLE",
    "ENQUEUE",
    "FAIL",
    "FENCE",
    "GET",
    "HEARTBEAT",
    "INSERT",
    "LIST",
    "LOCK",
    "NOTIFY",
    "PRUNE",
    "RECORD",
    "REGISTER",
    "RELEASE",
    "RENEW",
    "RESCUE",
    "RESET",
    "RESIGN",
    "RETRY",
    "RULE",
    "SAMPLE",
    "SET",
    "SETTLE",
    "SKIP",
    "STAMP",
    "TAKE",
    "TRIGGER",
    "TRY",
    "UNLOCK",
    "UPSERT",
}
VALUES = {
    "JOBS_TABLE",
    "LIMITED_CLAIM_FUNCTION",
    "PICK_DUE_FUNCTION",
    "JOB_FINISHED_CHANNEL",
}  # a table, DDL, a channel
LEGEND = re.compile(r"# (\$1 [a-z_]+(?:, \$\d+ [a-z_]+)*)(?:  # noqa: E501)?")


def _modules() -> Iterator[ModuleType]:
    for info in pkgutil.iter_modules(queries.__path__):
        yield importlib.import_module(f"{queries.__name__}.{info.name}")


def _statements(module: ModuleType) -> Iterator[tuple[str, str, int]]:
    """(name, SQL text, line of its definition) of each public statement of ``module``; a
    builder (a function of the claim limit) gives its text for a limit of 1."""
    tree = ast.parse(inspect.getsource(module))
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            assert isinstance(target, ast.Name)
            value = getattr(module, target.id)
            if not target.id.startswith("_") and isinstance(value, str):
                yield target.id, value, node.lineno
        elif isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            returns = ast.unparse(node.returns) if node.returns is not None else None
            if [a.arg for a in node.args.args] == ["limit"] and returns == "str":
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                yield node.name, getattr(module, node.name)(1), first


def _placeholders(sql: str) -> list[int]:
    return sorted({int(n) for n in re.findall(r"\$(\d+)", sql)})


def test_the_package_reexports_every_public_name_of_its_modules() -> None:
    for module in _modules():
        for name, value in vars(module).items():
            if name.startswith("_") or isinstance(value, ModuleType) or name == "annotations":
                continue
            if getattr(value, "__module__", module.__name__) not in (module.__name__, None):
                continue  # imported from elsewhere
            assert getattr(queries, name, None) is value, f"{module.__name__}.{name}"
            assert name in queries.__all__, name


def test_every_statement_is_named_entity_then_verb() -> None:
    for module in _modules():
        for name, _, _ in _statements(module):
            if name in VALUES:
                continue
            entity, _, rest = name.upper().partition("_")
            assert entity in ENTITIES, f"{name}: {entity} is not one of {ENTITIES}"
            assert rest.split("_")[0] in VERBS, f"{name}: no verb after the entity"


def test_every_statement_of_more_than_two_parameters_has_a_legend_line_above_it() -> None:
    checked = 0
    for module in _modules():
        lines = inspect.getsource(module).splitlines()
        for name, sql, line in _statements(module):
            numbers = _placeholders(sql)
            assert numbers == list(range(1, len(numbers) + 1)), f"{name}: gaps in {numbers}"
            if len(numbers) <= 2:
                continue
            above = lines[line - 2]
            match = LEGEND.fullmatch(above)
            assert match, f"{name}: no legend directly above it, found {above!r}"
            legend = [int(n) for n in re.findall(r"\$(\d+)", match.group(1))]
            assert legend == numbers, f"{name}: legend names {legend}, the SQL uses {numbers}"
            checked += 1
    assert checked >= 20  # the check found the statements it is about
