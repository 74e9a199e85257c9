"""Loaded only for ``run_all.py --baseline DIR`` rows: the older checkout on PYTHONPATH wins over the
editable install of the current one (whose import hook site.py installed before this runs).

A checkout keeps ``executors/`` and ``server/`` beside ``iworkflow/`` (the install maps them to
``iworkflow.executors`` and ``iworkflow.server``), so a finder does that mapping for the checkout here."""
import importlib.abc
import importlib.util
import os
import sys

sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]

MAPPED = ("iworkflow.executors", "iworkflow.server")


class _CheckoutLayout(importlib.abc.MetaPathFinder):
    """Finds ``iworkflow.executors``/``iworkflow.server`` in the checkout that provides ``iworkflow``."""

    def find_spec(self, name, path, target=None):
        if name not in MAPPED:
            return None
        for entry in sys.path:
            folder = os.path.join(entry, name.split(".")[1])
            if os.path.isdir(os.path.join(entry, "iworkflow")) and os.path.isfile(os.path.join(folder, "__init__.py")):
                return importlib.util.spec_from_file_location(name, os.path.join(folder, "__init__.py"),
                                                              submodule_search_locations=[folder])
        return None


sys.meta_path.append(_CheckoutLayout())
