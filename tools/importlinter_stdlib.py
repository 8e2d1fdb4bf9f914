"""An import-linter contract type: these packages import the standard library and little else.

import-linter's `forbidden` contract needs every unwanted package named, so a
new dependency would slip past it.  This contract turns it round: each module
under `source_modules` may import only the standard library, its own package,
and what `allowed_modules` names; anything else (a third-party package, an
adapter of ours, the root package) breaks it.  Registered in pyproject.toml
under `[tool.importlinter] contract_types` as ``stdlib_only``.
"""

from __future__ import annotations

import sys

import grimp
from importlinter import Contract, ContractCheck, fields, output
from importlinter.domain.imports import Module


def _within(module: str, packages: set[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


class StdlibOnlyContract(Contract):
    """Modules under `source_modules` import only the standard library and `allowed_modules`.

    Configuration options:
        - source_modules:  the packages to check (each with its descendants).
        - allowed_modules: other modules (ours or third-party) they may import,
                           each with its descendants. (Optional.)
    """

    type_name = "stdlib_only"

    source_modules = fields.SetField(subfield=fields.ModuleField())
    allowed_modules = fields.SetField(subfield=fields.StringField(), required=False)

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        # The fields hold the parsed values once the contract is built.
        source_modules: set[Module] = self.source_modules  # type: ignore[assignment]
        allowed_modules: set[str] | None = self.allowed_modules  # type: ignore[assignment]
        sources = {m.name for m in source_modules}
        allowed = set(allowed_modules or ())
        for source in sources:
            if source not in graph.modules:
                raise ValueError(f"Module '{source}' does not exist.")
        stdlib = set(sys.stdlib_module_names) | {"__future__"}
        violations: list[tuple[str, str, list[int]]] = []
        for importer in sorted(graph.modules):
            if not _within(importer, sources):
                continue
            for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                if imported.split(".")[0] in stdlib or _within(imported, sources | allowed):
                    continue
                details = graph.get_import_details(importer=importer, imported=imported)
                lines = sorted(d["line_number"] for d in details)
                violations.append((importer, imported, lines))
            output.verbose_print(verbose, f"checked {importer}")
        return ContractCheck(
            kept=not violations,
            metadata={"violations": violations, "allowed": sorted(allowed)},
        )

    def render_broken_contract(self, check: ContractCheck) -> None:
        allowed = ", ".join(check.metadata["allowed"]) or "nothing"
        output.print_error(
            f"Only the standard library, the package itself and {allowed} may be imported:"
        )
        output.new_line()
        for importer, imported, lines in check.metadata["violations"]:
            where = ", ".join(f"l.{n}" for n in lines)
            output.print_error(f"- {importer} -> {imported} ({where})", bold=False)
        output.new_line()
