"""The ``mlci`` command group and what every command shares: options, and errors as one line.

Every command parses its options, calls one library function and prints. An
:class:`~mlci.errors.MlciError` becomes ``error: <message>`` on stderr with the error's documented
exit code, never a traceback (set ``MLCI_DEBUG=1`` to see one for unexpected errors).
"""

from __future__ import annotations

import functools
import json
import os
import sys

import click

from mlci import errors
from mlci.config import settings as S

SET_HELP = "Override a parameter for this run, e.g. -S train.learning_rate=0.05 (repeatable)."


def _fail(message: str, code: int, as_json: bool = False) -> None:
    if as_json:  # every exit of a --json command prints one JSON document
        click.echo(json.dumps({"error": message, "exit_code": code}))
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _pipe_closed() -> None:
    """The reader of our output went away (``mlci run | head -1``): stop quietly, as Unix tools do."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the interpreter's final flush
    except OSError:
        pass
    sys.exit(errors.PIPE_CLOSED)


def handle_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        as_json = bool(kwargs.get("as_json"))
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:
            _pipe_closed()
        except errors.MlciError as e:
            _fail(e.message, e.exit_code, as_json)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as e:  # a bug: say so in one line unless asked for the traceback
            if os.environ.get("MLCI_DEBUG"):
                raise
            _fail(f"internal error: {type(e).__name__}: {e} (set MLCI_DEBUG=1 for a traceback)", errors.INTERNAL,
                  as_json)

    return wrapper


def context(ctx: click.Context, overrides: tuple[str, ...]):
    from mlci.config.resolve import resolve

    s = S.from_env(ctx.obj.get("params_file"))
    return s, resolve(s.params_file, list(overrides), s.state_dir)


def epilog() -> str:
    return ("Exit codes: 0 success, 3 the gate failed, others an error named in one line on stderr; "
            "`mlci exit-codes` lists them all.")


@click.group(epilog=epilog(), context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--params",
    "params_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Parameters file (default: $MLCI_PARAMS or ./params.yaml; built-in defaults when absent).",
)
@click.version_option(package_name="mlci")
@click.pass_context
def main(ctx: click.Context, params_file: str | None) -> None:
    """mlci: preprocess, train, gate and test a binary classifier, reproducibly.

    Paths come from the tutorial's environment variables RAW_DATA_DIR,
    RAW_DATA_FILE, PROCESSED_DATA_DIR, MODEL_DIR and RESULTS_DIR.
    """
    ctx.ensure_object(dict)
    ctx.obj["params_file"] = params_file


PROFILE_HELP = ("Model profile for this run: default (one LightGBM, seconds) or best (an ensemble tuned by "
                 "cross-validation, about two minutes). Same as -S train.profile=...; params.yaml sets it for good.")


def profile_option(f):
    return click.option("--profile", type=click.Choice(["default", "best"]), default=None, help=PROFILE_HELP)(f)


def with_profile(overrides: tuple[str, ...], profile: str | None) -> tuple[str, ...]:
    return overrides if profile is None else (*overrides, f"train.profile={profile}")


NO_TRACK_HELP = "Do not record this in MLflow (quick offline iteration). Env: MLCI_NO_TRACK=1."


