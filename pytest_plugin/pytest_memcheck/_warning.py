"""The one warning category of pytest-memcheck."""

import pytest


class PytestMemcheckWarning(pytest.PytestWarning):
    """A measurement that could not be taken or judged as usual (e.g. the confirming second run
    raised). Reported in pytest's warnings summary and never raised as an error, whatever the
    warning filters say: a measurement must not change a test's outcome. An `ignore` filter for
    it (`-W ignore::pytest_memcheck.PytestMemcheckWarning`) silences it."""

    __module__ = "pytest_memcheck"
