"""``a2o config show|docs``."""

from __future__ import annotations

import yaml

from a2o.config import config_to_dict, field_docs, load_config


def show(args) -> int:
    config = load_config(args.config, args.overrides)
    print(yaml.safe_dump(config_to_dict(config), sort_keys=False), end="")
    return 0


def docs(args) -> int:
    for key, default, doc in field_docs():
        print(f"{key} = {default!r}\n    {doc}")
    return 0
