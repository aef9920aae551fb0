"""The op set of the moec IR.  Importing this package registers every op.

Each module declares a family of ops (see :mod:`moec.ir.opdef`); the ``moe``
module holds the MoE-specific ops.
"""
import importlib
import pkgutil

for _m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_m.name}")
