"""YAML text for the rendered rules: block style, every ambiguous scalar quoted.

Written by hand so that `monitor render rules` needs no PyYAML at runtime;
tests/test_yaml.py round-trips any nesting of dicts, lists and scalars through
`yaml.safe_load`. A string YAML 1.1 (PyYAML) or 1.2 could read as anything else is quoted.
"""

import re


def num(value) -> str:
    """A number as PromQL and YAML read it back: 80, 0.05, 1.5 (never 1e-05 or 80.0)."""
    value = float(value)
    if value.is_integer():
        return str(int(value))
    return format(value, ".12f").rstrip("0")


def _float(value: float) -> str:
    """A float that reads back as itself: as `num` writes it when that is exact, else
    in exponent form with the dot and sign PyYAML's float pattern wants (1.0e-13)."""
    if value != value:
        return ".nan"
    if value in (float("inf"), float("-inf")):
        return ".inf" if value > 0 else "-.inf"
    text = num(value)
    if float(text) == value:
        return text
    mantissa, _, exponent = repr(value).partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return f"{mantissa}e{exponent}" if exponent else mantissa


# Plain scalars YAML 1.1 or 1.2 would read as something other than a string.
_YAML_NOT_STRING = re.compile(r"""(?x)
    (?i: y | n | yes | no | true | false | on | off | null | ~ | = | <<)
  | [-+]?(?: \.inf | \.Inf | \.INF ) | \.nan | \.NaN | \.NAN
  | [-+]? [0-9][0-9_]* (?: \.[0-9_]* )? (?: [eE][-+]?[0-9]+ )?
  | [-+]? \.[0-9_]+ (?: [eE][-+]?[0-9]+ )?
  | [-+]? 0[xX][0-9a-fA-F_]+ | [-+]? 0o?[0-7_]+ | [-+]? 0b[01_]+
  | [-+]? [0-9][0-9_]* (?: :[0-5]?[0-9] )+ (?: \.[0-9_]* )?
  | [0-9]{4}-[0-9]{1,2}-[0-9]{1,2} (?: [Tt\ ].* )?
""")
_YAML_INDICATORS = "-?:,[]{}#&*!|>'\"%@`"
# Characters a YAML stream may hold as they are (PyYAML refuses the others, C1 controls
# included), less the line breaks \x85, \u2028 and \u2029, which a quoted scalar would fold.
_PRINTABLE = re.compile("[\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


# A key longer than this is written as an explicit "? key": YAML limits an implicit key
# to 1024 characters.
_SIMPLE_KEY_MAX = 1000


def _plain_ok(text: str) -> bool:
    return (bool(text) and text == text.strip() and text[0] not in _YAML_INDICATORS
            and ": " not in text and " #" not in text and not text.endswith(":")
            and all(" " <= c <= "~" for c in text)
            and not _YAML_NOT_STRING.fullmatch(text))


def _double_quoted(text: str) -> str:
    """Any text as a YAML double-quoted scalar: what a stream cannot hold as it is escaped
    (JSON's escapes where JSON has one), everything else written as it is."""
    def escape(c):
        if c in _ESCAPES:
            return _ESCAPES[c]
        if _PRINTABLE.fullmatch(c):
            return c
        return f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}"
    return '"' + "".join(escape(c) for c in text) + '"'


def yaml_scalar(value) -> str:
    """A scalar as YAML text: plain when unambiguous, else single- or double-quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))  # not through float: 2**53 + 1 stays itself
    if isinstance(value, float):
        return _float(value)
    text = str(value)
    if _plain_ok(text):
        return text
    if _PRINTABLE.fullmatch(text):
        return "'" + text.replace("'", "''") + "'"
    return _double_quoted(text)


def to_yaml(node, indent: int = 0) -> list[str]:
    """Block-style YAML lines for dicts of str keys, lists and scalars; blank lines between mappings in a list."""
    pad = " " * indent
    if not node:
        return [pad + ("{}" if isinstance(node, dict) else "[]")]
    lines: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            key = yaml_scalar(key)
            if len(key) > _SIMPLE_KEY_MAX:  # an explicit "? key" has no length limit
                lines.append(f"{pad}? {key}")
                key = ""
            if isinstance(value, (dict, list)) and value:
                lines.append(f"{pad}{key}:")
                lines += to_yaml(value, indent + 2)
            elif isinstance(value, (dict, list)):
                lines.append(f"{pad}{key}: {'{}' if isinstance(value, dict) else '[]'}")
            else:
                lines.append(f"{pad}{key}: {yaml_scalar(value)}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            if isinstance(item, (dict, list)) and item:
                if i and isinstance(item, dict):
                    lines.append("")
                sub = to_yaml(item, indent + 2)
                lines.append(f"{pad}- {sub[0][indent + 2:]}")
                lines += sub[1:]
            elif isinstance(item, (dict, list)):
                lines.append(f"{pad}- {'{}' if isinstance(item, dict) else '[]'}")
            else:
                lines.append(f"{pad}- {yaml_scalar(item)}")
    return lines
