"""The one base class of the errors a user can cause and fix (a bad path, config key, file or
request). Their messages name the file, key or field; the CLI prints them without a traceback and
the platform returns them as a bad request."""

from __future__ import annotations


class FakefinderError(Exception):
    """A problem with what the user gave (config, data, file, request), explained in the message."""
