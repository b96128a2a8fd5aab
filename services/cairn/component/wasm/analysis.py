"""Evaluates a decoded component to find what it exports, with full WIT types.

The component model keeps exports, types and resources in per-scope index spaces; tools such as
wit-component re-export an interface's functions through a nested "shim" component that is
instantiated with the real lifted functions. To see through that, this module evaluates the
definitions the way a linker would:

* every component (and instance/component type) scope has its own type, func, instance,
  component and value index spaces; outer aliases walk out through both kinds of scope;
* `instantiate` re-evaluates the nested component body with its imports bound to the `with`
  arguments, so the instance's exports are the nested component's exports;
* an unbound instance import is materialised from its instance type, each import with its
  own abstract resources;
* export ascriptions (`(export "f" (func 3) (func (type 9)))`) give the exported function the
  ascribed type, which refers to the named types the shim exports ("product-item", ...).

Types are resolved eagerly into small immutable nodes; names come from type imports and exports.
Resource identity is an object; ids are numbered in the order the export analysis meets them.
"""

from __future__ import annotations

from typing import Any

from .binary import ComponentBody, Syntax, ValType
from .errors import analysis_error
from .model import (
    EnumType,
    Export,
    ExportedFunction,
    ExportedInstance,
    FlagsType,
    FunctionParameter,
    FunctionResult,
    HandleType,
    ListType,
    OptionType,
    PrimitiveType,
    RecordField,
    RecordType,
    ResultType,
    TupleType,
    VariantCase,
    VariantType,
    WitType,
)

# Guards against small inputs that would cost a lot: components instantiated combinatorially,
# types shared so often that their JSON explodes (t2 = tuple<t1, t1>, ...), or nested so deep
# that rendering them recurses past Python's limit. Real components stay far below these.
# Work is counted in definitions, declarations, fields, cases and parameters evaluated; the
# largest fixture (a composed component) needs about 1,600.
MAX_EVALUATED_DEFINITIONS = 250_000
MAX_EXPORTED_TYPE_NODES = 100_000
MAX_TYPE_DEPTH = 100


class Resource:
    """The identity of one resource type; `name` is the first name it was given."""

    __slots__ = ("name",)

    def __init__(self, name: str | None) -> None:
        self.name = name


class ResourceRef:
    """A type index that denotes a resource, under the name it has at that index."""

    __slots__ = ("name", "resource")

    def __init__(self, resource: Resource, name: str | None) -> None:
        self.resource = resource
        self.name = name


class ValueType:
    """A resolved value type: `kind` as in WIT, `args` its parts, `name` its WIT name if any.

    args by kind: prim -> primitive name; list/option -> ValueType; result -> (ok, err);
    tuple -> tuple of ValueType; record -> ((label, ValueType), ...); variant -> ((label,
    ValueType | None), ...); enum/flags -> labels; own/borrow -> (Resource, name);
    unsupported -> the WIT kind (stream, future, error-context, map).
    """

    __slots__ = ("args", "kind", "name")

    def __init__(self, kind: str, args: Any, name: str | None = None) -> None:
        self.kind = kind
        self.args = args
        self.name = name


class FuncType:
    __slots__ = ("params", "results")

    def __init__(
        self,
        params: tuple[tuple[str, ValueType], ...],
        results: tuple[tuple[str | None, ValueType], ...],
    ) -> None:
        self.params = params
        self.results = results


# An instance is its exports: name -> (sort, item).
Instance = dict[str, tuple[str, Any]]


class DeclaredType:
    """An instance or component type: its declarations, evaluated once at definition.

    Each import (or instantiation) of the type must see its own abstract resources, so only
    the first use takes `exports` as evaluated; later uses evaluate the declarations again.
    """

    __slots__ = ("decls", "exports", "imports", "scope", "used")

    def __init__(self, decls: list[Syntax], scope: Scope, imports: Instance, exports: Instance):
        self.decls = decls
        self.scope = scope
        self.imports = imports
        self.exports = exports
        self.used = False


class InstanceType(DeclaredType):
    __slots__ = ()


class ComponentType(DeclaredType):
    __slots__ = ()


class ComponentDefinition:
    """A nested component: its body plus the scope its outer aliases see."""

    __slots__ = ("body", "parent")

    def __init__(self, body: ComponentBody, parent: Scope) -> None:
        self.body = body
        self.parent = parent


class Scope:
    """The index spaces of one component or type scope (core sorts are not needed)."""

    __slots__ = ("components", "funcs", "instances", "parent", "types", "values")

    def __init__(self, parent: Scope | None) -> None:
        self.parent = parent
        self.types: list[Any] = []
        self.funcs: list[FuncType] = []
        self.instances: list[Instance] = []
        self.components: list[ComponentDefinition | ComponentType] = []
        self.values = 0


PRIMITIVES: dict[str, ValueType] = {
    kind: ValueType("prim", kind)
    for kind in (
        "bool",
        "s8",
        "u8",
        "s16",
        "u16",
        "s32",
        "u32",
        "s64",
        "u64",
        "f32",
        "f64",
        "char",
        "string",
    )
}
PRIMITIVES["error-context"] = ValueType("unsupported", "error-context")

SPACE_NAMES = {
    "type": "type",
    "func": "function",
    "instance": "instance",
    "component": "component",
    "value": "value",
}


def named(item: Any, name: str) -> Any:
    """The same type under a (new) WIT name; resources keep their identity."""
    if isinstance(item, ValueType):
        return ValueType(item.kind, item.args, name)
    if isinstance(item, ResourceRef):
        if item.resource.name is None:
            item.resource.name = name
        return ResourceRef(item.resource, name)
    return item


class Evaluator:
    """Evaluates component bodies; one instance per analysed binary."""

    def __init__(self) -> None:
        self.work = 0

    def charge(self, definitions: int) -> None:
        """Counts evaluated definitions: instantiations and type re-evaluations repeat work."""
        self.work += definitions
        if self.work > MAX_EVALUATED_DEFINITIONS:
            raise analysis_error(
                "the component needs too much work to analyse: it instantiates nested "
                "components or imports instance types too many times"
            )

    # -- component bodies ------------------------------------------------------------------

    def evaluate(
        self, body: ComponentBody, parent: Scope | None, args: Instance | None
    ) -> Instance:
        self.charge(len(body.items) + 1)
        scope = Scope(parent)
        exports: Instance = {}
        for item in body.items:
            kind = item[0]
            if kind == "type":
                scope.types.append(self.deftype(item[2], scope, item[1]))
            elif kind == "import":
                _, offset, name, extern = item
                bound = args.get(name) if args is not None else None
                self.add_import(scope, name, extern, bound, offset)
            elif kind == "export":
                self.add_export(scope, exports, item)
            elif kind == "alias":
                self.alias(scope, item[2], item[1])
            elif kind == "instance":
                scope.instances.append(self.instance(scope, item))
            elif kind == "lift":
                scope.funcs.append(self.func_type(scope, item[2], item[1]))
            elif kind == "component":
                scope.components.append(ComponentDefinition(item[2], scope))
            elif kind == "values":
                scope.values += item[2]
        return exports

    def add_import(
        self,
        scope: Scope,
        name: str,
        extern: Syntax,
        bound: tuple[str, Any] | None,
        offset: int,
    ) -> None:
        sort, declared = self.declared_item(scope, name, extern, offset)
        if bound is not None and bound[0] != sort:
            raise analysis_error(
                f"import {name!r} expects a {SPACE_NAMES.get(sort, sort)} "
                f"but was given a {SPACE_NAMES.get(bound[0], bound[0])}",
                offset,
            )
        item = declared
        # The argument's identity matters for instances, types (resources) and components;
        # a function keeps its declared type, whose types refer to the bound ones anyway.
        if bound is not None and sort in ("instance", "component"):
            item = bound[1]
        elif bound is not None and sort == "type":
            item = named(bound[1], name)
        if sort != "module":
            self.push(scope, sort, item)

    def add_export(self, scope: Scope, exports: Instance, item: Syntax) -> None:
        _, offset, name, sort, index, ascription = item
        if sort == "core":
            return
        value = self.lookup(scope, sort, index, offset)
        if ascription is not None:
            ascribed_sort, ascribed = self.declared_item(scope, name, ascription, offset)
            if ascribed_sort != sort:
                raise analysis_error(
                    f"export {name!r} is a {SPACE_NAMES[sort]} but is ascribed a "
                    f"{SPACE_NAMES.get(ascribed_sort, ascribed_sort)} type",
                    offset,
                )
            if sort == "func" or (sort == "type" and ascription[0] == "type-eq"):
                value = ascribed
        if sort == "type":
            value = named(value, name)
        self.push(scope, sort, value)
        exports[name] = (sort, value)

    def instance(self, scope: Scope, item: Syntax) -> Instance:
        offset = item[1]
        if item[2] == "exports":
            exports: Instance = {}
            for name, sort, index in item[3]:
                if sort == "core":
                    continue
                value = self.lookup(scope, sort, index, offset)
                exports[name] = (sort, named(value, name) if sort == "type" else value)
            return exports
        component = self.get(scope.components, item[3], "component", offset)
        args: Instance = {}
        for name, sort, index in item[4]:
            if sort != "core":
                args[name] = (sort, self.lookup(scope, sort, index, offset))
        if isinstance(component, ComponentType):
            return self.fresh_exports(component)
        return self.evaluate(component.body, component.parent, args)

    def alias(self, scope: Scope, alias: Syntax, offset: int) -> None:
        target, sort = alias[0], alias[1]
        if target == "core-export":  # the decoder drops the well-formed ones
            raise analysis_error("a core export alias must have a core sort", offset)
        if sort == "core":
            return  # core sorts live in core index spaces, which metadata does not need
        if target == "export":
            instance = self.get(scope.instances, alias[2], "instance", offset)
            entry = instance.get(alias[3])
            if entry is None:
                raise analysis_error(
                    f"instance {alias[2]} has no export named {alias[3]!r}", offset
                )
            if entry[0] != sort:
                raise analysis_error(
                    f"export {alias[3]!r} of instance {alias[2]} is not a {SPACE_NAMES[sort]}",
                    offset,
                )
            self.push(scope, sort, entry[1])
            return
        count, index = alias[2], alias[3]
        if sort not in ("type", "component"):
            raise analysis_error(f"an outer alias cannot refer to a {SPACE_NAMES[sort]}", offset)
        outer: Scope | None = scope
        for _ in range(count):
            outer = outer.parent if outer is not None else None
        if outer is None:
            raise analysis_error(f"outer alias count {count} is out of bounds", offset)
        self.push(scope, sort, self.lookup(outer, sort, index, offset))

    # -- index spaces ----------------------------------------------------------------------

    @staticmethod
    def get(space: list[Any], index: int, what: str, offset: int) -> Any:
        if index >= len(space):
            raise analysis_error(
                f"unknown {what} {index}: {what} index out of bounds ({len(space)} defined)",
                offset,
            )
        return space[index]

    def lookup(self, scope: Scope, sort: str, index: int, offset: int) -> Any:
        if sort == "type":
            return self.get(scope.types, index, "type", offset)
        if sort == "func":
            return self.get(scope.funcs, index, "function", offset)
        if sort == "instance":
            return self.get(scope.instances, index, "instance", offset)
        if sort == "component":
            return self.get(scope.components, index, "component", offset)
        if index >= scope.values:
            raise analysis_error(f"unknown value {index}: value index out of bounds", offset)
        return None

    @staticmethod
    def push(scope: Scope, sort: str, item: Any) -> None:
        if sort == "type":
            scope.types.append(item)
        elif sort == "func":
            scope.funcs.append(item)
        elif sort == "instance":
            scope.instances.append(item)
        elif sort == "component":
            scope.components.append(item)
        elif sort == "value":
            scope.values += 1

    # -- types -----------------------------------------------------------------------------

    def declared_item(
        self, scope: Scope, name: str, extern: Syntax, offset: int
    ) -> tuple[str, Any]:
        """The sort and item an import/export declaration of this extern type denotes."""
        tag = extern[0]
        if tag == "func":
            return "func", self.func_type(scope, extern[1], offset)
        if tag == "type-eq":
            return "type", named(self.get(scope.types, extern[1], "type", offset), name)
        if tag == "type-sub":
            return "type", ResourceRef(Resource(name), name)
        if tag == "instance":
            instance_type = self.get(scope.types, extern[1], "type", offset)
            if not isinstance(instance_type, InstanceType):
                raise analysis_error(f"type {extern[1]} is not an instance type", offset)
            return "instance", self.fresh_exports(instance_type)
        if tag == "component":
            component_type = self.get(scope.types, extern[1], "type", offset)
            if not isinstance(component_type, ComponentType):
                raise analysis_error(f"type {extern[1]} is not a component type", offset)
            return "component", component_type
        if tag == "value":
            return "value", None
        return "module", None

    def func_type(self, scope: Scope, index: int, offset: int) -> FuncType:
        func_type = self.get(scope.types, index, "type", offset)
        if not isinstance(func_type, FuncType):
            raise analysis_error(f"type {index} is not a function type", offset)
        return func_type

    def valtype(self, valtype: ValType, scope: Scope, offset: int) -> ValueType:
        if isinstance(valtype, str):
            return PRIMITIVES[valtype]
        types = scope.types
        if valtype >= len(types):
            self.get(types, valtype, "type", offset)  # raises the out-of-bounds error
        resolved = types[valtype]
        if not isinstance(resolved, ValueType):
            raise analysis_error(f"type {valtype} is not a value type", offset)
        return resolved

    def deftype(self, syntax: Syntax, scope: Scope, offset: int) -> Any:
        kind = syntax[0]
        if kind in ("record", "variant", "tuple", "enum", "flags"):
            self.work += len(syntax[1])
        elif kind == "func":
            self.work += len(syntax[1]) + len(syntax[2])
        if kind == "prim":
            return PRIMITIVES[syntax[1]]
        if kind in ("list", "option"):
            return ValueType(kind, self.valtype(syntax[1], scope, offset))
        if kind == "record":
            return ValueType(
                kind, tuple((label, self.valtype(t, scope, offset)) for label, t in syntax[1])
            )
        if kind == "variant":
            return ValueType(
                kind,
                tuple(
                    (label, None if t is None else self.valtype(t, scope, offset))
                    for label, t in syntax[1]
                ),
            )
        if kind == "tuple":
            return ValueType(kind, tuple(self.valtype(t, scope, offset) for t in syntax[1]))
        if kind in ("enum", "flags"):
            return ValueType(kind, tuple(syntax[1]))
        if kind == "result":
            ok, err = syntax[1], syntax[2]
            return ValueType(
                kind,
                (
                    None if ok is None else self.valtype(ok, scope, offset),
                    None if err is None else self.valtype(err, scope, offset),
                ),
            )
        if kind in ("own", "borrow"):
            resource = self.get(scope.types, syntax[1], "type", offset)
            if not isinstance(resource, ResourceRef):
                raise analysis_error(
                    f"{kind} handle refers to type {syntax[1]}, which is not a resource", offset
                )
            return ValueType(kind, (resource.resource, resource.name))
        if kind == "unsupported":
            return ValueType(kind, syntax[1])
        if kind == "resource":
            return ResourceRef(Resource(None), None)
        if kind == "func":
            return FuncType(
                tuple((label, self.valtype(t, scope, offset)) for label, t in syntax[1]),
                tuple((label, self.valtype(t, scope, offset)) for label, t in syntax[2]),
            )
        imports, exports = self.type_scope(syntax[1], scope)
        if kind == "instance-type":
            return InstanceType(syntax[1], scope, imports, exports)
        return ComponentType(syntax[1], scope, imports, exports)

    def fresh_exports(self, declared: DeclaredType) -> Instance:
        """The exports of one use of an instance/component type, with its own resources."""
        if not declared.used:
            declared.used = True
            return declared.exports
        return self.type_scope(declared.decls, declared.scope)[1]

    def type_scope(self, decls: list[Syntax], scope: Scope) -> tuple[Instance, Instance]:
        self.charge(len(decls) + 1)
        inner = Scope(scope)
        imports: Instance = {}
        exports: Instance = {}
        for decl in decls:
            kind, offset = decl[0], decl[1]
            if kind == "type":
                inner.types.append(self.deftype(decl[2], inner, offset))
            elif kind == "alias":
                self.alias(inner, decl[2], offset)
            else:
                name = decl[2]
                sort, item = self.declared_item(inner, name, decl[3], offset)
                self.push(inner, sort, item)
                (imports if kind == "import" else exports)[name] = (sort, item)
        return imports, exports


class Unsupported(Exception):
    """An exported function uses a type the metadata model cannot represent."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def children(node: ValueType) -> tuple[ValueType, ...]:
    """The value types directly inside `node`."""
    kind, args = node.kind, node.args
    if kind in ("list", "option"):
        return (args,)
    if kind == "tuple":
        return tuple(args)
    if kind == "result":
        return tuple(t for t in args if t is not None)
    if kind in ("record", "variant"):
        return tuple(t for _, t in args if t is not None)
    return ()


class Converter:
    """Turns resolved types into the public model, numbering resources in first-seen order."""

    def __init__(self) -> None:
        self.resource_ids: dict[Resource, int] = {}
        # id(node) -> (converted type, nodes in its expanded tree, depth of that tree)
        self.memo: dict[int, tuple[WitType, int, int]] = {}
        self.expanded_nodes = 0

    def function(self, name: str, func: FuncType) -> ExportedFunction:
        params = tuple(FunctionParameter(label, self.convert(t)) for label, t in func.params)
        results = tuple(FunctionResult(label, self.convert(t)) for label, t in func.results)
        for _, typ in func.params + func.results:
            self.expanded_nodes += self.memo[id(typ)][1]
        if self.expanded_nodes > MAX_EXPORTED_TYPE_NODES:
            raise analysis_error(
                f"the exported types are too large (over {MAX_EXPORTED_TYPE_NODES} type nodes "
                f"once expanded, reached at function {name!r})"
            )
        return ExportedFunction(name, params, results)

    def convert(self, node: ValueType) -> WitType:
        return self.measure(node)[0]

    def measure(self, node: ValueType) -> tuple[WitType, int, int]:
        cached = self.memo.get(id(node))
        if cached is not None:
            return cached
        # Children first (memoised), so the size and depth of this tree are known cheaply.
        size, depth = 1, 1
        for child in children(node):
            _, child_size, child_depth = self.measure(child)
            size += child_size
            depth = max(depth, child_depth + 1)
        if depth > MAX_TYPE_DEPTH:
            raise analysis_error(f"an exported type is nested deeper than {MAX_TYPE_DEPTH} levels")
        measured = (self.build(node), size, depth)
        self.memo[id(node)] = measured
        return measured

    def build(self, node: ValueType) -> WitType:
        kind, args, name = node.kind, node.args, node.name
        if kind == "prim":
            return PrimitiveType(args, name)
        if kind == "list":
            return ListType(self.convert(args), name)
        if kind == "option":
            return OptionType(self.convert(args), name)
        if kind == "result":
            ok, err = args
            return ResultType(
                None if ok is None else self.convert(ok),
                None if err is None else self.convert(err),
                name,
            )
        if kind == "tuple":
            return TupleType(tuple(self.convert(t) for t in args), name)
        if kind == "record":
            return RecordType(tuple(RecordField(n, self.convert(t)) for n, t in args), name)
        if kind == "variant":
            return VariantType(
                tuple(VariantCase(n, None if t is None else self.convert(t)) for n, t in args),
                name,
            )
        if kind == "enum":
            return EnumType(args, name)
        if kind == "flags":
            return FlagsType(args, name)
        if kind in ("own", "borrow"):
            resource, resource_name = args
            resource_id = self.resource_ids.setdefault(resource, len(self.resource_ids))
            return HandleType(
                resource_id,
                "Owned" if kind == "own" else "Borrowed",
                resource_name or resource.name,
                name,
            )
        raise Unsupported(args)


def analyse_exports(body: ComponentBody) -> tuple[tuple[Export, ...], tuple[str, ...]]:
    """The root component's exported interfaces and functions, plus warnings for skipped ones."""
    try:
        root_exports = Evaluator().evaluate(body, None, None)
    except RecursionError:
        raise analysis_error("types or components are nested too deeply") from None
    converter = Converter()
    exports: list[Export] = []
    warnings: list[str] = []
    for name, (sort, item) in root_exports.items():
        if sort not in ("instance", "func"):
            continue
        saved_ids = dict(converter.resource_ids)
        try:
            if sort == "func":
                exports.append(converter.function(name, item))
            else:
                functions = tuple(
                    converter.function(function_name, function)
                    for function_name, (function_sort, function) in item.items()
                    if function_sort == "func"
                )
                exports.append(ExportedInstance(name, functions))
        except Unsupported as unsupported:
            converter.resource_ids = saved_ids
            converter.memo.clear()
            warnings.append(
                f"export {name!r} was skipped: it uses the type {unsupported.kind!r}, "
                "which component metadata cannot represent"
            )
        except RecursionError:
            raise analysis_error(f"the types of export {name!r} are nested too deeply") from None
    return tuple(exports), tuple(warnings)
