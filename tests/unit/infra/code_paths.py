"""What a process of this project can call, read from its source: the functions, methods and
classes reachable from its entry function, and the Google client-library calls among them.

The walk is over functions, not modules. Importing a module makes no edge (every composition
root's module imports every adapter it might build; the API imports the worker's wiring for
its embedded profile); using a name does. From a reached function it follows

* every name the function uses: a function, a class (built: its __init__ runs), a module-level
  value (a FastAPI router reaches the handlers it decorates);
* `self.m` to the method of the class or its bases;
* `x.m` where the code annotates a value named `x` (or `_x`) with a class somewhere: to that
  class's `m`, or, for a Protocol, to the `m` of every implementation the process builds
  (`self._blobs.put` reaches GcsBlobStore.put only in a process that builds a GcsBlobStore);
* only the live branch of `if settings.X == ...` (and of `args.X`) when the facts say which:
  the settings a deployment sets, the command line it runs.

Names are matched, not types inferred, so the walk over-approximates; it never misses a call
made through the patterns above.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tools.import_graph import module_files

PACKAGES = ("dal", "gpu_worker", "api")
# Run when a class is built or used as a context manager or callable.
LIFECYCLE_METHODS = (
    "__init__",
    "__post_init__",
    "__call__",
    "__enter__",
    "__exit__",
    "__aenter__",
    "__aexit__",
    "__iter__",
    "__next__",
)
FACT_RECEIVERS = ("settings", "args")
# Bases that add no behaviour of their own.
TYPING_BASES = ("Protocol", "Generic", "object", "NamedTuple", "TypedDict")


class _Some:
    """A value a fact is known to have without knowing which (a secret the deployment sets)."""

    def __repr__(self) -> str:
        return "SOME"


SOME = _Some()
# A fact: the values a setting or argument may have; absent from the mapping: any value.
Facts = Mapping[str, frozenset[object]]


@dataclass(frozen=True, order=True)
class Node:
    module: str
    name: str  # "function", "Class", "Class.method", or a module-level variable

    def __str__(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(frozen=True)
class ModuleRef:
    module: str


@dataclass(frozen=True, order=True)
class LibraryCall:
    """An attribute of a Google client-library object used in a reached function."""

    library: str  # the client library, as the caller's table names it (e.g. "storage")
    attribute: str
    keywords: frozenset[str]
    where: Node
    line: int


@dataclass
class Reach:
    parents: dict[Node, Node | None] = field(default_factory=dict)
    library_calls: set[LibraryCall] = field(default_factory=set)
    settings_read: set[str] = field(default_factory=set)

    def path(self, node: Node) -> list[Node]:
        """How the walk got to `node`, from the entry."""
        chain: list[Node] = []
        current: Node | None = node
        while current is not None:
            chain.append(current)
            current = self.parents[current]
        return chain[::-1]


Target = tuple[str, str | None]  # (module, attribute), attribute None: the module itself


class Program:
    """The source of PACKAGES, indexed for the walk. `libraries`: for each module, the
    third-party names it imports (local name -> full import name)."""

    def __init__(self, root: Path, packages: Iterable[str] = PACKAGES) -> None:
        self.files = module_files(root, packages)
        self.trees = {
            name: ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for name, path in self.files.items()
        }
        self.defs: dict[Node, ast.AST] = {}
        self.methods: dict[Node, dict[str, Node]] = {}
        self.bases: dict[Node, list[Node]] = {}
        self.protocols: set[Node] = set()
        # Classes that extend a library's class, which may call any of their methods back.
        self.extends_library: set[Node] = set()
        self.imports: dict[str, dict[str, Target]] = {}
        # Every import of a module, those inside functions too: what its names may refer to.
        self.any_imports: dict[str, dict[str, Target]] = {}
        self.decorates: dict[Node, set[Node]] = {}
        self.libraries: dict[str, dict[str, str]] = {}  # module -> local name -> library
        for module, tree in self.trees.items():
            self._index(module, tree)
        for module, tree in self.trees.items():
            self._link(module, tree)
        self.returns: dict[Node, set[Node]] = {}
        self._node_of_def = {id(body): node for node, body in self.defs.items()}
        self.holders = self._holders()

    # --- indexing --------------------------------------------------------------------------

    def _index(self, module: str, tree: ast.Module) -> None:
        self.imports[module] = {}
        self.libraries[module] = {}
        for stmt in _top_level(tree.body):
            if isinstance(stmt, ast.Import | ast.ImportFrom):
                self.bind(module, stmt, self.imports[module])
            elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                self.defs[Node(module, stmt.name)] = stmt
            elif isinstance(stmt, ast.ClassDef):
                self._index_class(module, stmt)
            elif isinstance(stmt, ast.Assign | ast.AnnAssign) and stmt.value is not None:
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        self.defs[Node(module, target.id)] = stmt.value
        self.any_imports[module] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                self.bind(module, node, self.any_imports[module])

    def _index_class(self, module: str, cls: ast.ClassDef) -> None:
        node = Node(module, cls.name)
        self.defs[node] = cls
        self.methods[node] = {}
        for stmt in cls.body:
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                method = Node(module, f"{cls.name}.{stmt.name}")
                self.defs[method] = stmt
                self.methods[node][stmt.name] = method
        if any(_last_name(base) == "Protocol" for base in cls.bases):
            self.protocols.add(node)

    def bind(self, module: str, stmt: ast.Import | ast.ImportFrom, into: dict[str, Target]) -> None:
        """Record what each imported name refers to: one of our modules or names, or (in
        self.libraries) a third-party library."""
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                local = alias.asname or alias.name.split(".")[0]
                bound = alias.name if alias.asname else local
                if self._ours(bound):
                    into[local] = (bound, None)
                else:
                    self.libraries[module][local] = alias.name
            return
        base = self._absolute(module, stmt)
        for alias in stmt.names:
            local = alias.asname or alias.name
            if self._ours(f"{base}.{alias.name}"):
                into[local] = (f"{base}.{alias.name}", None)
            elif self._ours(base):
                into[local] = (base, alias.name)
            else:
                self.libraries[module][local] = f"{base}.{alias.name}"

    def _ours(self, module: str) -> bool:
        return module in self.files

    def _absolute(self, module: str, stmt: ast.ImportFrom) -> str:
        if not stmt.level:
            return stmt.module or ""
        parts = module.split(".")
        is_package = self.files[module].name == "__init__.py"
        prefix = ".".join(parts[: len(parts) - stmt.level + (1 if is_package else 0)])
        return f"{prefix}.{stmt.module}" if stmt.module else prefix

    def _link(self, module: str, tree: ast.Module) -> None:
        """Class bases, and the module-level values that decorate functions (routers)."""
        for stmt in _top_level(tree.body):
            if isinstance(stmt, ast.ClassDef):
                cls = Node(module, stmt.name)
                resolved = [(expr, self.target_of(expr, module, {})) for expr in stmt.bases]
                self.bases[cls] = [base for _, base in resolved if isinstance(base, Node)]
                if any(
                    base is None and _last_name(expr) not in TYPING_BASES for expr, base in resolved
                ):
                    self.extends_library.add(cls)
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                for decorator in stmt.decorator_list:
                    for name in ast.walk(decorator):
                        if isinstance(name, ast.Name):
                            ref = self.resolve(module, name.id, {})
                            if isinstance(ref, Node) and not isinstance(self.defs[ref], ast.stmt):
                                self.decorates.setdefault(ref, set()).add(Node(module, stmt.name))

    # --- names -----------------------------------------------------------------------------

    def resolve_target(self, target: Target, depth: int = 0) -> Node | ModuleRef | None:
        module, attribute = target
        if attribute is None:
            return ModuleRef(module)
        if Node(module, attribute) in self.defs:
            return Node(module, attribute)
        if self._ours(f"{module}.{attribute}"):
            return ModuleRef(f"{module}.{attribute}")
        reexported = self.imports.get(module, {}).get(attribute)
        if reexported is not None and depth < 10:
            return self.resolve_target(reexported, depth + 1)
        return None

    def resolve(
        self, module: str, name: str, local: Mapping[str, Target]
    ) -> Node | ModuleRef | None:
        if name in local:
            return self.resolve_target(local[name])
        if Node(module, name) in self.defs:
            return Node(module, name)
        if name in self.imports[module]:
            return self.resolve_target(self.imports[module][name])
        return None

    def target_of(
        self, expr: ast.expr, module: str, local: Mapping[str, Target]
    ) -> Node | ModuleRef | None:
        """What a name or a dotted name refers to: a module, a function, a class, a method."""
        if isinstance(expr, ast.Name):
            return self.resolve(module, expr.id, local)
        if isinstance(expr, ast.Attribute):
            base = self.target_of(expr.value, module, local)
            if isinstance(base, ModuleRef):
                return self.resolve_target((base.module, expr.attr))
            if isinstance(base, Node) and base in self.methods:
                return self.method(base, expr.attr)
        return None

    def method(self, cls: Node, name: str, depth: int = 0) -> Node | None:
        """`name` as defined by the class or, first found, one of its bases."""
        if name in self.methods.get(cls, {}):
            return self.methods[cls][name]
        for base in self.bases.get(cls, []):
            if depth < 10 and (found := self.method(base, name, depth + 1)) is not None:
                return found
        return None

    def method_names(self, cls: Node, depth: int = 0) -> set[str]:
        names = set(self.methods.get(cls, {}))
        for base in self.bases.get(cls, []):
            if depth < 10:
                names |= self.method_names(base, depth + 1)
        return names

    def implements(self, cls: Node, protocol: Node) -> bool:
        wanted = {name for name in self.methods[protocol] if not name.startswith("_")}
        return cls not in self.protocols and wanted <= self.method_names(cls)

    # --- which names hold which classes ----------------------------------------------------

    def _holders(self) -> dict[str, set[Node]]:
        """Identifier (without leading underscores) -> the classes the code annotates values
        of that name with, or assigns to them from a constructor or an annotated function."""
        holders: dict[str, set[Node]] = {}

        def add(name: str, classes: set[Node]) -> bool:
            key = name.lstrip("_")
            before = len(holders.get(key, set()))
            holders.setdefault(key, set()).update(classes)
            return len(holders[key]) > before

        for module, tree in self.trees.items():
            for fn in ast.walk(tree):
                if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                    arguments = fn.args
                    for arg in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs):
                        if arg.annotation is not None:
                            add(arg.arg, self.classes_in(arg.annotation, module))
                    if fn.returns is not None:
                        returned = self.classes_in(fn.returns, module)
                        if any(
                            _last_name(d) in ("property", "cached_property")
                            for d in fn.decorator_list
                        ):
                            add(fn.name, returned)
                        if (node := self._node_of_def.get(id(fn))) is not None:
                            self.returns.setdefault(node, set()).update(returned)
                elif isinstance(fn, ast.AnnAssign) and (name := _assigned_name(fn.target)):
                    add(name, self.classes_in(fn.annotation, module))
        changed = True
        while changed:
            changed = False
            for module, tree in self.trees.items():
                for stmt in ast.walk(tree):
                    if isinstance(stmt, ast.Assign):
                        classes = self._assigned_classes(stmt.value, module, holders)
                        for target in stmt.targets:
                            if (name := _assigned_name(target)) and classes:
                                changed |= add(name, classes)
        return holders

    def _assigned_classes(
        self, value: ast.expr, module: str, holders: Mapping[str, set[Node]]
    ) -> set[Node]:
        if isinstance(value, ast.Call):
            called = self.target_of(value.func, module, self.any_imports[module])
            if isinstance(called, Node):
                return {called} if called in self.methods else set(self.returns.get(called, ()))
        if isinstance(value, ast.Name):
            return set(holders.get(value.id.lstrip("_"), ()))
        return set()

    def classes_in(self, annotation: ast.expr, module: str, depth: int = 0) -> set[Node]:
        """The classes an annotation names (X, X | None, Annotated[X, ...], "X", an alias)."""
        found: set[Node] = set()
        for part in ast.walk(annotation):
            if isinstance(part, ast.Constant) and isinstance(part.value, str):
                try:
                    parsed = ast.parse(part.value, mode="eval").body
                except SyntaxError:
                    continue
                found |= self.classes_in(parsed, module, depth + 1)
            elif isinstance(part, ast.Name | ast.Attribute):
                ref = self.target_of(part, module, self.any_imports[module])
                if isinstance(ref, Node) and ref in self.methods:
                    found.add(ref)
                elif isinstance(ref, Node) and depth < 3:
                    value = self.defs[ref]
                    if isinstance(value, ast.expr):
                        found |= self.classes_in(value, ref.module, depth + 1)
        return found

    def libraries_used(self, module: str, libraries: Mapping[str, str]) -> set[str]:
        """The client libraries (of `libraries`: import-name prefix -> library) whose objects
        the module handles: those it imports anywhere, and the one whose adapter package it
        belongs to (dal.pubsub handles Pub/Sub clients it is handed)."""
        used = {
            library
            for full in self.libraries[module].values()
            if (library := _library(full, libraries)) is not None
        }
        used |= {
            library
            for prefix, library in libraries.items()
            if module == prefix or module.startswith(prefix + ".")
        }
        return used

    # --- the walk ----------------------------------------------------------------------------

    def reach(
        self,
        entry: Node,
        facts: Facts,
        libraries: Mapping[str, str],
        anywhere: Mapping[str, str] | None = None,
    ) -> Reach:
        """Everything `entry` can reach under `facts`, and the uses of the client libraries
        named in `libraries` (import name prefix -> library) made by reached functions of the
        modules that import them (or of the adapter packages they map, e.g. dal.gcs). Methods
        named in `anywhere` (method -> library) are that library's wherever they are used."""
        walk = _Walk(self, facts, libraries, anywhere or {})
        walk.add(entry, None)
        walk.run()
        return walk.result


class _Walk:
    def __init__(
        self,
        program: Program,
        facts: Facts,
        libraries: Mapping[str, str],
        anywhere: Mapping[str, str],
    ) -> None:
        self.program = program
        self.facts = facts
        self.libraries = libraries
        self.anywhere = anywhere
        self.result = Reach()
        self.todo: list[Node] = []
        self.classes: set[Node] = set()
        self.pending: set[tuple[Node, str, Node]] = set()  # (protocol, method, caller)

    def add(self, node: Node, parent: Node | None) -> None:
        if node in self.result.parents or node not in self.program.defs:
            return
        self.result.parents[node] = parent
        self.todo.append(node)
        if node in self.program.methods:
            self._built(node)

    def _built(self, cls: Node) -> None:
        self.classes.add(cls)
        for name in LIFECYCLE_METHODS:
            if (method := self.program.method(cls, name)) is not None:
                self.add(method, cls)
        if cls in self.program.extends_library:
            for method in self.program.methods[cls].values():
                self.add(method, cls)
        for base in self.program.bases.get(cls, []):
            self.add(base, cls)
        for protocol, name, caller in list(self.pending):
            self._dispatch_to(cls, protocol, name, caller)

    def dispatch(self, cls: Node, name: str, caller: Node) -> None:
        if cls in self.program.protocols:
            self.pending.add((cls, name, caller))
            for built in list(self.classes):
                self._dispatch_to(built, cls, name, caller)
        elif (method := self.program.method(cls, name)) is not None:
            self.add(method, caller)

    def _dispatch_to(self, cls: Node, protocol: Node, name: str, caller: Node) -> None:
        if self.program.implements(cls, protocol):
            method = self.program.method(cls, name)
            if method is not None:
                self.add(method, caller)

    def run(self) -> None:
        while self.todo:
            node = self.todo.pop()
            body = self.program.defs[node]
            visitor = _Visitor(self, node)
            if isinstance(body, ast.ClassDef):
                for stmt in body.body:
                    if not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                        visitor.visit(stmt)
            elif isinstance(body, ast.FunctionDef | ast.AsyncFunctionDef):
                visitor.visit_function(body)
            else:
                visitor.visit(body)
                for decorated in self.program.decorates.get(node, ()):
                    self.add(decorated, node)


class _Visitor(ast.NodeVisitor):
    def __init__(self, walk: _Walk, node: Node) -> None:
        self.walk = walk
        self.program = walk.program
        self.node = node
        self.module = node.module
        owner = node.name.split(".")[0]
        self.cls = (
            Node(node.module, owner) if Node(node.module, owner) in self.program.methods else None
        )
        self.local: dict[str, Target] = {}
        self.module_libraries = walk.program.libraries_used(self.module, walk.libraries)
        self.with_keywords: dict[int, frozenset[str]] = {}

    def visit_function(self, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for inner in ast.walk(fn):
            if isinstance(inner, ast.Import | ast.ImportFrom):
                self.program.bind(self.module, inner, self.local)
        for default in (*fn.args.defaults, *fn.args.kw_defaults):
            if default is not None:
                self.visit(default)
        for stmt in fn.body:
            self.visit(stmt)

    # Annotations name types, they run nothing.
    def visit_arg(self, node: ast.arg) -> None:
        return

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.visit(node.target)
        if node.value is not None:
            self.visit(node.value)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        for decorator in node.decorator_list:
            self.visit(decorator)
        self.visit_function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        for decorator in node.decorator_list:
            self.visit(decorator)
        self.visit_function(node)

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        outcomes = self._outcomes(node.test)
        if True in outcomes:
            for stmt in node.body:
                self.visit(stmt)
        if False in outcomes:
            for stmt in node.orelse:
                self.visit(stmt)

    def visit_IfExp(self, node: ast.IfExp) -> None:
        self.visit(node.test)
        outcomes = self._outcomes(node.test)
        if True in outcomes:
            self.visit(node.body)
        if False in outcomes:
            self.visit(node.orelse)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            ref = self.program.resolve(self.module, node.id, self.local)
            if isinstance(ref, Node):
                self.walk.add(ref, self.node)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Attribute):
            self.with_keywords[id(node.func)] = frozenset(
                keyword.arg for keyword in node.keywords if keyword.arg
            )
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, ast.Load):
            self._attribute(node)
        self.generic_visit(node)

    def _attribute(self, node: ast.Attribute) -> None:
        receiver = node.value
        key = _fact_key(node)
        if key is not None and key.startswith("settings."):
            self.walk.result.settings_read.add(node.attr)
        ref = self.program.target_of(node, self.module, self.local)
        if isinstance(ref, Node):
            self.walk.add(ref, self.node)
        elif isinstance(receiver, ast.Name) and receiver.id in ("self", "cls") and self.cls:
            if (method := self.program.method(self.cls, node.attr)) is not None:
                self.walk.add(method, self.node)
        elif (holder := _holder_name(receiver)) is not None:
            for cls in self.program.holders.get(holder, ()):
                self.walk.dispatch(cls, node.attr, self.node)
        if not node.attr.startswith("_"):
            distinctive = self.walk.anywhere.get(node.attr)
            for library in self.module_libraries | ({distinctive} if distinctive else set()):
                self.walk.result.library_calls.add(
                    LibraryCall(
                        library=library,
                        attribute=node.attr,
                        keywords=self.with_keywords.get(id(node), frozenset()),
                        where=self.node,
                        line=node.lineno,
                    )
                )

    def _outcomes(self, test: ast.expr) -> frozenset[bool]:
        return _evaluate(test, self.walk.facts)


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Module-level statements, including those under `if TYPE_CHECKING:` and `try:`."""
    for stmt in body:
        if isinstance(stmt, ast.If):
            yield from _top_level(stmt.body)
            yield from _top_level(stmt.orelse)
        elif isinstance(stmt, ast.Try):
            yield from _top_level(stmt.body)
            for handler in stmt.handlers:
                yield from _top_level(handler.body)
            yield from _top_level(stmt.orelse)
        else:
            yield stmt


def _last_name(expr: ast.expr) -> str | None:
    if isinstance(expr, ast.Call):
        return _last_name(expr.func)
    if isinstance(expr, ast.Subscript):
        return _last_name(expr.value)
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        return expr.attr
    return None


def _assigned_name(target: ast.expr) -> str | None:
    if isinstance(target, ast.Name):
        return target.id
    if isinstance(target, ast.Attribute):
        return target.attr
    return None


def _holder_name(receiver: ast.expr) -> str | None:
    name = _assigned_name(receiver)
    return None if name is None or name in ("self", "cls") else name.lstrip("_")


def _library(full_name: str, libraries: Mapping[str, str]) -> str | None:
    for prefix, library in libraries.items():
        if full_name == prefix or full_name.startswith(prefix + "."):
            return library
    return None


def _fact_key(expr: ast.expr) -> str | None:
    """ "settings.job_queue" for `settings.job_queue`, `core.settings.job_queue`, ...;
    "args.group" for `args.group`."""
    if not isinstance(expr, ast.Attribute):
        return None
    receiver = expr.value
    if isinstance(receiver, ast.Name) and receiver.id in FACT_RECEIVERS:
        return f"{receiver.id}.{expr.attr}"
    if isinstance(receiver, ast.Attribute) and receiver.attr == "settings":
        return f"settings.{expr.attr}"
    return None


BOTH = frozenset({True, False})


def _evaluate(test: ast.expr, facts: Facts) -> frozenset[bool]:
    """Which way a condition can go under `facts`: {True}, {False} or both."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return frozenset(not outcome for outcome in _evaluate(test.operand, facts))
    if isinstance(test, ast.BoolOp):
        parts = [_evaluate(value, facts) for value in test.values]
        if isinstance(test.op, ast.And):
            can_be_true = all(True in part for part in parts)
            can_be_false = any(False in part for part in parts)
        else:
            can_be_true = any(True in part for part in parts)
            can_be_false = all(False in part for part in parts)
        return frozenset(
            outcome
            for outcome, possible in ((True, can_be_true), (False, can_be_false))
            if possible
        )
    key = _fact_key(test)
    if key is not None:
        values = facts.get(key)
        if values is None or SOME in values:
            return BOTH
        return frozenset(bool(value) for value in values)
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        key = _fact_key(test.left)
        values = facts.get(key) if key is not None else None
        right = _constants(test.comparators[0])
        if values is None or right is None:
            return BOTH
        return frozenset(
            outcome for value in values for outcome in _compare(value, test.ops[0], right)
        )
    return BOTH


def _constants(expr: ast.expr) -> frozenset[object] | None:
    if isinstance(expr, ast.Constant):
        return frozenset({expr.value})
    if isinstance(expr, ast.Tuple | ast.List | ast.Set) and all(
        isinstance(item, ast.Constant) for item in expr.elts
    ):
        return frozenset(item.value for item in expr.elts if isinstance(item, ast.Constant))
    return None


def _compare(value: object, op: ast.cmpop, right: frozenset[object]) -> frozenset[bool]:
    if value is SOME:
        if isinstance(op, ast.Is | ast.IsNot) and right == {None}:
            return frozenset({isinstance(op, ast.IsNot)})
        return BOTH
    if isinstance(op, ast.Eq | ast.Is):
        return frozenset({value in right and len(right) == 1})
    if isinstance(op, ast.NotEq | ast.IsNot):
        return frozenset({not (value in right and len(right) == 1)})
    if isinstance(op, ast.In):
        return frozenset({value in right})
    if isinstance(op, ast.NotIn):
        return frozenset({value not in right})
    return BOTH
