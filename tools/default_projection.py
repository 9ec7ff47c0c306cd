"""Make a package fitted on the bundled default's base the bundled default (`make default-projection`).

It writes into the source tree's predictor/embedding/defaults, so it is a maintainer's tool and not part of the
installed package: `python -m tools.default_projection PACKAGE_DIR` after `image-search fit-projection`.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

from predictor.embedding.model_package import (
    DEFAULT_PROJECTION_RECORD,
    DEFAULTS_DIR,
    ModelSpec,
    default_base_spec,
    load_state_dict,
    resolve_spec,
)


def install_default_projection(fitted: ModelSpec) -> Path:
    """Make a package fitted on the default's base the bundled default: copy its projection into the package."""
    base = default_base_spec()

    def meaning(spec: ModelSpec) -> tuple:
        return (spec.name, spec.architecture, spec.preprocessing, spec.pooling, spec.mean, spec.std)

    import torch

    fitted_weights, base_weights = load_state_dict(fitted.weights_path), load_state_dict(base.weights_path)
    same_weights = fitted_weights.keys() == base_weights.keys() and all(
        torch.equal(tensor, base_weights[key]) for key, tensor in fitted_weights.items()
    )
    if fitted.projection is None or meaning(fitted) != meaning(base) or not same_weights:
        raise ValueError("only a projection fitted on the default's base model can become the default")
    DEFAULTS_DIR.mkdir(exist_ok=True)
    target = DEFAULTS_DIR / fitted.projection.path.name
    shutil.copyfile(fitted.projection.path, target)
    record = {"version": fitted.version, **fitted.projection.to_json()}
    record["path"] = record.pop("file")
    DEFAULT_PROJECTION_RECORD.write_text(json.dumps(record, indent=2) + "\n")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.default_projection", description=__doc__.splitlines()[0])
    parser.add_argument("package", help="A model package written by `image-search fit-projection` on the base.")
    args = parser.parse_args(argv)
    try:
        target = install_default_projection(resolve_spec(args.package))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"installed as the bundled default's projection: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
