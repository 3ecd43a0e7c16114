"""The shape of the code: no module of the package imports, directly or through others, a
module that imports it back (type-checking imports included). The layering itself is
checked by import-linter's contracts in pyproject.toml (`make test` runs `lint-imports`)."""

from __future__ import annotations

import grimp


def test_no_import_cycles() -> None:
    graph = grimp.build_graph("gateway", cache_dir=None)
    cycles = sorted(
        {
            tuple(sorted((module, imported)))
            for module in graph.modules
            for imported in graph.find_modules_directly_imported_by(module)
            if graph.find_shortest_chain(importer=imported, imported=module)
        }
    )
    assert cycles == []


def test_every_part_is_a_folder_and_nothing_is_left_outside() -> None:
    graph = grimp.build_graph("gateway", cache_dir=None)
    parts = {"core", "wire", "proxy", "keyring", "store", "admin", "observe", "runtime"}
    top_level = {"gateway", "gateway.__main__", "gateway.cli", "gateway.config"}
    stray = {m for m in graph.modules if m not in top_level and m.split(".")[1] not in parts}
    assert stray == set()
