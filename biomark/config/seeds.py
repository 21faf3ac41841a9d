"""The range a seed must lie in, and its check.

Every seed a user gives (a plan's, a recipe's, a phantom's, or a command's
``--seed``) reaches numpy's generators, scikit-learn's ``random_state``
(numpy's legacy ``RandomState``: 0 to 2**32 - 1) and Keras's seed
generators, often with an offset added (the report's controls +2000, its
random networks +4000, a lung model's folds +10 per fold). A negative seed or
one of 2**32 or more used to end in a raw ``ValueError`` from numpy deep in a
run. Seeds up to 2**31 - 1 leave room for every offset.
"""

from __future__ import annotations

import numbers

from biomark.exceptions import ConfigError

__all__ = ["MAX_SEED", "check_seed", "is_valid_seed", "seed_message"]

#: The largest seed accepted (int32's largest: the offsets added to it stay below 2**32).
MAX_SEED = 2**31 - 1


def is_valid_seed(value: object) -> bool:
    """Whether ``value`` is an integer (not a bool) from 0 to :data:`MAX_SEED`.

    Examples
    --------
    >>> is_valid_seed(0), is_valid_seed(2**31 - 1), is_valid_seed(-1), is_valid_seed(2**32)
    (True, True, False, False)
    >>> is_valid_seed(1.5), is_valid_seed(True)
    (False, False)
    """
    return (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        and 0 <= int(value) <= MAX_SEED
    )


def seed_message(name: str, value: object) -> str:
    """The error for an invalid seed called ``name`` (a plan key or a command-line flag)."""
    return f"{name}={value!r}: a seed must be an integer from 0 to {MAX_SEED:,}"


def check_seed(value: object, name: str) -> None:
    """Raise :class:`~biomark.exceptions.ConfigError` unless ``value`` is a valid seed.

    Parameters
    ----------
    value : object
        The seed given.
    name : str
        What the user called it: ``"seed"``, ``"data.phantom.seed"``, ``"--seed"``.

    Raises
    ------
    ConfigError
        Naming ``name``, the value and the range.

    Examples
    --------
    >>> check_seed(-1, "--seed")
    Traceback (most recent call last):
    ...
    biomark.exceptions.ConfigError: --seed=-1: a seed must be an integer from 0 to 2,147,483,647
    """
    if not is_valid_seed(value):
        raise ConfigError(seed_message(name, value))
