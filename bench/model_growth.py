"""How big does a model's blob grow? A model of the example spec trained in process on the demo
stream, as the trainer trains it: every ``--copy-every`` examples it learns on from a copy made by
the codec (the blob's own encoding), and every ``--every`` examples the blob size is printed.

    .venv/bin/python bench/model_growth.py                                  # fraud-tree, 1,000,000 examples
    .venv/bin/python bench/model_growth.py --model fraud-tree --max-size 1  # another cap (MiB)
    .venv/bin/python bench/model_growth.py --copy-every 0                   # never copied (river alone)
"""

from __future__ import annotations

import pickle
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from streamwise_core.contracts.appspec import load_app_spec
from streamwise_core.contracts.codec import dumps
from streamwise_core.domain.pipeline import build_model
from streamwise_devstack.fraud import FraudStream

ROOT = Path(__file__).resolve().parents[1]
console = Console()


def _leaves(model: Any) -> str:
    last = list(model.steps.values())[-1] if hasattr(model, "steps") else model
    active, inactive = getattr(last, "_n_active_leaves", None), getattr(last, "_n_inactive_leaves", None)
    return "–" if active is None else f"{active} / {inactive}"


def main(
    model_name: Annotated[str, typer.Option("--model", help="A model of the spec.")] = "fraud-tree",
    spec_path: Annotated[Path, typer.Option("--spec")] = ROOT / "examples" / "fraud" / "lifecycle.toml",
    examples: Annotated[int, typer.Option(min=1)] = 1_000_000,
    every: Annotated[int, typer.Option(min=1, help="Print the blob size every this many examples.")] = 50_000,
    copy_every: Annotated[int, typer.Option(min=0, help="Learn on from a codec copy every this many examples (0: never).")] = 1_000,
    max_size: Annotated[float | None, typer.Option(help="Override the last step's max_size (MiB).")] = None,
) -> None:
    app = load_app_spec(spec_path)
    [spec] = [m for m in (app.model, *app.challengers) if m.name == model_name]
    if max_size is not None:
        steps = list(spec.steps)
        steps[-1] = steps[-1].model_copy(update={"params": {**steps[-1].params, "max_size": max_size}})
        spec = spec.model_copy(update={"steps": tuple(steps)})
    model = build_model(app, spec)
    stream = FraudStream(seed=7, drift_at=20_000)
    table = Table("examples", "blob KB", "leaves active / inactive", "s", title=f"{model_name}: {spec.steps[-1].params}")
    started = time.monotonic()
    with console.status("learning…") as status:
        for k in range(1, examples + 1):
            event = stream.take(1)[0]
            model.learn_one(event.features, event.label)
            if copy_every and k % copy_every == 0:
                model = pickle.loads(dumps(model))  # noqa: S301 - our own bytes
            if k % every == 0:
                table.add_row(f"{k:,}", f"{len(dumps(model)) / 1024:,.0f}", _leaves(model), f"{time.monotonic() - started:.0f}")
                status.update(f"learning… {k:,} / {examples:,}")
    console.print(table)


if __name__ == "__main__":
    typer.run(main)
