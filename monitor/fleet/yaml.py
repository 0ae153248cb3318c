"""YAML text for the rendered rules: block style, every ambiguous scalar quoted.

Written by hand so that `monitor render rules` needs no PyYAML at runtime; the tests
round-trip it through `yaml.safe_load`.
"""

import json
import re

def num(value) -> str:
    """A number as PromQL and YAML read it back: 80, 0.05, 1.5 (never 1e-05 or 80.0)."""
    value = float(value)
    if value.is_integer():
        return str(int(value))
    return format(value, ".12f").rstrip("0")



# Plain scalars YAML 1.1 or 1.2 would read as something other than a string.
_YAML_NOT_STRING = re.compile(r"""(?x)
    (?i: y | n | yes | no | true | false | on | off | null | ~ | = | <<)
  | [-+]?(?: \.inf | \.Inf | \.INF ) | \.nan | \.NaN | \.NAN
  | [-+]? [0-9][0-9_]* (?: \.[0-9_]* )? (?: [eE][-+]?[0-9]+ )?
  | [-+]? \.[0-9][0-9_]* (?: [eE][-+]?[0-9]+ )?
  | [-+]? 0[xX][0-9a-fA-F_]+ | [-+]? 0o?[0-7_]+ | [-+]? 0b[01_]+
  | [-+]? [0-9][0-9_]* (?: :[0-5]?[0-9] )+ (?: \.[0-9_]* )?
  | [0-9]{4}-[0-9]{1,2}-[0-9]{1,2} (?: [Tt\ ].* )?
""")
_YAML_INDICATORS = "-?:,[]{}#&*!|>'\"%@`"


def _plain_ok(text: str) -> bool:
    return (bool(text) and text == text.strip() and text[0] not in _YAML_INDICATORS
            and ": " not in text and " #" not in text and not text.endswith(":")
            and all(" " <= c <= "~" for c in text)
            and not _YAML_NOT_STRING.fullmatch(text))


def yaml_scalar(value) -> str:
    """A scalar as YAML text: plain when unambiguous, else single- or double-quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return num(value)
    text = str(value)
    if _plain_ok(text):
        return text
    if all(" " <= c and c != "\x7f" for c in text):
        return "'" + text.replace("'", "''") + "'"
    return json.dumps(text)  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(node, indent: int = 0) -> list[str]:
    """Block-style YAML lines for dicts of str keys, lists and scalars; blank lines between mappings in a list."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, (dict, list)) and value:
                lines.append(f"{pad}{key}:")
                lines += to_yaml(value, indent + 2)
            elif isinstance(value, (dict, list)):
                lines.append(f"{pad}{key}: {'{}' if isinstance(value, dict) else '[]'}")
            else:
                lines.append(f"{pad}{key}: {yaml_scalar(value)}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            if isinstance(item, dict) and item:
                if i:
                    lines.append("")
                sub = to_yaml(item, indent + 2)
                lines.append(f"{pad}- {sub[0][indent + 2:]}")
                lines += sub[1:]
            else:
                lines.append(f"{pad}- {yaml_scalar(item)}")
    return lines
