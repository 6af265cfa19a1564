"""Templates in workspace values: ``{{ input.x }}``, ``{{ secret.token }}``, ``{{ a.output.id }}``.

Jinja2 in an immutable sandbox with ``StrictUndefined`` (a missing variable is an error,
never an empty string) and no autoescaping (we render shell scripts and JSON, not HTML).
On top of Jinja, the Tera layer (``tera_filters``, ``tera_collections``, ``tera_builtins``)
gives every Tera built-in filter, test and function with Tera's argument names and
results (``split(pat='/')``, ``is starting_with('prod')``, ``range(end=3)``...), Tera's
``{% for key, value in object %}`` and ``{% break %}``/``{% continue %}``. Jinja's own
positional spellings keep working where the two differ. An attribute of an undefined
value is undefined (not an error), so ``{{ input.a.b | default(value=1) }}`` and
``input.a.b is defined`` behave as in Tera; using an undefined value is still an error.

Typing rule: a string that is exactly one expression, ``"{{ input.amount }}"`` (spaces
around allowed), keeps the type of its result (a number stays a number, an object an
object); any other template renders to a string. In string output, ``true``/``false``,
``null`` and objects/lists are written as JSON, so ``echo 'OUTPUT: {"ok": {{ flag }}}'``
does what it says.

Context layout (what the engine passes to ``render``; ``build_context`` builds it):

=================  ===============================================================
``input``          the job's input; inside an action's ``script``/``env``, the step's
                   rendered input
``secret``         the workspace secrets, resolved (``secrets`` is the same dict)
``job``            ``{id, task, workspace, ...}``
``steps``          ``{step_name: {output, status}}`` for every earlier step
``<step_name>``    each earlier step also at top level, ``{output, status}``; a name
                   with ``-`` is also reachable with ``_`` (``say_hello.output``),
                   because ``say-hello`` reads as a subtraction
=================  ===============================================================
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, nodes
from jinja2.exceptions import UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from headwater.errors import TemplateCallError, TemplateError
from headwater.workspace.secret_tree import secret_scope
from headwater.workspace.template_ast import collect_chains, collect_paths, shell_safe
from headwater.workspace.tera_builtins import (
    DATE_FILTERS,
    ENV_ALLOW_VARIABLE,
    TESTS,
    allowed_env_names,
    functions,
)
from headwater.workspace.tera_collections import COLLECTION_FILTERS
from headwater.workspace.tera_filters import STRING_FILTERS
from headwater.workspace.tera_vals import VALS_FILTERS

__all__ = [
    "RESERVED_NAMES",
    "TemplateEngine",
    "build_context",
    "is_truthy",
]

# Top-level context names that a step's name cannot shadow.
RESERVED_NAMES = frozenset(
    {"input", "secret", "secrets", "job", "steps", "env", "each", "hook", "state", "global_state"}
)

_FALSY_STRINGS = frozenset({"", "false", "0", "null", "none"})
_SINGLE_EXPRESSION = re.compile(r"\A\s*\{\{.*\}\}\s*\Z", re.DOTALL)
_TEMPLATE_MARKERS = ("{{", "{%", "{#")
_CACHE_LIMIT = 4096
_HINT_KEYS = 12

# (is a single expression, run it on the merged context)
_Compiled = tuple[bool, Callable[[dict[str, Any]], Any]]


def is_truthy(value: Any) -> bool:
    """Strøm's truthiness: False, None, 0, empty, and "false"/"0"/"null"/"none" are false."""
    if value is None or isinstance(value, Undefined):
        return False
    if isinstance(value, str):
        return value.strip().lower() not in _FALSY_STRINGS
    if isinstance(value, bool | int | float):
        return bool(value)
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        return len(value) > 0
    return True


def build_context(
    *,
    input: Any,
    secrets: Mapping[str, str] | None = None,
    job: Mapping[str, Any] | None = None,
    steps: Mapping[str, Mapping[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The template context; ``steps`` maps a step name to ``{"output": ..., "status": ...}``."""
    steps = dict(steps or {})
    context: dict[str, Any] = {}
    for name, state in steps.items():
        for alias in (name, name.replace("-", "_")):
            if alias not in RESERVED_NAMES:
                context.setdefault(alias, state)
    context.update(secret_scope(secrets or {}))
    context.update(
        input=input,
        job=dict(job or {}),
        steps=steps,
    )
    context.update(extra)
    return context


def _json_finalize(value: Any) -> Any:
    # Called for every {{ }} in string output: JSON spelling for JSON values.
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return value


def _default_filter(*args: Any, **kwargs: Any) -> Any:
    # Jinja: default(x, 'fallback', boolean=False); Tera: default(value='fallback').
    value = args[0]
    fallback = args[1] if len(args) > 1 else kwargs.get("value", kwargs.get("default_value", ""))
    boolean = bool(args[2]) if len(args) > 2 else bool(kwargs.get("boolean", False))
    if isinstance(value, Undefined) or (boolean and not value):
        return fallback
    return value


def _pairs(value: Any) -> Any:
    # `{% for k, v in obj %}` (Tera) iterates an object's items.
    if isinstance(value, Mapping):
        return list(value.items())
    return value


_PAIRS = "_tera_items"


def _to_json(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, indent=indent, default=str)


class _Environment(ImmutableSandboxedEnvironment):
    """Dict keys win over dict methods: ``{{ input.items }}`` is the ``items`` field."""

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            if isinstance(loop.target, nodes.Tuple) and len(loop.target.items) == 2:
                loop.iter = nodes.Call(
                    nodes.Name(_PAIRS, "load", lineno=loop.lineno),
                    [loop.iter],
                    [],
                    None,
                    None,
                    lineno=loop.lineno,
                )
        return tree

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, Undefined):
            return obj  # the first missing part is the one worth reporting
        return super().getitem(obj, argument)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Undefined):
            return obj
        if isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                if not hasattr(dict, attribute):
                    return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


class TemplateEngine:
    """Renders workspace templates; compiled templates are cached per instance."""

    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        env_allow: Iterable[str] | None = None,
    ) -> None:
        """``get_env`` reads ``environ`` (default: ``os.environ``), only the names in
        ``env_allow`` (default: ``$HEADWATER_TEMPLATE_ENV``, comma-separated)."""
        environ = os.environ if environ is None else environ
        allow = (
            allowed_env_names(environ.get(ENV_ALLOW_VARIABLE))
            if env_allow is None
            else tuple(env_allow)
        )
        self.env = _Environment(
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            finalize=_json_finalize,
            extensions=["jinja2.ext.loopcontrols"],
        )
        self.env.filters.update(STRING_FILTERS)
        self.env.filters.update(COLLECTION_FILTERS)
        self.env.filters.update(DATE_FILTERS)
        self.env.filters.update(VALS_FILTERS)
        self.env.filters.update(
            default=_default_filter,
            d=_default_filter,
            tojson=_to_json,
        )
        self.env.tests.update(TESTS)
        self.env.globals.update(functions(dict(environ), allow))
        self.env.globals[_PAIRS] = _pairs
        self._cache: dict[str, _Compiled] = {}

    @staticmethod
    def is_truthy(value: Any) -> bool:
        """Strøm's truthiness, for ``when:`` (see the module function ``is_truthy``)."""
        return is_truthy(value)

    # -- rendering -----------------------------------------------------------------------
    def render(self, value: Any, context: Mapping[str, Any], where: str = "") -> Any:
        """Render every string in ``value`` (recursing into dicts and lists)."""
        if isinstance(value, str) and "{" not in value:
            return value
        return self._render(value, self._parent(context), context, where, ())

    def _parent(self, context: Mapping[str, Any]) -> dict[str, Any]:
        # Jinja would merge its globals into a fresh dict for every template; we do it
        # once per call and run the templates on it as a shared context (the hot path).
        return {**self.env.globals, **context}

    def _render(
        self,
        value: Any,
        parent: dict[str, Any],
        context: Mapping[str, Any],
        where: str,
        path: tuple[str, ...],
    ) -> Any:
        if isinstance(value, str):
            if "{" not in value:
                return value
            return self._render_one(value, parent, context, where, path, keep_type=True)
        if isinstance(value, dict):
            return {
                k: self._render(v, parent, context, where, (*path, repr(k)))
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [
                self._render(v, parent, context, where, (*path, f"[{i}]"))
                for i, v in enumerate(value)
            ]
        return value

    def render_str(self, template: str, context: Mapping[str, Any], where: str = "") -> str:
        """Render ``template`` to a string, whatever its result type."""
        if "{" not in template:
            return template
        parent = self._parent(context)
        result = self._render_one(template, parent, context, where, (), keep_type=False)
        return result if isinstance(result, str) else str(_json_finalize(result))

    def _render_one(
        self,
        template: str,
        parent: dict[str, Any],
        context: Mapping[str, Any],
        where: str,
        path: tuple[str, ...],
        *,
        keep_type: bool,
    ) -> Any:
        if not any(marker in template for marker in _TEMPLATE_MARKERS):
            return template
        try:
            single, run = self._compile(template, keep_type=keep_type)
            result = run(parent)
            if isinstance(result, Undefined):
                result._fail_with_undefined_error()
            if single and isinstance(result, tuple):
                return list(result)
            return result
        except TemplateCallError as exc:
            raise TemplateError(f"cannot render {_where(where, path, template)}: {exc}") from None
        except TemplateError:
            raise
        except UndefinedError as exc:
            where_text = _where(where, path, template)
            raise self._undefined_error(template, context, where_text, exc) from None
        except TemplateSyntaxError as exc:
            raise TemplateError(
                f"template syntax error in {_where(where, path, template)}: {_syntax(exc)}"
            ) from None
        except Exception as exc:
            raise TemplateError(
                f"cannot render {_where(where, path, template)}: {type(exc).__name__}: {exc}"
            ) from None

    def _compile(self, template: str, *, keep_type: bool) -> _Compiled:
        key = ("T" if keep_type else "S") + template
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        compiled = self._build(template, keep_type=keep_type)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = compiled
        return compiled

    def _build(self, template: str, *, keep_type: bool) -> _Compiled:
        if keep_type:
            expression = self._single_expression(template)
            if expression is not None:
                # As Environment.compile_expression does: `result = <expr>`, then read it.
                store = nodes.Assign(nodes.Name("result", "store"), expression, lineno=1)
                assign = self.env.from_string(nodes.Template([store], lineno=1))

                def run_expression(parent: dict[str, Any]) -> Any:
                    ctx = assign.new_context(parent, shared=True)
                    for _ in assign.root_render_func(ctx):
                        pass
                    return ctx.vars["result"]

                return True, run_expression
        compiled = self.env.from_string(template)

        def run_text(parent: dict[str, Any]) -> Any:
            return "".join(compiled.root_render_func(compiled.new_context(parent, shared=True)))

        return False, run_text

    def _single_expression(self, template: str) -> nodes.Expr | None:
        """The expression node of ``"{{ expr }}"``, or None for any other template."""
        if _SINGLE_EXPRESSION.match(template) is None:
            return None
        # The regex alone would accept "{{ a }} and {{ b }}": let the parser decide.
        body = self.env.parse(template).body
        if len(body) != 1 or not isinstance(body[0], nodes.Output):
            return None
        parts = [
            n
            for n in body[0].nodes
            if not (isinstance(n, nodes.TemplateData) and not n.data.strip())
        ]
        if len(parts) != 1 or isinstance(parts[0], nodes.TemplateData):
            return None
        return parts[0]

    # -- static inspection ---------------------------------------------------------------
    def syntax_error(self, template: str) -> str | None:
        """Why ``template`` does not parse, or None when it does."""
        if not any(marker in template for marker in _TEMPLATE_MARKERS):
            return None
        try:
            # compile, not only parse: an unknown filter or test is found by the compiler
            self.env.compile(template)
        except TemplateSyntaxError as exc:
            return _syntax(exc)
        except RecursionError:
            return "the template is nested too deeply"
        except Exception as exc:  # a template must never crash the caller
            return f"{type(exc).__name__}: {exc}"
        return None

    def referenced_names(
        self, template: str, roots: Iterable[str] = ("secret", "secrets")
    ) -> set[str]:
        """Dotted paths the template reads that start at one of ``roots``.

        ``"{{ secret.db.password }} {{ secrets['api-key'] }}"`` gives
        ``{"secret.db.password", "secrets.api-key"}``. Templates that do not parse give
        an empty set (``syntax_error`` reports them).
        """
        if not any(marker in template for marker in _TEMPLATE_MARKERS):
            return set()
        try:
            tree = self.env.parse(template)
        except (TemplateSyntaxError, RecursionError):
            return set()
        wanted = frozenset(roots)
        found: set[str] = set()
        collect_paths(tree, wanted, found)
        return found

    def unquoted_values(
        self, template: str, roots: Iterable[str] = ("input",)
    ) -> list[tuple[str, int]]:
        """``(dotted path, line)`` of each ``{{ }}`` that writes a value read from ``roots``
        into the text as it is, e.g. ``echo {{ input.name }}`` (line 1 of the template).

        An expression whose last filter makes the value a safe shell word (``shell_quote``,
        ``int``, ``length``...) is not listed; neither are templates that do not parse.
        """
        if not any(marker in template for marker in _TEMPLATE_MARKERS):
            return []
        try:
            tree = self.env.parse(template)
        except (TemplateSyntaxError, RecursionError):
            return []
        wanted = frozenset(roots)
        found: list[tuple[str, int]] = []
        for output in tree.find_all(nodes.Output):
            for node in output.nodes:
                if isinstance(node, nodes.TemplateData) or shell_safe(node):
                    continue
                paths: set[str] = set()
                collect_paths(node, wanted, paths)
                found.extend((path, node.lineno) for path in sorted(paths))
        return found

    def free_names(self, template: str) -> set[str]:
        """Top-level names the template reads from its context (loop variables excluded)."""
        if not any(marker in template for marker in _TEMPLATE_MARKERS):
            return set()
        from jinja2 import meta

        try:
            tree = self.env.parse(template)
            names = set(meta.find_undeclared_variables(tree))
        except (TemplateSyntaxError, RecursionError):
            return set()
        return names - set(self.env.globals)

    # -- error messages ------------------------------------------------------------------
    def _undefined_error(
        self, template: str, context: Mapping[str, Any], where: str, exc: UndefinedError
    ) -> TemplateError:
        missing = self._first_missing_path(template, context)
        if missing is None:
            return TemplateError(f"{exc.message} in {where}")
        dotted, parent_keys = missing
        hint = ""
        if parent_keys is not None and not dotted.startswith("env."):
            shown = sorted(parent_keys)[:_HINT_KEYS]
            more = ", …" if len(parent_keys) > _HINT_KEYS else ""
            parent = dotted.rpartition(".")[0] or "the context"
            hint = f" ({parent} has: {', '.join(shown) or 'no keys'}{more})"
        return TemplateError(f"'{dotted}' is undefined in {where}{hint}")

    def _first_missing_path(
        self, template: str, context: Mapping[str, Any]
    ) -> tuple[str, list[str] | None] | None:
        from jinja2 import meta

        try:
            tree = self.env.parse(template)
            free = set(meta.find_undeclared_variables(tree))
        except (TemplateSyntaxError, RecursionError):
            return None
        chains: list[list[str]] = []
        collect_chains(tree, free, chains)
        for chain in chains:
            current: Any = context
            for depth, part in enumerate(chain):
                if isinstance(current, Mapping) and part in current:
                    current = current[part]
                    continue
                if depth == 0 and part in self.env.globals:
                    break
                keys = [str(k) for k in current] if isinstance(current, Mapping) else None
                if depth == 0:
                    keys = None  # never list the whole context
                return ".".join(chain[: depth + 1]), keys
        return None


def _where(where: str, path: tuple[str, ...], template: str) -> str:
    if not where:
        short = template if len(template) <= 60 else template[:57] + "..."
        where = f"template {short!r}"
    return " ".join((where, *path)) if path else where


def _syntax(exc: TemplateSyntaxError) -> str:
    return f"{exc.message} (line {exc.lineno})" if exc.lineno else str(exc.message)
