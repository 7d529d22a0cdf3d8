"""JSON Schemas of the topics' records, generated from the event models (``events.py``).

docs/schemas/<name>.v<version>.schema.json holds one per record kind, for any Kafka client;
docs/record-formats.md says which topic carries which, with what key. The files are generated,
never edited by hand::

    python -m streamwise_core.contracts.record_schemas --write docs/schemas
    python -m streamwise_core.contracts.record_schemas --check docs/schemas   # exit 1 when they differ

tests/unit/test_record_schemas.py holds the committed files equal to what this writes.

What the models give (``model_json_schema()``, validation mode: what a reader accepts) is kept,
with three things made explicit that the models leave to Python:

- ``schema_version`` is the constant of its file, and it and ``kind`` are required: Streamwise
  always writes both, and a reader decides by them what it holds;
- a timestamp is RFC 3339 with an offset (``TIMESTAMP_PATTERN``), which is what the services
  write; the models read more forms (no offset, a space for the ``T``), which are not promised;
- the topic and key of the record (``x-kafka-topic``, ``x-kafka-key``: annotations only).

Files of other versions beside them (an older ``event.v1`` once ``event.v2`` exists) are left
alone: records of that version may still be on the topics.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import re
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamwise_core.contracts.events import DeadLettered, EventReceived, LabelReceived, ModelPublished, PredictionMade, _Event
from streamwise_core.contracts.topic_config import Topics

if TYPE_CHECKING:
    from jsonschema import FormatChecker
    from jsonschema.protocols import Validator

DRAFT = "https://json-schema.org/draft/2020-12/schema"

TIMESTAMP_PATTERN = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
"""RFC 3339 ``date-time`` with an upper-case ``T`` and ``Z``, without leap seconds (which the
readers refuse). A pattern also holds validators that take ``format`` as a mere annotation (the
2020-12 default); ``format_checker`` adds the calendar (no February 30)."""
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)

PATTERN_PREFIX, PATTERN_APP = "<prefix>", "<app>"
_TOPIC_PATTERNS = Topics.for_app(PATTERN_PREFIX, PATTERN_APP)


@dataclass(frozen=True)
class RecordKind:
    """One kind of record: its model, the topic that carries it, what its key holds."""

    name: str
    """The stem of its schema file."""
    model: type[_Event]
    topic: str
    """The field of ``Topics`` naming its topic."""
    key: str

    @property
    def version(self) -> int:
        version = self.model.model_fields["schema_version"].default
        assert type(version) is int
        return version

    @property
    def kind(self) -> str:
        kind = self.model.model_fields["kind"].default
        assert type(kind) is str
        return kind

    @property
    def file_name(self) -> str:
        return f"{self.name}.v{self.version}.schema.json"

    @property
    def topic_pattern(self) -> str:
        """``<prefix>.<app>.events`` and so on (``Topics.for_app``)."""
        return str(getattr(_TOPIC_PATTERNS, self.topic))


RECORD_KINDS: tuple[RecordKind, ...] = (
    RecordKind("event", EventReceived, "events", "The event's id, as UTF-8."),
    RecordKind("label", LabelReceived, "labels", "The event's id, as UTF-8."),
    RecordKind("prediction", PredictionMade, "predictions", "The instance's id (the record's id), as UTF-8."),
    RecordKind(
        "model_published", ModelPublished, "models",
        "The model's name, as UTF-8: the topic is compacted by it, so it keeps each model's newest announcement.",
    ),
    RecordKind(
        "dead_letter", DeadLettered, "dead_letters",
        "The original record's key, byte for byte (none when it had none).",
    ),
)
KINDS_BY_NAME = {kind.name: kind for kind in RECORD_KINDS}


def record_schema(kind: RecordKind) -> dict[str, Any]:
    """The JSON Schema (2020-12) of ``kind``'s records."""
    generated = kind.model.model_json_schema()
    properties: dict[str, dict[str, Any]] = generated.pop("properties")
    docs = field_docstrings(kind.model)
    for name, prop in list(properties.items()):
        description = docs.get(name, "")
        if prop.get("format") == "date-time":
            prop["pattern"] = TIMESTAMP_PATTERN
            description += " RFC 3339, with an offset (Z for UTC)."
        if description:
            properties[name] = {"title": prop.pop("title", name), "description": _plain(description), **prop}
    properties["schema_version"] = {**properties["schema_version"], "const": kind.version}
    required = ["schema_version", "kind", *(r for r in generated.pop("required", []) if r not in ("schema_version", "kind"))]
    model_doc = _plain(generated.pop("description", ""))
    generated.pop("title", None)
    description = (
        f"{model_doc} A record of the {kind.topic_pattern} topic, schema_version {kind.version}. "
        "Fields not named here may be added within this version: readers ignore them. "
        "Generated from streamwise_core.contracts.events." + kind.model.__name__ + " by streamwise_core.contracts.record_schemas; "
        "see docs/record-formats.md."
    )
    return {
        "$schema": DRAFT,
        "$id": f"urn:streamwise:record:{kind.name}:v{kind.version}",
        "title": f"Streamwise {kind.model.__name__} record, schema_version {kind.version}",
        "description": description,
        "x-kafka-topic": kind.topic_pattern,
        "x-kafka-key": kind.key,
        **generated,
        "properties": properties,
        "required": required,
    }


def field_docstrings(model: type[_Event]) -> dict[str, str]:
    """The docstring under each field of ``model`` and its bases (``events.py`` documents fields
    so), read from the source: the models do not set pydantic's ``use_attribute_docstrings``,
    which would read it at every import of a service."""
    docs: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, _Event)):
            continue
        [body] = ast.parse(textwrap.dedent(inspect.getsource(cls))).body
        assert isinstance(body, ast.ClassDef)
        for field, after in zip(body.body, body.body[1:], strict=False):
            if (
                isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)
            ):
                docs[field.target.id] = inspect.cleandoc(after.value.value)
    return docs


def _plain(docstring: str) -> str:
    """A docstring as one line, its reStructuredText literals as Markdown's."""
    return " ".join(docstring.split()).replace("``", "`")


def render(schema: dict[str, Any]) -> str:
    """The text of a schema file."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def schema_files() -> dict[str, str]:
    """The text of every schema file, by file name."""
    return {kind.file_name: render(record_schema(kind)) for kind in RECORD_KINDS}


def write(directory: Path) -> list[Path]:
    """Write the schema files into ``directory``; the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in schema_files().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def differences(directory: Path) -> list[str]:
    """The files in ``directory`` that are missing or differ from what ``write`` writes."""
    problems = []
    for name, text in schema_files().items():
        path = directory / name
        if not path.exists():
            problems.append(f"{path}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path}: differs from the models")
    return problems


# --------------------------------------------------------------------------- reading and checking records

MAX_NESTING = 201
"""Arrays and objects nest at most this deep in a record, its own object included: the models'
JSON reader (pydantic's) refuses deeper values, even in fields it would ignore."""


def read_json(data: bytes) -> Any:
    """A record's value as JSON (RFC 8259) that the readers can read: UTF-8 without a byte order
    mark, no ``NaN`` or ``Infinity``, no unpaired surrogate, nested at most ``MAX_NESTING``
    deep; ``ValueError`` for anything else."""
    text = data.decode("utf-8")  # strict: a BOM stays a character, which json refuses

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    value = json.loads(text, parse_constant=refuse)
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # UnicodeEncodeError (a ValueError) on "\ud800"
    if _nesting(value) > MAX_NESTING:
        raise ValueError(f"nested deeper than {MAX_NESTING} levels")
    return value


def _nesting(value: Any) -> int:
    deepest, level = 0, [(value, 1)]
    while level:
        item, depth = level.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            level.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def format_checker() -> FormatChecker:
    """``date-time`` checked as the readers do: ``TIMESTAMP_PATTERN`` and a date that exists.
    (jsonschema's own check needs a package the project does not have.) Needs ``jsonschema``."""
    from jsonschema import FormatChecker

    checker = FormatChecker(formats=())

    @checker.checks("date-time", raises=ValueError)
    def _date_time(value: object) -> bool:
        if not isinstance(value, str):
            return True
        if _TIMESTAMP.fullmatch(value) is None:
            return False
        datetime.fromisoformat(value)  # ValueError for a day that does not exist, or year 0
        return True

    return checker


def validator(schema: dict[str, Any]) -> Validator:
    """A 2020-12 validator of ``schema`` that checks formats (``format_checker``). Needs ``jsonschema``."""
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema, format_checker=format_checker())


def load_schema(directory: Path, name: str) -> dict[str, Any]:
    """The schema file of record kind ``name`` (such as ``event``) in ``directory``, as written."""
    loaded: dict[str, Any] = json.loads((directory / KINDS_BY_NAME[name].file_name).read_text(encoding="utf-8"))
    return loaded


def check_record(data: bytes, schema: dict[str, Any]) -> dict[str, Any]:
    """The record in ``data`` if it is JSON that ``schema`` accepts; ``ValueError`` (JSON) or
    ``jsonschema.ValidationError`` (the schema's best match) otherwise."""
    import jsonschema

    value = read_json(data)
    error = jsonschema.exceptions.best_match(validator(schema).iter_errors(value))
    if error is not None:
        raise error
    assert isinstance(value, dict)
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamwise_core.contracts.record_schemas", description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path, metavar="DIR", help="write the schema files into DIR")
    group.add_argument("--check", type=Path, metavar="DIR", help="exit 1 when DIR's schema files differ from the models")
    args = parser.parse_args(argv)
    if args.write is not None:
        for path in write(args.write):
            print(path)
        return 0
    problems = differences(args.check)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print("regenerate them: python -m streamwise_core.contracts.record_schemas --write " + str(args.check), file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
