"""Reading YAML inputs (configs, mask specs) strictly: a key given twice is an error.

PyYAML keeps the last of two equal keys without a word, so `train: {epochs: 3}` followed later
by `train: {batch_size: 8}` would silently drop the epochs. `load_yaml` refuses it instead:

    load_yaml("a: 1\\na: 2\\n")  # DuplicateKey: duplicate key 'a' on lines 1 and 2

PyYAML also follows YAML 1.1, where `1e-4` (no dot) is a string; `load_yaml`
(configs, mask specs, `--set` values) reads it as the number YAML 1.2 and users mean.
"""

from __future__ import annotations

import re

import yaml

# YAML 1.1 floats plus exponents without a dot (1e-4, 5E3): PyYAML's own pattern, extended.
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


class DuplicateKey(yaml.constructor.ConstructorError):
    """A mapping names the same key twice; the message names the key and both lines."""


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses duplicate keys in every mapping."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_line: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` merges; keys given beside it override on purpose
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = first_line.get(key)
                except TypeError:
                    continue  # an unhashable key: SafeLoader reports it itself
                if first is not None:
                    where = f"twice on line {line}" if first == line else f"on lines {first} and {line}"
                    raise DuplicateKey(None, None, f"duplicate key {key!r} {where}", key_node.start_mark)
                first_line[key] = line
        return super().construct_mapping(node, deep=deep)


UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load_yaml(text: str):
    """Parse one YAML document with the safe loader, refusing duplicate keys."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
