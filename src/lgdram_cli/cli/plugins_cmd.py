"""`lgdram plugins` (what is registered, from where) and `lgdram schema` (JSON Schemas)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from lgdram_cli.cli.common import out


def plugins(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """List every dataset, model, loss and logger entry: name, providing distribution, description."""
    from lgdram_cli.data.presets import describe, presets
    from lgdram_cli.registry import REGISTRIES

    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for registry in REGISTRIES:
        for entry in registry.entries():
            description = entry.description  # loads the entry; records a failure as entry.error
            rows.append(
                {
                    "kind": registry.kind,
                    "name": entry.name,
                    "distribution": entry.dist,
                    "version": entry.dist_version,
                    "description": description,
                    "ok": entry.error is None,
                    "error": entry.error,
                }
            )
            if entry.error and not any(p.startswith(f"{registry.kind} '{entry.name}':") for p in registry.problems):
                problems.append(f"{registry.kind} '{entry.name}' from '{entry.origin}': {entry.error}")
        problems.extend(registry.problems)
    for name, path in presets().items():
        rows.append(
            {"kind": "preset", "name": name, "distribution": "lgdram", "version": "", "description": describe(path), "ok": True, "error": None}
        )
    if as_json:
        out.print_json(json.dumps({"entries": rows, "problems": problems}))
        return
    from rich.table import Table

    table = Table(title="lgdram plugins", show_lines=False)
    for col in ("kind", "name", "distribution", "description"):
        table.add_column(col)
    for r in rows:
        dist = f"{r['distribution']} {r['version']}".strip()
        desc = r["description"] if r["ok"] else f"[red]{r['description']}[/]"
        table.add_row(r["kind"], r["name"], dist, desc)
    out.print(table)
    for p in problems:
        out.print(f"[yellow]problem:[/] {p}")


def schema(
    command: Annotated[str, typer.Argument(help="Which spec: gen-data or train.")],
) -> None:
    """Print the JSON Schema of a command's run spec."""
    from lgdram_cli.errors import unknown_name

    builders = {"gen-data": _gen_data_schema}
    try:
        from lgdram_cli.training.spec import train_schema

        builders["train"] = train_schema
    except ModuleNotFoundError:
        pass
    if command not in builders:
        raise unknown_name("spec", command, builders)
    out.print_json(json.dumps(builders[command]()))


def dataset_schema() -> dict[str, Any]:
    """A oneOf over every usable generator's Config schema (the `type` picks one)."""
    from lgdram_cli.registry import DATASETS

    return {"oneOf": [cls.Config.model_json_schema() for cls in DATASETS.usable().values()]}


def _gen_data_schema() -> dict[str, Any]:
    from lgdram_cli.data.gen import GenDataSpec

    s = GenDataSpec.model_json_schema()
    s["properties"]["dataset"] = dataset_schema()
    return s


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins)
    app.command("schema")(schema)
