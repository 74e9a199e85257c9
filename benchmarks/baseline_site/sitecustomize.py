"""Loaded only for ``run_all.py --baseline DIR`` rows: the older checkout on PYTHONPATH wins over the
editable install of the current one (whose import hook site.py installed before this runs)."""
import sys

sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]
