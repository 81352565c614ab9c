"""What PostgreSQL can store as text, and an escaped form for what it cannot.

PostgreSQL refuses NUL (U+0000) in text and in jsonb, and psycopg cannot encode a lone UTF-16
surrogate (U+D800..U+DFFF) as UTF-8; `json.loads` produces both from escapes such as "\\u0000"
or "\\ud800", so any string from an event may carry them.
"""

import re
from collections.abc import Iterator

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def is_storable(text: str) -> bool:
    return _UNSTORABLE.search(text) is None


def escape_unstorable(text: str) -> str:
    """The text with each unstorable character written as a \\uXXXX escape, so it reads the same."""
    return _UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def describe_unstorable(text: str) -> str:
    first = ord(_UNSTORABLE.search(text).group())
    return "a NUL character (U+0000)" if first == 0 else f"a lone surrogate (U+{first:04X})"


def _join(path: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else part


def unstorable_strings(value: object) -> Iterator[tuple[str, str, str]]:
    """Yield (JSON path, "key" or "value", the offending string) for every unstorable string in a
    parsed JSON value, keys included, in document order.

    Walked with an explicit stack: the value comes from outside, and its depth must not decide
    whether validation finishes.
    """
    # Entries are (path, "key" or "value", node); a key is checked where it stands in the document.
    stack: list[tuple[str, str, object]] = [("", "value", value)]
    while stack:
        path, role, node = stack.pop()
        if isinstance(node, str):
            if not is_storable(node):
                yield path or "$", role, node
        elif isinstance(node, dict):
            children: list[tuple[str, str, object]] = []
            for key, child in node.items():
                key_text = key if isinstance(key, str) else str(key)
                child_path = _join(path, escape_unstorable(key_text))
                children += [(child_path, "key", key_text), (child_path, "value", child)]
            stack.extend(reversed(children))
        elif isinstance(node, list | tuple):
            stack.extend(
                reversed([(_join(path, i), "value", child) for i, child in enumerate(node)])
            )
