"""The ``minivess`` command line: one sub-command per user task."""
