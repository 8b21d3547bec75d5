"""The ``pathprune`` command group and its error mapping: library errors become one ``error:`` line
and a non-zero exit code (tracebacks only with ``--debug``)."""

from __future__ import annotations

import os
import sys
import warnings

import importlib

import click

from ..errors import InterruptedRun, PathpruneError
from .flags import as_flags, error_message
from .options import CONTEXT

#: every command and the module of pathprune.cli that defines it (in its COMMANDS); a module is
#: imported when one of its commands runs or is listed, so `pathprune --version` loads no library
COMMAND_MODULES = {"analyze": "analyze", "merge": "merge", "prune": "prune", "reconstruct": "reconstruct",
                   "finetune": "finetune", "compress": "compress", "export": "export", "bench": "bench",
                   "manipulate": "analyses", "scores": "analyses", "structure": "analyses", "demo": "demo"}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (help listings import them all)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMAND_MODULES, *self.commands})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMAND_MODULES:
            module = importlib.import_module(f".{COMMAND_MODULES[name]}", __package__)
            for command in module.COMMANDS:
                self.add_command(command)
        return self.commands.get(name)


@click.group(cls=LazyGroup, context_settings=CONTEXT)
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(package_name="pathprune")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Find influential neuron paths in Vision Transformers and prune with them."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug or _debug_env()


def command_table() -> dict[str, click.Command]:
    """Every pathprune command by name (importing every command module)."""
    return {name: cli.get_command(None, name) for name in cli.list_commands(None)}



def render_warning(message: Warning | str) -> str:
    """A library warning as the command line shows it: settings as flags, advice as a command."""
    import shlex

    from ..pruning.analysis_advice import AnalysisAdvice

    if isinstance(message, AnalysisAdvice):
        from ..pipeline.settings import ModelSource, from_options
        from ..pipeline.stages import AnalyzeSettings
        from .records import command_record

        a = dict(message.analyze)
        best = {"topk": a["topk"], "token": a["token"]}
        source = ModelSource(a.pop("model"), weights=a.pop("weights", None), model_arg=tuple(a.pop("model_arg", ())))
        command = command_record("analyze", from_options(AnalyzeSettings, {"source": source, **a}))
        best = f"--topk {best['topk']} --token {best['token']}"
        return (f"--paths {message.paths} was analysed with --topk {message.topk} --token {message.token} (the paper's "
                f"setting); without --reconstruct, neurons ranked by it prune worse than with {best}. For pruning, "
                f"run: {shlex.join(command)}")
    return as_flags(str(message))


def _debug_env() -> bool:
    return os.environ.get("PATHPRUNE_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors and non-zero exit codes unless --debug."""
    import signal

    if getattr(signal.getsignal(signal.SIGINT), "pathprune_import_guard", False):  # imports are done
        signal.signal(signal.SIGINT, signal.default_int_handler)
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or _debug_env()
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {render_warning(msg)}\n"
    try:
        cli.main(args=args, prog_name="pathprune", standalone_mode=False)
    except click.exceptions.Abort as exc:  # click turns Ctrl-C (e.g. while a command imports) into Abort
        interrupted = isinstance(exc.__context__, KeyboardInterrupt)
        click.echo(f"error: {'interrupted' if interrupted else 'aborted'}", err=True)
        sys.exit(130)
    except click.UsageError as exc:  # bad or missing option: one line, as for every other bad input
        command = f"pathprune {exc.ctx.info_name}: " if exc.ctx is not None and exc.ctx.parent is not None else ""
        click.echo(f"error: {command}{exc.format_message()}".replace("\n", " "), err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}".replace("\n", " "), err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except InterruptedRun as exc:  # Ctrl-C: 130 (128 + SIGINT) like every other interrupted command
        if debug:
            raise
        click.echo(f"error: {error_message(exc)}", err=True)
        sys.exit(130)
    except PathpruneError as exc:
        if debug:
            raise
        click.echo(f"error: {error_message(exc)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence for users
        if debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        click.echo(f"error: {type(exc).__name__}: {first} (run with --debug for the traceback)", err=True)
        sys.exit(1)
