"""Sphinx configuration of the API reference (``pip install -e '.[docs]'``, then
``python -m sphinx -W --keep-going -n -b html docs docs/_build/html``).

The pages are built from the docstrings: :file:`api.rst` lists the documented modules by
import name (one line each, a page per module from the template in :file:`_templates`), and
:file:`cli.rst` renders the ``argparse`` parser of the command itself, so neither can drift
from the code.
"""

from __future__ import annotations

import os
import sys
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
# The checkout's package (also when it is not installed), and cli_parser.py beside this file.
sys.path[:0] = [os.path.normpath(os.path.join(_HERE, "..", "src")), _HERE]

import moldudp64  # noqa: E402

project = "moldudp64"
author = "the moldudp64 authors"
release = version = moldudp64.__version__
copyright = "the moldudp64 authors"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinxarg.ext",
]

templates_path = ["_templates"]
# DESIGN.md is read on GitHub; the reference is reStructuredText only.
exclude_patterns = ["_build", "DESIGN.md"]
html_theme = "alabaster"
# Options and code read as typed: "--port" stays two hyphens, quotes stay straight.
smartquotes = False
html_static_path: list[str] = []

autosummary_generate = True
# A page lists what its module exports (its __all__), wherever it is defined.
autosummary_ignore_module_all = False
# (Which members a page shows is in the template: _templates/autosummary/module.rst.)
autodoc_default_options = {
    "show-inheritance": True,
    "undoc-members": True,
    "member-order": "bysource",
    # Members a class inherits from the package's own bases (the clients' ClientBase), not
    # those of Python's types.
    "inherited-members": "object, BaseException, Exception, tuple, int, str, Enum, IntEnum",
}
# Signatures keep the annotations as written; the text below them says what they mean.
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_class_signature = "mixed"


# The package's own page leaves the events and the errors to their pages, where they are
# still documented as ``moldudp64.X``, the name the docstrings and the users know them by.
_OWN_PAGES = ["moldudp64.events", "moldudp64.exceptions"]
autosummary_context = {
    "package": "moldudp64",
    "package_all": list(moldudp64.__all__),
    "own_pages": _OWN_PAGES,
    "own_page_names": sorted(
        name for module in _OWN_PAGES for name in __import__(module, fromlist=["__all__"]).__all__
    ),
    # Classes outside a module's __all__ that its documented names hand out, as
    # "directive name".
    "extra_members": {
        "moldudp64.itch50": ["class Layout", "class Field"],
    },
}


def _module_data(modname: str) -> list[dict[str, Any]]:
    """The constants of a module's ``__all__`` that autodoc would leave out: it documents a
    module's value only with a doc comment (``#:``) in that module's own source, so one
    imported from a submodule (``moldudp64.DEFAULT_MAX_PAYLOAD``, or any constant a
    package re-exports) would vanish. The page declares them itself, with the doc comment
    where each is defined. Names described on another page are left to it."""
    import importlib
    import inspect
    import types

    from sphinx.pycode import ModuleAnalyzer

    module = importlib.import_module(modname)
    own_docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
    context = autosummary_context
    elsewhere = set(context["own_page_names"] if modname == "moldudp64" else context["package_all"])
    found = []
    for name in getattr(module, "__all__", ()):
        value = getattr(module, name)
        if (
            name in elsewhere
            or ("", name) in own_docs
            or inspect.isclass(value)
            or inspect.isroutine(value)
            or inspect.ismodule(value)
        ):
            continue
        doc: list[str] = ["The package's version."] if name == "__version__" else []
        for other, defining in sorted(sys.modules.items()):
            if other.startswith("moldudp64.") and vars(defining).get(name) is value:
                doc = ModuleAnalyzer.for_module(other).find_attr_docs().get(("", name), doc)
                if doc:
                    break
        if not doc and isinstance(value, types.UnionType):
            members = (f":class:`~{a.__module__}.{a.__qualname__}`" for a in value.__args__)
            doc = [f"One of: {', '.join(members)}."]
        shown = repr(value)
        found.append(
            {
                "name": name,
                "value": shown if len(shown) <= 80 and "\n" not in shown else "",
                "doc": [line for line in doc if line],
            }
        )
    return found


def _listed_modules() -> list[str]:
    """The modules api.rst lists (one import name a line under its autosummary)."""
    import re

    with open(os.path.join(_HERE, "api.rst"), encoding="utf-8") as f:
        return re.findall(r"^ {3}(moldudp64(?:\.\w+)*)\s*$", f.read(), re.MULTILINE)


autosummary_context["module_data"] = {name: _module_data(name) for name in _listed_modules()}

# No network while building, so no intersphinx: names of the standard library, of
# optional dependencies (nats-py) and private helpers stay plain text. Any other
# reference that does not resolve fails the build (-n -W).
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(collections\.abc|socket|os|ipaddress|enum|threading|decimal|typing|asyncio"
        r"|pathlib|io|logging|argparse)\..+",
    ),
    (r"py:.*", r"(moldudp64\.(.+\.)?)?_[A-Za-z].*"),  # private modules and names
    (r"py:.*", r"(moldudp64\.[\w.]+\.)?[A-Z]"),  # type variables (Generic[T])
    (r"py:class", r"nats\..+|NATS|JetStreamContext"),  # nats-py, imported on use
    (r"py:class", r"prometheus_client\..+|Metric"),  # prometheus-client, imported on use
    (r"py:class", r"IPNetwork"),  # moldudp64.rerequest: IPv4Network | IPv6Network
    (r"py:class", r"moldudp64\.publisher\.PublisherFront"),  # internal base of the publishers
]


def _builtins_as_text(app: Any, doctree: Any) -> None:
    """Annotations naming a builtin type (``bytes``, ``int``) stay plain text.

    Without this, Sphinx falls back from the class ``bytes`` to any attribute called
    ``bytes`` (``PublisherStats.bytes``, ``RerequestStats.bytes``) and links the wrong one.
    """
    import builtins

    from sphinx.addnodes import pending_xref

    for node in list(doctree.findall(pending_xref)):
        if (
            node.get("refdomain") == "py"
            and node.get("reftype") in ("class", "obj")
            and isinstance(getattr(builtins, node.get("reftarget", ""), None), type)
        ):
            node.replace_self(node.children)


def _resolve_reexported(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve a reference to a name the package re-exports by the name it is documented
    under: ``CaptureReader.batches`` written in :mod:`moldudp64.capture`, or
    ``moldudp64.sync.server.Publisher.run``, is ``moldudp64.CaptureReader.batches`` and
    ``moldudp64.Publisher.run`` (the same objects). Anything else stays unresolved, and
    fails the build."""
    if node.get("refdomain") != "py":
        return None
    parts = node["reftarget"].split(".")
    package_all = autosummary_context["package_all"]
    for i, part in enumerate(parts):
        if part in package_all and (i == 0 or parts[0] == "moldudp64"):
            alias = node.deepcopy()
            alias["reftarget"] = ".".join(["moldudp64", *parts[i:]])
            if alias.hasattr("refspecific"):
                del alias["refspecific"]
            return env.domains["py"].resolve_xref(
                env,
                node["refdoc"],
                app.builder,
                node["reftype"],
                alias["reftarget"],
                alias,
                contnode,
            )
    return None


def _skip_tuple_fields(
    app: Any, what: str, name: str, obj: Any, skip: bool, options: Any
) -> bool | None:
    """A ``NamedTuple``'s fields are in its signature; their generated docstrings
    ("Alias for field number 0") say nothing more."""
    doc = getattr(obj, "__doc__", None)
    if what == "class" and isinstance(doc, str) and doc.startswith("Alias for field number"):
        return True
    return None


def _itch_record_alias(
    app: Any,
    what: str,
    name: str,
    obj: Any,
    options: Any,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str | None, str | None] | None:
    """In :mod:`moldudp64.itch50`, the union of the 23 record classes reads as the alias
    it is, :data:`~moldudp64.itch50.Record`."""
    if not name.startswith("moldudp64.itch50."):
        return None
    import re
    import typing

    from moldudp64 import itch50

    union = re.compile(
        r"\s*\|\s*".join(
            r"(?:~?[\w.]+\.)?" + cls.__name__ for cls in typing.get_args(itch50.Record)
        )
    )

    def alias(text: str | None) -> str | None:
        return None if text is None else union.sub("~moldudp64.itch50.Record", text)

    return alias(signature), alias(return_annotation)


def _union_aliases(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """A union alias (``Record = SystemEvent | ...``) with no doc comment of its own would
    show Python's text about union types: list its members instead."""
    import types

    if isinstance(obj, types.UnionType) and lines and lines[0].startswith("Represent a PEP"):
        members = (f":class:`~{arg.__module__}.{arg.__qualname__}`" for arg in obj.__args__)
        lines[:] = [f"One of: {', '.join(members)}."]


def _dataclass_factories(
    app: Any,
    what: str,
    name: str,
    obj: Any,
    options: Any,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str | None, str | None] | None:
    """Show a dataclass field's ``default_factory`` as the call it is (``set()``) rather
    than ``<factory>``, which is no Python and makes Sphinx misread the signature."""
    import dataclasses

    if signature is None or "<factory>" not in signature or not dataclasses.is_dataclass(obj):
        return None
    for field in dataclasses.fields(obj):
        if field.init and field.default_factory is not dataclasses.MISSING:
            call = f"{getattr(field.default_factory, '__qualname__', 'factory')}()"
            signature = signature.replace("<factory>", call, 1)
    return signature, return_annotation


def _long_values_omitted(app: Any, doctree: Any) -> None:
    """A module constant's value is shown only when it is short (``DEFAULT_WINDOW = 2048``);
    tables such as ``itch50.LAYOUTS`` are described by their text, not printed whole."""
    from sphinx import addnodes

    for sig in list(doctree.findall(addnodes.desc_signature)):
        desc = sig.parent
        if desc.get("domain") != "py" or desc.get("objtype") not in ("data", "attribute"):
            continue
        for annotation in list(sig.findall(addnodes.desc_annotation)):
            text = annotation.astext()
            if text.lstrip().startswith("=") and len(text) > 80:
                annotation.parent.remove(annotation)


def setup(app: Any) -> None:
    app.connect("doctree-read", _builtins_as_text)
    app.connect("doctree-read", _long_values_omitted)
    app.connect("missing-reference", _resolve_reexported)
    app.connect("autodoc-skip-member", _skip_tuple_fields)
    app.connect("autodoc-process-docstring", _union_aliases)
    app.connect("autodoc-process-signature", _dataclass_factories)
    app.connect("autodoc-process-signature", _itch_record_alias)
