"""``python -m genderd``: the command line (see :mod:`genderd.cli`).

Python puts the current directory first on the import path for ``-m``. A folder named
``genderd`` there (a clone of the repository, or a stray ``genderd/lua/``) must not shadow the
installed genderd, so it is taken off again (as ``python -P`` does); plug-in modules are still
found there, after the installed packages (:func:`genderd.models.registry.load_plugin`).
"""

import os
import sys


def _unshadow() -> None:
    here = os.getcwd()
    sys.path[:] = [p for p in sys.path if p not in ("", here)]
    package = sys.modules.get("genderd")
    if package is not None and getattr(package, "__file__", None) is None:
        # imported as a namespace package from the current directory (with an editable
        # install, whose finder comes after the path): import the installed one again
        for name in [n for n in sys.modules if n == "genderd" or n.startswith("genderd.")]:
            del sys.modules[name]


_unshadow()

from genderd.cli import main  # noqa: E402

main()
