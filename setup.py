"""Build the optional C accelerators; the package works without it (pure-Python fallback).

Set MOLDUDP64_NO_EXTENSIONS=1 to skip it.
"""

import os

from setuptools import Extension, setup

ext_modules = []
if not os.environ.get("MOLDUDP64_NO_EXTENSIONS"):
    ext_modules.append(
        Extension(
            "moldudp64._speedups",
            sources=["src/moldudp64/_speedups.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    )
    ext_modules.append(
        Extension(
            "moldudp64._capture",
            sources=["src/moldudp64/_capture.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    )
    ext_modules.append(
        Extension(
            "moldudp64._itch50",
            sources=["src/moldudp64/_itch50.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    )
    ext_modules.append(
        Extension(
            "moldudp64._book",
            sources=["src/moldudp64/_book.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    )

setup(ext_modules=ext_modules)
