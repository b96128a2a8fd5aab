"""A set of loaded packages with lookups by fully qualified identifier."""

from __future__ import annotations

from collections.abc import Iterable

from cairn.ledger.lf.ast import (
    DataType,
    ExceptionDef,
    Identifier,
    Interface,
    Module,
    Package,
    Template,
    TypeSynonym,
    ValueDef,
)
from cairn.ledger.lf.errors import InvalidArgument


class UnknownDefinition(InvalidArgument):
    """A referenced package, module or definition is not loaded."""


class PackageSet:
    """Packages by id; the engine and the codec resolve every identifier through this."""

    def __init__(self, packages: Iterable[Package] = ()) -> None:
        self.packages: dict[str, Package] = {}
        for package in packages:
            self.add(package)

    def add(self, package: Package) -> None:
        self.packages[package.package_id] = package

    def _module(self, ident: Identifier, what: str) -> Module:
        package = self.packages.get(ident.package_id)
        if package is None:
            raise UnknownDefinition(f"Unknown package {ident.package_id} (looking up {what} "
                                    f"{ident})")
        module = package.modules.get(ident.module)
        if module is None:
            raise UnknownDefinition(f"Unknown module {ident.module} in package "
                                    f"{ident.package_id} (looking up {what} {ident})")
        return module

    def data_type(self, ident: Identifier) -> DataType:
        found = self._module(ident, "data type").data_types.get(ident.name)
        if found is None:
            raise UnknownDefinition(f"Unknown data type {ident}")
        return found

    def synonym(self, ident: Identifier) -> TypeSynonym:
        found = self._module(ident, "type synonym").synonyms.get(ident.name)
        if found is None:
            raise UnknownDefinition(f"Unknown type synonym {ident}")
        return found

    def template(self, ident: Identifier) -> Template:
        found = self._module(ident, "template").templates.get(ident.name)
        if found is None:
            raise UnknownDefinition(f"Unknown template {ident}")
        return found

    def find_template(self, ident: Identifier) -> Template | None:
        package = self.packages.get(ident.package_id)
        module = package.modules.get(ident.module) if package else None
        return module.templates.get(ident.name) if module else None

    def interface(self, ident: Identifier) -> Interface:
        found = self._module(ident, "interface").interfaces.get(ident.name)
        if found is None:
            raise UnknownDefinition(f"Unknown interface {ident}")
        return found

    def find_interface(self, ident: Identifier) -> Interface | None:
        package = self.packages.get(ident.package_id)
        module = package.modules.get(ident.module) if package else None
        return module.interfaces.get(ident.name) if module else None

    def exception(self, ident: Identifier) -> ExceptionDef | None:
        package = self.packages.get(ident.package_id)
        module = package.modules.get(ident.module) if package else None
        return module.exceptions.get(ident.name) if module else None

    def value(self, ident: Identifier) -> ValueDef:
        found = self._module(ident, "value").values.get(ident.name)
        if found is None:
            raise UnknownDefinition(f"Unknown value {ident}")
        return found

    def templates(self) -> Iterable[Template]:
        for package in self.packages.values():
            for module in package.modules.values():
                yield from module.templates.values()

    def template_ids(self) -> list[Identifier]:
        """Every template of every loaded package."""
        return [template.name for template in self.templates()]

    def interface_ids(self) -> list[Identifier]:
        """Every interface of every loaded package."""
        return [interface.name for package in self.packages.values()
                for module in package.modules.values()
                for interface in module.interfaces.values()]

    def implemented_interfaces(self, template_id: Identifier) -> list[Identifier]:
        """Interfaces a template implements, including retroactive (co-)implementations
        declared in interface modules."""
        found = list(self.template(template_id).implements)
        for interface_id in self.interface_ids():
            if template_id in self.interface(interface_id).co_implements and \
                    interface_id not in found:
                found.append(interface_id)
        return found
