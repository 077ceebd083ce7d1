"""What people see when something goes wrong: one clear line (a `gr.Error`), never a traceback."""

from __future__ import annotations

import functools
import logging

import gradio as gr

from parts2whole.core.errors import CheckpointError, Parts2WholeInputError

logger = logging.getLogger("parts2whole.app")


def one_line(error: Exception, limit: int | None = None) -> str:
    text = " ".join(str(error).split())
    return text if limit is None else text[:limit]


def user_error(error: Exception) -> gr.Error:
    """An input someone can fix: their message, titled as such."""
    return gr.Error(one_line(error), title="Please check the inputs", print_exception=False)


def failure(what: str, error: Exception) -> gr.Error:
    """A bug or an environment problem, already logged: one line naming what failed and why."""
    return gr.Error(f"{what} ({type(error).__name__}): {one_line(error, 300)}", print_exception=False)


def friendly_errors(fn):
    """Handlers show one clear line (gr.Error), never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (Parts2WholeInputError, CheckpointError) as error:
            raise user_error(error) from None
        except Exception as error:  # a bug or an environment problem: log it, show one line
            logger.exception("%s failed", fn.__name__)
            raise failure("That did not work", error) from None

    return wrapper
