"""The `attnbench` command line: parse, call one function, render. No logic of its own."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from attnbench.errors import UserError

app = typer.Typer(
    help="Benchmark attention kernels, masks and context-parallel methods for long-context training.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
masks_app = typer.Typer(help="Inspect mask patterns.", no_args_is_help=True)
app.add_typer(masks_app, name="masks")

console = Console()
err_console = Console(stderr=True)

DEFAULT_RESULTS = Path("results")


def _split(values: Optional[List[str]]) -> Optional[list[str]]:
    """Accept both `--kernels a,b` and `--kernels a --kernels b`."""
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _parse_set(items: Optional[List[str]]) -> dict:
    params: dict = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--set {item!r}: use key=value")
        key, _, raw = item.partition("=")
        params[key.strip()] = _scalar(raw.strip())
    return params


def _scalar(raw: str):
    for convert in (int, float):
        try:
            return convert(raw)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(raw.lower(), raw)


# -- list ------------------------------------------------------------------------------
@app.command("list")
def list_command(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    device: Optional[str] = typer.Option(None, help="Device to report availability for (default: cuda if present)."),
) -> None:
    """Kernels (availability, reason, support), masks and CP methods."""
    from attnbench.inventory import inventory

    data = inventory(device)
    if as_json:
        console.print_json(json.dumps(data))
        return
    from attnbench.cli.screens import print_inventory

    print_inventory(console, data)


# -- masks info ------------------------------------------------------------------------
@masks_app.command("info")
def masks_info(
    name: str = typer.Argument(..., help="Mask name (see `attnbench list`)."),
    seqlen: str = typer.Option(..., "--seqlen", "-s", help="Sequence length, e.g. 4096 or 64K."),
    seed: Optional[int] = typer.Option(None, help="Seed for masks that draw documents or prefixes."),
    heads: int = typer.Option(1, help="Heads (block-sparse masks differ per head)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Mask parameter key=value (repeatable)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Slices, area, density and documents of one mask."""
    from attnbench.masks import MASKS, build_mask
    from attnbench.suite import parse_seqlen

    params = _parse_set(set_)
    if seed is not None:
        params["seed"] = seed
    if heads < 1:
        raise UserError("--heads must be >= 1")
    family = MASKS.get(name)
    mask = build_mask(name, parse_seqlen(seqlen), params, heads=heads if family.dynamic else 1)
    info = mask.info()
    if as_json:
        console.print_json(json.dumps(info))
        return
    from attnbench.cli.screens import print_mask_info

    print_mask_info(console, info)


# -- env -------------------------------------------------------------------------------
@app.command("env")
def env_command(as_json: bool = typer.Option(False, "--json")) -> None:
    """The environment block that every run records."""
    import torch

    from attnbench.measure.environment import capture_environment

    env = capture_environment("cuda" if torch.cuda.is_available() else "cpu")
    if as_json:
        console.print_json(json.dumps(env, default=str))
        return
    from attnbench.cli.screens import print_environment

    print_environment(console, env)


# -- validate --------------------------------------------------------------------------
@app.command("validate")
def validate_command(
    suite: Path = typer.Argument(..., help="Suite YAML file."),
    profile: Optional[str] = typer.Option(None, help="Profile of overrides ('none' for none)."),
    kernels: Optional[List[str]] = typer.Option(None, help="Only these kernels (comma-separated)."),
    masks: Optional[List[str]] = typer.Option(None, help="Only these masks."),
    seqlens: Optional[List[str]] = typer.Option(None, help="Only these sequence lengths."),
) -> None:
    """Check a suite: case count, what is unsupported, predicted duration."""
    from attnbench.cli.screens import print_plan
    from attnbench.runner.plan import plan_suite

    loaded = _load(suite, profile, kernels, masks, seqlens)
    print_plan(console, loaded, plan_suite(loaded))


# -- run -------------------------------------------------------------------------------
@app.command("run")
def run_command(
    suite: Path = typer.Argument(..., help="Suite YAML file."),
    out: Path = typer.Option(DEFAULT_RESULTS, "--out", help="Results root; the run goes to OUT/<run-id>/."),
    profile: Optional[str] = typer.Option(None, help="Profile of overrides ('none' for none)."),
    kernels: Optional[List[str]] = typer.Option(None, help="Only these kernels (comma-separated)."),
    masks: Optional[List[str]] = typer.Option(None, help="Only these masks."),
    seqlens: Optional[List[str]] = typer.Option(None, help="Only these sequence lengths."),
) -> None:
    """Run a suite and write results/<run-id>/ (records.jsonl, run.json, tables)."""
    from attnbench.cli.screens import run_with_progress

    loaded = _load(suite, profile, kernels, masks, seqlens)
    run_with_progress(console, loaded, out)


# -- show ------------------------------------------------------------------------------
@app.command("show")
def show_command(
    run: str = typer.Argument("latest", help="Run directory, run id, latest or latest~N."),
    root: Path = typer.Option(DEFAULT_RESULTS, "--root", help="Results root for run ids."),
) -> None:
    """Re-render the tables of a finished run."""
    from attnbench.cli.screens import print_run
    from attnbench.results.store import load_run, resolve_run

    print_run(console, load_run(resolve_run(run, root)))


def _load(suite: Path, profile, kernels, masks, seqlens):
    import torch

    from attnbench.suite import load_suite

    loaded = load_suite(suite, profile=profile, cuda_available=torch.cuda.is_available())
    if kernels or masks or seqlens:
        loaded = loaded.filter(kernels=_split(kernels), masks=_split(masks), seqlens=_split(seqlens))
    return loaded


def main() -> None:
    try:
        code = app(standalone_mode=False)
    except UserError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True, markup=True)
        sys.exit(2)
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        sys.exit(0)
    except (KeyboardInterrupt, typer.Abort):
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        # click's own errors (bad option, missing argument); typer ships its own click copy,
        # so recognise them by their interface rather than their class
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
