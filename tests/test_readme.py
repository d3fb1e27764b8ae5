"""The README against the code: every flag it names exists, and every flag of goldfish's own settings
is documented in its CLI section."""

import re
from pathlib import Path

from test_train_config import _all_parsers

from goldfish.arguments import setting_fields
from goldfish.train_config import GROUPS, REMOVED

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
FLAG = re.compile(r"(?<![\w/-])--[a-z][a-z0-9_-]*")
# torchrun's, accelerate's, pip's, pytest's, Megatron's and vLLM's own flags in the examples, and the benchmark scripts' flags
FOREIGN = {"--nproc_per_node", "--num_processes", "--no-deps", "--standalone", "--random-order", "--append-eod", "--eod-mask-loss",
           "--data-path", "--num-workers", "--host", "--port", "--enforce-eager",  # vLLM's
           "--headless", "--no-sandbox", "--window-size", "--screenshot"} | {  # chromium's
    flag for script in (ROOT / "benchmarks").glob("*.py") for flag in re.findall(r"[\"'](--[a-z][a-z0-9-]*)[\"']", script.read_text())}


def _section(heading: str) -> str:
    start = README.index(f"\n## {heading}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


def _options(parser) -> dict[str, set[str]]:
    """{dest: its option strings} for every flag of a parser."""
    out: dict[str, set[str]] = {}
    for action in parser._actions:
        out.setdefault(action.dest, set()).update(action.option_strings)
    return out


PARSERS = dict(_all_parsers())
try:  # the flags goldfish adds to a Megatron training script (README: Pretraining with Megatron-core)
    import argparse

    from goldfish.integrations.megatron import add_goldfish_args

    MEGATRON_FLAGS = set().union(*_options(add_goldfish_args(argparse.ArgumentParser())).values())
except ImportError:  # megatron-core not installed (the test extra installs it)
    MEGATRON_FLAGS = set()


def test_every_flag_the_readme_names_exists():
    removed = {"--" + name.replace("_", "-") for name in REMOVED}  # named only to say they are refused, and why
    known = set().union(*(s for p in PARSERS.values() for s in _options(p).values())) | {"--version"} | FOREIGN | MEGATRON_FLAGS | removed
    assert sorted(set(FLAG.findall(README)) - known) == []


def test_every_goldfish_setting_is_documented():
    cli, experiments = _section("CLI"), _section("Experiments")
    mentioned = set(FLAG.findall(cli))
    missing = []
    from goldfish.sweep import SweepArguments

    own = {"train": [cls for name, cls in GROUPS if name != "training"], "audit": None, "mask": None,
           "sweep": [SweepArguments]}  # the sweep's train flags are goldfish train's
    for command, parser in PARSERS.items():
        options = _options(parser)
        text = mentioned | (set(FLAG.findall(experiments)) if command.startswith("experiment") else set())
        dtypes = own.get(command) or parser.dataclass_types
        for dtype in dtypes:
            for _, name in setting_fields(dtype):
                if not options[name] & text:
                    missing.append(f"{command} --{name.replace('_', '-')}")
    assert missing == []
