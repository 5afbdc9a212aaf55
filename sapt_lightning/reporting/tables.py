"""`python -m sapt_lightning.tables <target> [--smoke] [--seeds 1,2,3] [--sweeps a,b] [--out DIR] [--recipes DIR] [--dry-run] [overrides ...]`

The paper's tables and figures, one command each (`make table1` ... `make fig6`).
A target is a recipe, experiments/recipes/<target>.yaml: a list of Hydra sweeps run in
order (`python -m sapt_lightning -m ...`, single-task references first so that FWT
finds them), then the report over all the runs they wrote. Re-running the same command
resumes: each sweep point keeps its run directory, and finished tasks are not retrained.

The recipes are data so that a table's runs can be read, changed or added to without
reading code; experiments/recipes/README.md gives the format.

`--smoke` takes the recipe's `smoke:` variant: a 2-task synthetic stream with a tiny
backbone and a few steps (`debug=smoke`), so every target's wiring runs on a CPU.
Extra overrides go to every sweep (e.g. `hydra/launcher=slurm`,
`paths.data_dir=/data/CL_Benchmark`).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from ..utils.paths import check_output_dir
from .compare import build_report
from .results import find_results, read_results

#: Where the recipes live in a checkout: experiments/recipes at the repository root.
CHECKOUT_RECIPES = Path(__file__).resolve().parents[2] / "experiments" / "recipes"
RECIPE_KEYS = {"description", "hardware", "wandb_group", "seeds", "unseen_tasks", "sweeps", "smoke"}


class RecipeError(Exception):
    """A recipe that is missing or malformed: main prints it as one line and exits 2."""


@dataclass(frozen=True)
class Sweep:
    name: str  # sub-directory of the target's output
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Recipe:
    """One target's sweeps, as its recipe file gives them (its paper or its smoke variant)."""

    target: str
    description: str
    hardware: str
    seeds: str  # Hydra's sweep syntax, "1,2,3"
    sweeps: tuple[Sweep, ...]
    takes_unseen: bool  # the recipe scores unseen tasks (it has an `unseen_tasks` key)
    unseen_tasks: str | None  # their Hydra list; None: the user must name them
    wandb_group: str | None


def default_recipes_dir() -> Path:
    """The checkout's experiments/recipes, else ./experiments/recipes (an installed package has none)."""
    return CHECKOUT_RECIPES if CHECKOUT_RECIPES.is_dir() else Path("experiments") / "recipes"


def recipe_targets(recipes: Path) -> list[str]:
    """The targets a recipes folder offers: its *.yaml files."""
    return sorted(p.stem for p in recipes.glob("*.yaml")) if recipes.is_dir() else []


def recipe_path(recipes: Path, target: str) -> Path:
    """The target's recipe file; RecipeError names the file it looked for and what is there instead."""
    path = recipes / f"{target}.yaml"
    if path.is_file():
        return path
    if not recipes.is_dir():
        raise RecipeError(
            f"no recipe {path}: no folder {recipes} (pass --recipes DIR, the experiments/recipes "
            "folder of a sapt_lightning checkout)"
        )
    raise RecipeError(f"no recipe {path} (unknown target '{target}'); targets: {', '.join(recipe_targets(recipes))}")


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping with `sweeps` (see {path.parent / 'README.md'})")
    unknown = set(data) - RECIPE_KEYS
    if unknown:
        raise RecipeError(f"{path}: unknown key(s) {sorted(unknown)}; a recipe has {sorted(RECIPE_KEYS)}")
    return data


def _override(value: Any, where: str) -> str:
    """One Hydra override; a bare word (often a comma that YAML split a list at) is refused."""
    if not isinstance(value, str) or not ("=" in value or value.startswith("~")):
        raise RecipeError(
            f"{where}: {value!r} is not a Hydra override (key=value); quote values that hold commas in a [flow, list]"
        )
    return value


def _sweeps(raw: Any, where: str) -> tuple[Sweep, ...]:
    if not isinstance(raw, list) or not raw:
        raise RecipeError(f"{where}: `sweeps` must be a non-empty list of {{name, overrides}}")
    sweeps = []
    for i, item in enumerate(raw):
        here = f"{where}: sweeps[{i}]"
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("name"), str)
            or not isinstance(item.get("overrides"), list)
        ):
            raise RecipeError(f"{here} needs a `name` and a list of `overrides`")
        sweeps.append(Sweep(item["name"], tuple(_override(o, here) for o in item["overrides"])))
    names = [s.name for s in sweeps]
    if len(set(names)) != len(names):
        raise RecipeError(f"{where}: two sweeps share a name (each writes its own folder): {names}")
    return tuple(sweeps)


def _seeds(raw: Any, where: str) -> str:
    if isinstance(raw, list) and raw and all(isinstance(s, int) and not isinstance(s, bool) for s in raw):
        return ",".join(map(str, raw))
    raise RecipeError(f"{where}: `seeds` must be a list of integers, e.g. [1, 2, 3]")


def load_recipe(recipes: Path, target: str, smoke: bool = False) -> Recipe:
    """A target's recipe; with `smoke`, the keys under its `smoke:` replace the top-level ones."""
    path = recipe_path(recipes, target)
    data = _read(path)
    if smoke:
        variant = data.get("smoke")
        if not isinstance(variant, dict):
            raise RecipeError(f"{path}: no `smoke:` variant, so --smoke cannot run this target")
        unknown = set(variant) - (RECIPE_KEYS - {"smoke"})
        if unknown:
            raise RecipeError(f"{path}: unknown key(s) under smoke: {sorted(unknown)}")
        data = {**data, **variant}
    where = f"{path}" + (" (smoke)" if smoke else "")
    unseen = data.get("unseen_tasks")
    group = data.get("wandb_group")
    return Recipe(
        target=target,
        description=str(data.get("description") or target),
        hardware=str(data.get("hardware") or ""),
        seeds=_seeds(data.get("seeds"), where),
        sweeps=_sweeps(data.get("sweeps"), where),
        takes_unseen="unseen_tasks" in data,
        unseen_tasks=None if unseen is None else str(unseen),
        wandb_group=None if group is None else str(group),
    )


def expand(recipe: Recipe, unseen: str | None = None) -> list[Sweep]:
    """The sweeps to run: the recipe's, plus the unseen tasks and W&B group it asks for.

    Unseen tasks name data outside the stream; where the recipe leaves them to the user
    (the paper's are not in CL_Benchmark), running without them would score nothing.
    """
    extra: list[str] = []
    if recipe.wandb_group:
        extra.append(f"logger.wandb.group={recipe.wandb_group}")
    if recipe.takes_unseen:
        tasks = unseen or recipe.unseen_tasks
        if not tasks:
            raise RecipeError(
                f"{recipe.target} ({recipe.description}) scores tasks outside the stream and its recipe "
                "names none: pass them with UNSEEN='[task_a,task_b,...]' (make) or --unseen"
            )
        extra.append(f"eval.unseen_tasks={tasks}")
    return [Sweep(s.name, (*s.overrides, *extra)) for s in recipe.sweeps]


def select_sweeps(sweeps: list[Sweep], names: str | None, recipe: Recipe) -> list[Sweep]:
    """The sweeps named in `names` (comma-separated), in the recipe's order; all when None.

    A recipe too long for one sitting runs in parts into the same --out: the report reads every run there.
    """
    if names is None:
        return sweeps
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = [s.name for s in sweeps]
    unknown = [n for n in wanted if n not in known]
    if unknown or not wanted:
        problem = f"no sweep named {', '.join(unknown)}" if unknown else "names no sweep"
        raise RecipeError(f"--sweeps {names!r}: {problem} in {recipe.target}; its sweeps: {', '.join(known)}")
    return [s for s in sweeps if s.name in wanted]


def sweeps_for(target: str, smoke: bool, unseen: str | None, recipes: Path | None = None) -> list[Sweep]:
    """A target's sweeps as they run (recipes: default_recipes_dir())."""
    return expand(load_recipe(recipes or default_recipes_dir(), target, smoke), unseen)


def sweep_command(sweep: Sweep, out: Path, seeds: str, extra: Sequence[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sapt_lightning",
        "-m",
        *sweep.overrides,
        f"seed={seeds}",
        f"hydra.sweep.dir={out / sweep.name}",
        *extra,
    ]


def _epilog(recipes: Path) -> str:
    """The targets with their descriptions, for --help; a broken recipe is shown as such, not raised."""
    lines = []
    for target in recipe_targets(recipes):
        try:
            lines.append(f"{target}: {load_recipe(recipes, target).description}")
        except RecipeError:
            lines.append(f"{target}: (recipe does not load)")
    return f"targets (recipes in {recipes}): " + ("; ".join(lines) if lines else "none found")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    recipes = default_recipes_dir()
    parser = argparse.ArgumentParser(
        prog="python -m sapt_lightning.tables",
        description="Run the sweeps of one of the paper's tables or figures, then the report.",
        epilog=_epilog(recipes),
    )
    parser.add_argument("target", help="a recipe name: " + (", ".join(recipe_targets(recipes)) or "see --recipes"))
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="the recipe's smoke variant: tiny backbone, 2 synthetic tasks, a few steps (CPU)",
    )
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the recipe's)")
    parser.add_argument("--out", type=Path, default=None, help="default logs/tables/<target>[-smoke]")
    parser.add_argument("--unseen", default=None, help="table3: unseen tasks as a Hydra list, e.g. '[task_a,task_b]'")
    parser.add_argument(
        "--recipes", type=Path, default=recipes, help=f"folder of <target>.yaml recipes (default {recipes})"
    )
    parser.add_argument(
        "--record",
        type=Path,
        default=None,
        help="also copy the report, SAPT's attention plots and the provenance (date, commit, machine, wall time) here",
    )
    parser.add_argument(
        "--sweeps",
        default=None,
        help="run only these of the recipe's sweeps (comma-separated names); the report still covers every run under --out",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides passed to every sweep")
    # intermixed: `make` passes the flags between the target and the overrides (tables T --smoke a=b)
    return parser.parse_intermixed_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        recipe = load_recipe(args.recipes, args.target, args.smoke)
        sweeps = select_sweeps(expand(recipe, args.unseen), args.sweeps, recipe)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    seeds = args.seeds or recipe.seeds
    out = args.out or Path("logs") / "tables" / (args.target + ("-smoke" if args.smoke else ""))
    try:
        check_output_dir("--out", out)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if recipe.hardware:
        print(f"{args.target} needs: {recipe.hardware}", file=sys.stderr, flush=True)
    commands = [sweep_command(s, out, seeds, args.overrides) for s in sweeps]
    started = time.time()
    for command in commands:
        print("$ python " + shlex.join(command[1:]), flush=True)
        if args.dry_run:
            continue
        code = subprocess.call(command)
        if code != 0:
            print(
                f"error: this sweep failed (exit {code}); finished runs are kept - fix the cause and re-run "
                f"the same command to resume",
                file=sys.stderr,
            )
            return code
    if args.dry_run:
        return 0
    try:
        table, paths = build_report([out], out)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"\n{recipe.description} ({'smoke' if args.smoke else 'paper setting'}, seeds {seeds}):\n{table}")
    print(f"wrote {paths['md']}, {paths['csv'].name}, {paths['png'].name}")
    if args.record:
        where = record(out, args.record, paths, time.time() - started, [args.target, *(argv or sys.argv[2:])])
        print(f"recorded in {where}")
    return 0


def _commit() -> str:
    """The checkout's commit (with '+changes' when the tree differs from it), or 'unknown'."""
    root = CHECKOUT_RECIPES.parents[1]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha.stdout.strip()[:12] + ("+changes" if dirty.stdout.strip() else "")


def _machine() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    model = names[0] if names else platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores, {platform.system()}"


def record(out: Path, where: Path, paths: dict[str, Path], wall_s: float, command: list[str]) -> Path:
    """Copy the report and every SAPT run's test attention plot to `where`, with a provenance note."""
    where.mkdir(parents=True, exist_ok=True)
    for path in paths.values():
        shutil.copy2(path, where / path.name)
    plots = []
    found = find_results(out)
    for results in found:
        try:
            data = read_results(results)
        except ValueError:  # already reported by the report, which skipped it
            continue
        plot = results.parent / "attention_test.png"
        if data.get("method") != "sapt" or data.get("ablations") or not plot.is_file():
            continue
        config = data.get("config", {})
        stream = f"{data['benchmark']}-{(config.get('backbone') or {}).get('name', '')}-seed{data['seed']}"
        shutil.copy2(plot, where / f"attention_{stream}.png")
        plots.append(f"attention_{stream}.png")
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    note = [
        "# Provenance",
        "",
        f"- recorded: {stamp}",
        f"- commit: {_commit()}",
        f"- machine: {_machine()}",
        f"- command: `python -m sapt_lightning.tables {shlex.join(command)}`",
        f"- wall time of this command: {wall_s / 3600:.2f} h ({len(found)} runs under `{out}`; runs finished "
        "by an earlier, interrupted command are not counted again)",
        "- files: " + ", ".join([p.name for p in paths.values()] + plots),
        "",
    ]
    (where / "provenance.md").write_text("\n".join(note), encoding="utf-8")
    return where


if __name__ == "__main__":
    raise SystemExit(main())
