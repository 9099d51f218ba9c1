"""Reading catalog files: parsing, validation against a frozen schema, and merging.

The packaged ``catalog.yaml`` and an operator's override file share one schema
(:class:`_Document`), in which every model field but ``id`` is optional so that an override can
state only what it changes. Completeness is checked after merging, so an error about a model
names the file that last touched it.

Parameter rules and capabilities may be given per family prefix (top-level ``parameter_rules``
and ``capabilities``): a chat model takes the entry of the longest prefix its family starts
with, whole. A model's own ``parameter_rules`` or ``capabilities`` replace its family's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from ._model import (
    CAPABILITIES,
    UNRANKED_QUALITY,
    CatalogError,
    LongContextPrice,
    ModelInfo,
    ParameterRules,
)

__all__ = ["CatalogContents", "read_catalog"]

_PACKAGED = "catalog.yaml"

_T = TypeVar("_T")


def _price(value: object) -> Decimal:
    """A non-negative, finite decimal from a quoted string, an integer or a parsed number."""
    number: Decimal | None = None
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int) and not isinstance(value, bool):
        number = Decimal(value)
    elif isinstance(value, float):
        # repr() is the shortest text that reads back as the same float: what the author wrote.
        number = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            number = None
    if number is None or number.is_nan():
        raise PydanticCustomError("decimal_number", "not a decimal number")
    if not number.is_finite():
        raise PydanticCustomError("finite_number", "not a finite number")
    if number < 0:
        raise PydanticCustomError("non_negative", "must not be negative")
    return number


def _temperature(value: object) -> float:
    """A temperature above 0, read like a price (so an unquoted ``1.0`` is exact)."""
    number = _price(value)
    if number == 0:
        raise PydanticCustomError("positive_number", "must be above 0")
    return float(number)


def _capability(value: object) -> str:
    if isinstance(value, str) and value in CAPABILITIES:
        return value
    raise PydanticCustomError(
        "capability",
        "{given} is not a capability (one of {known})",
        {"given": repr(value), "known": ", ".join(CAPABILITIES)},
    )


_Price = Annotated[Decimal, PlainValidator(_price)]
_Temperature = Annotated[float, PlainValidator(_temperature)]
_Capabilities = tuple[Annotated[str, PlainValidator(_capability)], ...]
_Flag = Annotated[bool, Field(strict=True)]
_Name = Annotated[str, Field(strict=True, min_length=1)]
_ProviderName = Annotated[str, Field(strict=True, pattern=r"^[a-z][a-z0-9_-]*$")]
_Tokens = Annotated[int, Field(strict=True, gt=0)]
_Count = Annotated[int, Field(strict=True, ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _LongContextEntry(_Strict):
    prompt_tokens_above: _Tokens
    input_per_1k: _Price
    output_per_1k: _Price
    cached_input_per_1k: _Price | None = None
    cache_write_per_1k: _Price | None = None


class _RulesEntry(_Strict):
    # No defaults here: ParameterRules holds them, and a field left out takes its default.
    temperature_max: _Temperature | None = None
    sampling: _Flag | None = None
    temperature_or_top_p: _Flag | None = None


class _ModelEntry(_Strict):
    id: _Name
    family: _Name | None = None
    kind: Literal["chat", "embedding"] | None = None
    context_window: _Tokens | None = None
    input_per_1k: _Price | None = None
    output_per_1k: _Price | None = None
    cached_input_per_1k: _Price | None = None
    cache_write_per_1k: _Price | None = None
    long_context: _LongContextEntry | None = None
    price_known: _Flag | None = None
    typical_output_tokens: _Count | None = None
    dimensions: _Tokens | None = None
    capabilities: _Capabilities | None = None
    parameter_rules: _RulesEntry | None = None


class _ProviderEntry(_Strict):
    default_model: _Name | None = None
    default_embedding_model: _Name | None = None
    models: tuple[_ModelEntry, ...] = ()


class _Document(_Strict):
    quality_ranks: dict[_Name, _Count] = Field(default_factory=dict)
    parameter_rules: dict[_Name, _RulesEntry] = Field(default_factory=dict)
    capabilities: dict[_Name, _Capabilities] = Field(default_factory=dict)
    providers: dict[_ProviderName, _ProviderEntry] = Field(default_factory=dict)


@dataclass
class _Setting:
    """A value and where it was last set, for error messages."""

    value: Any
    where: str


@dataclass
class _ProviderDraft:
    where: str
    default_model: _Setting | None = None
    default_embedding_model: _Setting | None = None
    models: dict[str, _Setting] = field(default_factory=dict)


@dataclass
class _Draft:
    """The merged content of the documents read so far."""

    quality_ranks: dict[str, int] = field(default_factory=dict)
    #: Family prefix → the rules, and the capabilities, of the chat models of those families.
    parameter_rules: dict[str, ParameterRules] = field(default_factory=dict)
    capabilities: dict[str, frozenset[str]] = field(default_factory=dict)
    providers: dict[str, _ProviderDraft] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CatalogContents:
    """What a catalog is built from: the arguments of ``Catalog``'s constructor, checked."""

    models: tuple[ModelInfo, ...]
    default_models: Mapping[str, str]
    default_embedding_models: Mapping[str, str | None]
    quality_ranks: Mapping[str, int]


def read_catalog(path: str | Path | None) -> CatalogContents:
    """The packaged catalog, with the file at ``path`` (if any) merged over it.

    Raises :class:`CatalogError` naming the file and the field at fault.
    """
    packaged = resources.files(__package__).joinpath(_PACKAGED)
    draft = _Draft()
    packaged_source = f"{__package__}/{_PACKAGED}"
    _merge(draft, _parse(packaged.read_text(encoding="utf-8"), packaged_source), packaged_source)
    if path is not None:
        source = Path(path)
        document = _parse(_read(source), str(source), json_format=_is_json(source))
        _merge(draft, document, str(source))
    return _build(draft)


def _is_json(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return False
    if suffix == ".json":
        return True
    raise CatalogError(f"{path}: unknown catalog format {suffix!r}; use .yaml, .yml or .json")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CatalogError(f"{path}: cannot read the catalog: {reason}") from exc


def _parse(text: str, source: str, *, json_format: bool = False) -> _Document:
    data: object
    if json_format:
        try:
            data = json.loads(text, parse_float=Decimal, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            message = f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
            raise CatalogError(f"{source}: {message}") from exc
        except ValueError as exc:
            raise CatalogError(f"{source}: not valid JSON: {exc}") from exc
    else:
        try:
            # _StrictLoader derives from SafeLoader: no arbitrary object construction.
            data = yaml.load(text, Loader=_StrictLoader)
        except yaml.YAMLError as exc:
            raise CatalogError(f"{source}: not valid YAML: {_yaml_problem(exc)}") from exc
    try:
        return _Document.model_validate({} if data is None else data)
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise CatalogError(f"{source}: {problems}") from None


def _merge(draft: _Draft, document: _Document, source: str) -> None:
    """Apply ``document`` (read from ``source``) over ``draft``: the package's merge rule."""
    draft.quality_ranks.update(document.quality_ranks)
    for prefix, rules in document.parameter_rules.items():
        draft.parameter_rules[prefix] = ParameterRules(**rules.model_dump(exclude_none=True))
    for prefix, capabilities in document.capabilities.items():
        draft.capabilities[prefix] = frozenset(capabilities)
    for name, entry in document.providers.items():
        where = f"{source}: providers.{name}"
        provider = draft.providers.setdefault(name, _ProviderDraft(where=where))
        if entry.default_model is not None:
            provider.default_model = _Setting(entry.default_model, f"{where}.default_model")
        if entry.default_embedding_model is not None:
            provider.default_embedding_model = _Setting(
                entry.default_embedding_model, f"{where}.default_embedding_model"
            )
        seen: set[str] = set()
        for index, model in enumerate(entry.models):
            model_where = f"{where}.models[{index}]"
            if model.id in seen:
                raise CatalogError(f"{model_where}.id: {model.id!r} is listed twice")
            seen.add(model.id)
            fields = model.model_dump(exclude_none=True)
            earlier = provider.models.get(model.id)
            if earlier is not None:
                fields = {**earlier.value, **fields}
            provider.models[model.id] = _Setting(fields, model_where)


def _build(draft: _Draft) -> CatalogContents:
    problems: list[str] = []
    models: list[ModelInfo] = []
    defaults: dict[str, str] = {}
    embedding_defaults: dict[str, str | None] = {}
    for name, provider in draft.providers.items():
        kinds: dict[str, str] = {}
        for setting in provider.models.values():
            model = _complete(name, setting, draft, problems)
            if model is not None:
                models.append(model)
                kinds[model.id] = model.kind
        if provider.default_model is None:
            problems.append(f"{provider.where}: missing field default_model")
        else:
            _check_default(provider.default_model, name, "chat", kinds, problems)
            defaults[name] = provider.default_model.value
        embedding = provider.default_embedding_model
        if embedding is not None:
            _check_default(embedding, name, "embedding", kinds, problems)
        embedding_defaults[name] = None if embedding is None else embedding.value
    if problems:
        raise CatalogError("; ".join(problems))
    return CatalogContents(
        tuple(models),
        default_models=defaults,
        default_embedding_models=embedding_defaults,
        quality_ranks=draft.quality_ranks,
    )


def _complete(
    provider: str, setting: _Setting, draft: _Draft, problems: list[str]
) -> ModelInfo | None:
    """The finished model of a merged entry, or None after recording what it lacks."""
    fields: dict[str, Any] = setting.value
    kind = fields.get("kind")
    price_known = fields.get("price_known", True)
    # A model whose price the catalog does not know may leave its prices out (they are then 0).
    required = ["family", "kind", "context_window"] + (["input_per_1k"] if price_known else [])
    if kind == "chat":
        required += ["output_per_1k"] if price_known else []
        required.append("typical_output_tokens")
        if "dimensions" in fields:
            problems.append(f"{setting.where}.dimensions: only embedding models have dimensions")
            return None
    elif kind == "embedding":
        required.append("dimensions")
        for name in ("capabilities", "parameter_rules"):
            if name in fields:
                problems.append(f"{setting.where}.{name}: only chat models have {name}")
                return None
    missing = [name for name in required if name not in fields]
    if missing:
        problems.append(
            f"{setting.where}: model {fields['id']!r} lacks {', '.join(missing)} "
            "(a model new to the catalog must give every field)"
        )
        return None
    long_context = fields.get("long_context")
    if long_context is not None and long_context["prompt_tokens_above"] >= fields["context_window"]:
        problems.append(
            f"{setting.where}.long_context.prompt_tokens_above: must be below the context "
            f"window ({fields['context_window']} tokens)"
        )
        return None
    family: str = fields["family"]
    chat = kind == "chat"
    capabilities = fields.get("capabilities")
    if capabilities is None and chat:
        capabilities = _longest_prefix(draft.capabilities, family)
    own_rules = fields.get("parameter_rules")
    rules = None if own_rules is None else ParameterRules(**own_rules)
    if rules is None and chat:
        rules = _longest_prefix(draft.parameter_rules, family)
    return ModelInfo(
        provider=provider,
        id=fields["id"],
        family=family,
        kind=fields["kind"],
        context_window=fields["context_window"],
        input_per_1k=fields.get("input_per_1k", Decimal(0)),
        output_per_1k=fields.get("output_per_1k", Decimal(0)),
        typical_output_tokens=fields.get("typical_output_tokens", 0),
        dimensions=fields.get("dimensions"),
        quality_rank=draft.quality_ranks.get(family, UNRANKED_QUALITY),
        cached_input_per_1k=fields.get("cached_input_per_1k"),
        cache_write_per_1k=fields.get("cache_write_per_1k"),
        long_context=None if long_context is None else LongContextPrice(**long_context),
        capabilities=frozenset(capabilities or ()),
        rules=rules or ParameterRules(),
        price_known=price_known,
    )


def _longest_prefix(table: Mapping[str, _T], family: str) -> _T | None:
    """The entry of ``table`` whose key is the longest prefix of ``family``; None if none is."""
    best = max((prefix for prefix in table if family.startswith(prefix)), key=len, default=None)
    return None if best is None else table[best]


def _check_default(
    setting: _Setting, provider: str, kind: str, kinds: dict[str, str], problems: list[str]
) -> None:
    if kinds.get(setting.value) != kind:
        article = "an" if kind == "embedding" else "a"
        problems.append(
            f"{setting.where}: {setting.value!r} is not {article} {kind} model of {provider}"
        )


def _describe(error: ErrorDetails) -> str:
    """``providers.openai.models[2].input_per_1k: not a decimal number`` from a pydantic error."""
    messages = {
        "extra_forbidden": "unknown field",
        "missing": "missing field",
        "model_type": "expected a mapping",
        "dict_type": "expected a mapping",
        "tuple_type": "expected a list",
        # Only provider names are constrained by a pattern.
        "string_pattern_mismatch": "provider names are lowercase letters, digits, '-' and '_'",
    }
    message = messages.get(error["type"], error["msg"])
    return f"{_location(error['loc'])}: {message}"


_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def _location(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part == "[key]":
            # pydantic's marker for an error in a mapping's key rather than its value.
            text += " (key)"
        elif _PLAIN_KEY.match(part):
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text or "(document)"


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate keys and reads unquoted decimals exactly."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key: construct_mapping reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


def _construct_decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal | float:
    # A price written without quotes would otherwise become a binary float.
    text = str(loader.construct_scalar(node)).replace("_", "")
    try:
        number = Decimal(text)
    except InvalidOperation:  # .inf, .nan
        return loader.construct_yaml_float(node)
    return number


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "malformed"
        if mark is not None:
            return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
        return problem
    return str(exc)
