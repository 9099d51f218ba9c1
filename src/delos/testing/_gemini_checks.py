"""Request checks of the fake Gemini API and Gemini on Vertex AI.

:func:`parse_body` reads a JSON body, :func:`check_generate_body` checks a ``generateContent``
body field by field (unknown JSON field names included) and :func:`check_conversation` across
its turns (thinking settings for the model, calls and responses in pairs, the thought
signatures sent back); each raises :class:`Rejection` with the service's google.rpc error (what
is checked is listed in :mod:`delos.testing.fake_gemini`'s docstring). Also here, because checks
and answers both read them: the routed request (:class:`Call`), a proto JSON object's fields in
either spelling (:func:`proto_field`), which models think (:func:`model_thinks`,
:func:`generation_25`) and the user's last text (:func:`last_user_text`).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from delos.testing._agent import sign, thought_about
from delos.testing._server import FakeRequest, FakeResponse

__all__ = [
    "Call",
    "Rejection",
    "check_conversation",
    "check_generate_body",
    "generation_25",
    "last_user_text",
    "model_thinks",
    "parse_body",
    "proto_field",
]

# The request fields the real service knows, as proto JSON accepts them (camelCase or snake_case).
_REQUEST_FIELDS = frozenset(
    "contents systemInstruction system_instruction generationConfig generation_config "
    "safetySettings safety_settings tools toolConfig tool_config cachedContent cached_content "
    "labels model".split()
)
_CONFIG_FIELDS = frozenset(
    "temperature topP top_p topK top_k candidateCount candidate_count maxOutputTokens "
    "max_output_tokens stopSequences stop_sequences presencePenalty presence_penalty "
    "frequencyPenalty frequency_penalty seed responseMimeType response_mime_type responseSchema "
    "response_schema responseJsonSchema response_json_schema responseLogprobs response_logprobs "
    "logprobs responseModalities response_modalities thinkingConfig thinking_config "
    "mediaResolution media_resolution speechConfig speech_config".split()
)
_PART_FIELDS = frozenset(
    "text inlineData inline_data fileData file_data functionCall function_call functionResponse "
    "function_response thought thoughtSignature thought_signature executableCode "
    "executable_code codeExecutionResult code_execution_result videoMetadata video_metadata "
    "mediaResolution media_resolution".split()
)
_TOOL_FIELDS = frozenset(
    "functionDeclarations function_declarations googleSearch google_search "
    "googleSearchRetrieval google_search_retrieval codeExecution code_execution urlContext "
    "url_context".split()
)
_DECLARATION_FIELDS = frozenset(
    "name description parameters parametersJsonSchema parameters_json_schema response "
    "responseJsonSchema response_json_schema behavior".split()
)
_CALLING_FIELDS = frozenset("mode allowedFunctionNames allowed_function_names".split())
_THINKING_FIELDS = frozenset(
    "thinkingBudget thinking_budget includeThoughts include_thoughts".split()
)
_MODES = frozenset({"MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"})
#: Inline media the models read.
_INLINE_TYPES = frozenset(
    "image/png image/jpeg image/webp image/heic image/heif application/pdf text/plain".split()
)
_FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Call:
    """One routed request."""

    vertex: bool
    version: str
    model: str
    method: str
    #: ``projects/p/locations/l/publishers/google/models/m`` or ``models/m``.
    resource: str


class Rejection(Exception):
    """A request the real service refuses: a google.rpc error, or ``page`` as it is."""

    def __init__(
        self,
        status: int,
        message: str,
        details: list[dict[str, Any]] | None = None,
        *,
        page: FakeResponse | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details
        self.page = page


def parse_body(request: FakeRequest) -> dict[str, Any]:
    """The JSON object ``request`` carries.

    Raises:
        Rejection: the body is not a JSON object.
    """
    try:
        body = request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise Rejection(400, "Invalid JSON payload received. Unexpected token.")
    return body


def check_generate_body(body: dict[str, Any], vertex: bool) -> None:
    """Check a ``generateContent`` body field by field, as the service reads it.

    Raises:
        Rejection: an unknown field, a bad role, part, tool or schema setting.
    """
    for name in body:
        if name not in _REQUEST_FIELDS:
            raise _unknown_field(name, None)
    config = body.get("generationConfig") or body.get("generation_config") or {}
    if not isinstance(config, dict):
        raise Rejection(400, "Invalid JSON payload received. Unexpected token.")
    for name in config:
        if name not in _CONFIG_FIELDS:
            raise _unknown_field(name, "generation_config")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise Rejection(400, "* GenerateContentRequest.contents: contents is not specified\n")
    for index, content in enumerate(contents):
        role = content.get("role") if isinstance(content, dict) else None
        # The Gemini API defaults a missing role to "user"; Vertex AI requires it.
        if role not in ("user", "model") and (vertex or role is not None):
            raise Rejection(400, "Please use a valid role: user, model.")
        if not isinstance(content, dict) or not content.get("parts"):
            raise Rejection(
                400,
                f"* GenerateContentRequest.contents[{index}].parts: contents.parts must not be "
                "empty.\n",
            )
        for number, part in enumerate(content["parts"]):
            _check_part(part, f"contents[{index}].parts[{number}]")
    _check_tools(body)
    for name in proto_field(config, "thinkingConfig") or {}:
        if name not in _THINKING_FIELDS:
            raise _unknown_field(name, "generation_config.thinking_config")
    has_schema = "responseSchema" in config or "response_schema" in config
    has_json_schema = "responseJsonSchema" in config or "response_json_schema" in config
    if has_schema and has_json_schema:
        raise Rejection(
            400,
            "* GenerateContentRequest.generation_config.response_json_schema: only one of "
            "response_schema and response_json_schema may be set.\n",
        )
    mime = config.get("responseMimeType") or config.get("response_mime_type")
    if (has_schema or has_json_schema) and mime != "application/json":
        raise Rejection(
            400,
            "* GenerateContentRequest.generation_config.response_mime_type: a response schema "
            "needs response_mime_type application/json.\n",
        )


_DATA_FIELDS = (
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
)


def _check_part(part: Any, where: str) -> None:
    if not isinstance(part, dict):
        raise Rejection(400, "Invalid JSON payload received. Unexpected token.")
    for name in part:
        if name not in _PART_FIELDS:
            raise _unknown_field(name, where)
    present = [name for name in _DATA_FIELDS if proto_field(part, name) is not None]
    if len(present) > 1:
        raise Rejection(
            400,
            f"Invalid value at '{where}.data' (oneof), oneof field 'data' is already set. "
            f"Cannot set '{present[1]}'",
        )
    signature = proto_field(part, "thoughtSignature")
    if signature is not None:
        _check_bytes(signature, f"{where}.thought_signature")
    inline = proto_field(part, "inlineData")
    if inline is not None:
        mime = proto_field(inline, "mimeType")
        if not mime:
            raise Rejection(400, f"* GenerateContentRequest.{where}.inline_data.mime_type: empty")
        _check_bytes(proto_field(inline, "data"), f"{where}.inline_data.data")
        if mime not in _INLINE_TYPES:
            raise Rejection(400, f"Unsupported MIME type: {mime}")
    for name in ("functionCall", "functionResponse"):
        value = proto_field(part, name)
        if value is None:
            continue
        if not isinstance(value, dict) or not value.get("name"):
            raise Rejection(
                400, f"* GenerateContentRequest.{where}.{_snake(name)}.name: name is not specified"
            )
        payload = proto_field(value, "args" if name == "functionCall" else "response")
        if payload is not None and not isinstance(payload, dict):
            raise Rejection(400, "Invalid JSON payload received. Unexpected token.")


def _check_bytes(value: Any, where: str) -> None:
    """A proto ``bytes`` field in JSON: base64, standard or URL-safe (both are accepted)."""
    if not isinstance(value, str) or _decode_bytes(value) is None:
        raise Rejection(
            400,
            f"Invalid value at '{where}' (TYPE_BYTES), Base64 decoding failed for "
            f'"{str(value)[:40]}"',
        )


def _decode_bytes(text: str) -> bytes | None:
    normalised = text.replace("-", "+").replace("_", "/")
    normalised += "=" * (-len(normalised) % 4)
    try:
        return base64.b64decode(normalised, validate=True)
    except (binascii.Error, ValueError):
        return None


def _check_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise Rejection(400, "Invalid JSON payload received. Unexpected token.")
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise Rejection(400, "Invalid JSON payload received. Unexpected token.")
        for name in tool:
            if name not in _TOOL_FIELDS:
                raise _unknown_field(name, where)
        for number, declaration in enumerate(proto_field(tool, "functionDeclarations") or []):
            at = f"{where}.function_declarations[{number}]"
            for name in declaration:
                if name not in _DECLARATION_FIELDS:
                    raise _unknown_field(name, at)
            if not _FUNCTION_NAME.match(str(declaration.get("name") or "")):
                raise Rejection(
                    400,
                    f"* GenerateContentRequest.{at}.name: Invalid function name. Must start with "
                    "a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), underscores "
                    "(_), dots (.), colons (:), or dashes (-), with a maximum length of 64.\n",
                )
            has_parameters = proto_field(declaration, "parameters") is not None
            if has_parameters and proto_field(declaration, "parametersJsonSchema") is not None:
                raise Rejection(
                    400,
                    f"* GenerateContentRequest.{at}.parameters_json_schema: only one of "
                    "parameters and parameters_json_schema may be set.\n",
                )
    config = proto_field(proto_field(body, "toolConfig"), "functionCallingConfig")
    if config is None:
        return
    for name in config:
        if name not in _CALLING_FIELDS:
            raise _unknown_field(name, "tool_config.function_calling_config")
    mode = config.get("mode", "MODE_UNSPECIFIED")
    if mode not in _MODES:
        raise Rejection(
            400,
            "Invalid value at 'tool_config.function_calling_config.mode' (type.googleapis.com/"
            f'google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), "{mode}"',
        )
    if proto_field(config, "allowedFunctionNames") and mode != "ANY":
        raise Rejection(
            400,
            "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: "
            "allowed_function_names may be set only when mode is ANY.\n",
        )


def check_conversation(body: dict[str, Any], call: Call) -> None:
    """What Gemini checks across turns: thinking settings for the model, calls and responses
    in pairs, and the thought signatures sent back."""
    config = proto_field(body, "generationConfig") or {}
    thinking = proto_field(config, "thinkingConfig") or {}
    budget = proto_field(thinking, "thinkingBudget")
    if thinking and not generation_25(call.model):
        raise Rejection(
            400,
            "Unable to submit request because thinking is not supported by this model. Learn "
            "more: https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/gemini",
        )
    if budget == 0 and call.model.startswith("gemini-2.5-pro"):
        raise Rejection(400, "Budget 0 is invalid. This model only works in thinking mode.")
    thinks = model_thinks(call.model, budget)
    contents: list[dict[str, Any]] = body["contents"]
    turn_start = max(
        (i for i, c in enumerate(contents) if c.get("role", "user") == "user" and _has_text(c)),
        default=0,
    )
    user_text = ""
    previous_calls: list[str] = []
    for index, content in enumerate(contents):
        parts = content["parts"]
        calls = [
            str(proto_field(p, "functionCall")["name"])
            for p in parts
            if proto_field(p, "functionCall")
        ]
        responses = [
            str(proto_field(p, "functionResponse")["name"])
            for p in parts
            if proto_field(p, "functionResponse")
        ]
        if content.get("role", "user") == "user":
            if _has_text(content):
                user_text = last_user_text([content])
            if responses:
                _check_responses(previous_calls, responses)
        elif calls:
            before = contents[index - 1] if index else {"role": "model"}
            if before.get("role", "user") != "user":
                raise Rejection(
                    400,
                    "Please ensure that function call turn comes immediately after a user turn or "
                    "after a function response turn.",
                )
        if content.get("role") == "model":
            _check_signatures(call, parts, user_text, index, thinks and index > turn_start)
        previous_calls = calls if content.get("role") == "model" else []


def _has_text(content: dict[str, Any]) -> bool:
    return any(isinstance(p, dict) and "text" in p for p in content.get("parts") or [])


def _check_responses(calls: list[str], responses: list[str]) -> None:
    if not calls:
        raise Rejection(
            400,
            "Please ensure that function response turn comes immediately after a function call "
            "turn.",
        )
    if len(responses) != len(calls):
        raise Rejection(
            400,
            "Please ensure that the number of function response parts is equal to the number of "
            "function call parts of the function call turn.",
        )
    if sorted(responses) != sorted(calls):
        raise Rejection(
            400,
            "Please ensure that the name of each function response part matches the name of a "
            "function call part of the function call turn.",
        )


def _check_signatures(
    call: Call, parts: list[Any], user_text: str, index: int, required: bool
) -> None:
    """Every signature in a model turn must be the one the fake made for it (the thought about
    the user's text then); in the current turn's steps, a thinking model's first call must
    carry its signature."""
    expected = _decode_bytes(sign(thought_about(user_text)))
    for part in parts:
        signature = proto_field(part, "thoughtSignature")
        if signature is not None and _decode_bytes(signature) != expected:
            message = (
                "Unable to submit request because Thought signature is not valid."
                if call.vertex
                else "Corrupted thought signature."
            )
            raise Rejection(400, message)
    first_call = next((p for p in parts if proto_field(p, "functionCall")), None)
    if required and first_call is not None and proto_field(first_call, "thoughtSignature") is None:
        name = proto_field(first_call, "functionCall")["name"]
        if call.vertex:
            message = (
                f"Unable to submit request because function call `{name}` in the {index + 1}. "
                "content block is missing a `thought_signature`. Learn more: "
                "https://cloud.google.com/vertex-ai/generative-ai/docs/thought-signatures"
            )
        else:
            message = (
                "Function call is missing a thought_signature in functionCall parts. This is "
                "required for tools to work correctly, and missing thought_signature may lead "
                "to degraded model performance. Additional data, function call "
                f"`default_api:{name}` , position {index + 1}. Please refer to "
                "https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
            )
        raise Rejection(400, message)


def _unknown_field(name: str, parent: str | None) -> Rejection:
    where = f" at '{parent}'" if parent else ""
    message = f'Invalid JSON payload received. Unknown name "{name}"{where}: Cannot find field.'
    violation = {"field": parent or "", "description": message}
    details = [
        {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [violation]}
    ]
    return Rejection(400, message, details)


def _snake(name: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), name)


def proto_field(message: Any, name: str) -> Any:
    """Field ``name`` (camelCase) of a proto JSON object, or its snake_case spelling: proto JSON
    accepts both, and python-genai passes nested messages unconverted. None when absent."""
    if not isinstance(message, dict):
        return None
    if name in message:
        return message[name]
    return message.get(_snake(name))


def generation_25(model: str) -> bool:
    """Whether ``model`` is a Gemini 2.5 model (the ones that think and cache implicitly)."""
    return model.startswith("gemini-2.5")


def model_thinks(model: str, budget: object) -> bool:
    """Whether ``model`` thinks with ``thinkingBudget`` ``budget`` (None: unset). 2.5 Pro and
    Flash think unless the budget is 0; Flash-Lite only when given a budget."""
    if not generation_25(model) or budget == 0:
        return False
    return budget is not None or not model.startswith("gemini-2.5-flash-lite")


def last_user_text(contents: Sequence[Any]) -> str:
    """The text of the last user turn that has text (not only function results)."""
    for content in reversed(contents):
        if isinstance(content, dict) and content.get("role", "user") == "user":
            parts = content.get("parts") or []
            texts = [str(p["text"]) for p in parts if isinstance(p, dict) and "text" in p]
            if texts:
                return "".join(texts)
    return ""
