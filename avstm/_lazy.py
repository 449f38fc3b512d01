"""Lazy package namespaces: a package's public names are imported on first use.

``import avstm.io`` then loads no stage, and a command imports only what it runs. Each
package ``__init__`` calls ``lazy_exports`` with its map of public names; nothing else
imports this module.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def lazy_exports(package: str, exports: dict[str, str]) -> None:
    """Resolve ``package.<name>`` from ``exports`` (name -> module) on first access.

    A public name that is also a sub-package (``avstm.extract`` the function and
    ``avstm/extract/`` the package) stays the exported object: the import system's setting of
    the sub-package attribute is ignored for those names, as the eager imports used to do.
    """
    module = sys.modules[package]
    shadowed = {name for name in exports if _is_subpackage(package, name)}

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        module.__dict__[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(module.__dict__) | set(exports))

    module.__getattr__ = __getattr__
    module.__dir__ = __dir__
    if shadowed:
        module.__class__ = type("LazyPackage", (types.ModuleType,), {
            "__setattr__": _keep_exports(shadowed)})


def _is_subpackage(package: str, name: str) -> bool:
    return importlib.util.find_spec(f"{package}.{name}") is not None


def _keep_exports(names: set[str]):
    def __setattr__(self, name, value):
        if name in names and isinstance(value, types.ModuleType):
            return  # the import system binding a sub-package: the exported object wins
        types.ModuleType.__setattr__(self, name, value)
    return __setattr__
