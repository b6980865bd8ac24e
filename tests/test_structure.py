"""The structure the code promises in ARCHITECTURE.md: imports run one way, every config file parses, and the
private Lightning APIs the code relies on are still there."""

import ast
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "lightning_diffusion"

# Fragments are composed after a full config (their header says which); they parse only on top of it.
FRAGMENT_BASES = {
    "benchmarks/mnist_5k_cpu.yaml": "mnist_cond.yaml",
    "benchmarks/mnist_cond_cpu.yaml": "mnist_cond.yaml",
    "experiments/exp_001/cosine.yaml": "mnist.yaml",
    "experiments/exp_001/mnist_5k.yaml": "mnist.yaml",
    "logger/wandb.yaml": "moons.yaml",
    "metrics/inception.yaml": "celeb_cond.yaml",
    "metrics/mnist_classifier.yaml": "mnist_cond.yaml",
    "trainer/ddp.yaml": "mnist_cond.yaml",
    **{
        f"experiments/exp_002/{name}.yaml": "moons.yaml"
        for name in ("eps_min_snr", "eps_uniform", "v_min_snr", "v_uniform", "x0_min_snr", "x0_uniform")
    },
    "experiments/exp_003/moons_vp.yaml": "moons.yaml",
    "experiments/exp_003/moons_edm.yaml": "moons_edm.yaml",
    "experiments/exp_003/moons_flow.yaml": "moons_flow.yaml",
    # over the CPU fragments of configs/benchmarks/ too; their bases train through the CLI in test_configs and
    # test_formulations
    "experiments/exp_003/mnist_vp.yaml": "mnist_cond.yaml",
    "experiments/exp_003/mnist_edm.yaml": "mnist_cond_edm.yaml",
    "experiments/exp_003/mnist_flow.yaml": "mnist_cond_flow.yaml",
    "experiments/exp_005/mnist_edm.yaml": "mnist_cond_edm.yaml",
    "experiments/exp_006/moons_edm.yaml": "moons_edm.yaml",
    "experiments/exp_006/moons_edm_wide_sigmas.yaml": "moons_edm.yaml",
    "experiments/exp_006/moons_edm_p_mean_low.yaml": "moons_edm.yaml",
    "experiments/exp_006/moons_edm_p_mean_high.yaml": "moons_edm.yaml",
    "experiments/exp_004/unet.yaml": "mnist_cond_flow.yaml",
    "experiments/exp_004/dit.yaml": "mnist_cond_dit.yaml",
}
# The fragments that change what is trained (exp_003's only name the run or shorten it: parsing them is enough)
TRAINED_FRAGMENTS = sorted(f for f in FRAGMENT_BASES if f.startswith("experiments/") and "/exp_003/" not in f)


def imports_of(path: Path) -> set[str]:
    """The lightning_diffusion modules a file imports (at any depth, inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lightning_diffusion"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("lightning_diffusion"))
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in files and m != name} for name, path in files.items()}


# The layers of ARCHITECTURE.md: what each package (or top-level module) may import besides the base modules
BASE = {"checkpoints", "errors", "lightning_private", "loggers", "optim", "plotting", "runs"}
ALLOWED = {
    "__init__": {"model", "metrics"},
    "__main__": {"cli", "tools"},
    "cli": {"callbacks", "data", "model"},
    "tools": {"cli", "data", "formulations", "metrics", "model"},
    "callbacks": {"formulations"},
    "model": {"formulations", "metrics"},
    "metrics": set(),
    "data": set(),
    "denoisers": set(),
    "formulations": set(),
    **{name: BASE for name in BASE},
}


def part(module: str) -> str:
    """The package or top-level module of lightning_diffusion that `module` belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_package_imports_only_its_lower_layers():
    graph = import_graph()
    assert {part(name) for name in graph} == set(ALLOWED), "a package or top-level module is not in ALLOWED"
    wrong = sorted(
        f"{name} imports {target}"
        for name, targets in graph.items()
        for target in targets
        if part(target) != part(name) and part(target) not in ALLOWED[part(name)] | BASE
    )
    assert not wrong, wrong


def test_the_package_has_no_import_cycle():
    graph, state, cycles = import_graph(), {}, []

    def visit(node, stack):
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    # a package's __init__ importing its own modules is not a cycle of ideas
    cycles = [c for c in cycles if not all(m.startswith(c[0]) or c[0].startswith(m) for m in c)]
    assert not cycles, f"import cycles: {cycles}"


def test_the_math_and_the_plots_are_pure():
    for path in ("formulations/ddpm.py", "metrics/distances.py", "plotting.py"):
        tree = ast.parse((PACKAGE / path).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not {m for m in imported if m.startswith(("lightning", "lightning_diffusion"))}, (path, imported)


def test_the_top_level_holds_few_modules_and_no_file_is_long():
    top = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(top) <= 8, top
    long = {str(p.relative_to(REPO)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 300}
    assert not long, long


def test_no_test_file_is_over_300_lines():
    tests = REPO / "tests"
    long = {str(p.relative_to(REPO)): n for p in tests.rglob("*.py") if (n := len(p.read_text().splitlines())) > 300}
    assert not long, long


def test_no_import_inside_a_function_but_optional_heavy_dependencies():
    allowed = {"datasets", "litdata", "litdata.streaming.downloader", "torchmetrics.image.fid"}  # optional or heavy
    for path in PACKAGE.rglob("*.py"):
        for function in ast.walk(ast.parse(path.read_text())):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                        assert set(names) <= allowed, (
                            f"{path.name}:{node.lineno} imports {names} inside {function.name}"
                        )


@pytest.mark.parametrize("fragment", sorted(FRAGMENT_BASES), ids=str)
def test_every_fragment_parses_over_its_base(run_cli, capsys, fragment):
    configs = REPO / "configs"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(
            "fit",
            "--config",
            str(configs / FRAGMENT_BASES[fragment]),
            "--config",
            str(configs / fragment),
            "--print_config",
        )
    assert exit_info.value.code == 0, capsys.readouterr().err[-2000:]


def test_every_config_file_is_covered():
    configs = REPO / "configs"
    files = {str(p.relative_to(configs)) for p in configs.rglob("*.yaml")}
    full = {p.name for p in configs.glob("*.yaml")}
    assert files == full | set(FRAGMENT_BASES) | {"sweeps/moons_lr.yaml"}


def test_the_sweep_sets_only_real_options(run_cli, capsys):
    import yaml

    sweep = yaml.safe_load((REPO / "configs/sweeps/moons_lr.yaml").read_text())
    assert sweep["program"] == "lightning_diffusion"
    args = [arg for key, spec in sweep["parameters"].items() for arg in (f"--{key}", str(spec["values"][0]))]
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", str(REPO / "configs/moons.yaml"), *args, "--print_config")
    assert exit_info.value.code == 0, capsys.readouterr().err[-2000:]


def test_the_private_lightning_apis_we_use_are_still_there():
    from lightning_diffusion import lightning_private

    lightning_private.check()  # one sentence naming what moved, if Lightning changed one of them


@pytest.mark.parametrize("fragment", TRAINED_FRAGMENTS, ids=str)
def test_every_composed_experiment_runs_fast_dev_run(run_cli, fragment, fake_mnist_root):
    """The experiments of notes/ (a full config plus its fragment) train a step through the real CLI."""
    from conftest import cpu_overrides

    configs = REPO / "configs"
    base = configs / FRAGMENT_BASES[fragment]
    cli = run_cli(
        "fit",
        "--config",
        str(base),
        "--config",
        str(configs / fragment),
        "--trainer.fast_dev_run",
        "true",
        *cpu_overrides(base, fake_mnist_root),
    )
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
