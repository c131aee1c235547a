"""Factories found by name: the package's own, then the entry points that gpu/ and fpga_model/
register (pyproject.toml), so that mmfree_ref never imports them."""
from importlib.metadata import entry_points


def find_factory(group, name, builtins, what):
    """name -> the factory of builtins {name: factory} or of entry-point group `group`; a
    ValueError that names `what` and every available name otherwise."""
    if name in builtins:
        return builtins[name]
    found = {ep.name: ep for ep in entry_points(group=group)}
    if name not in found:
        raise ValueError(f"no {what} {name!r}: available are "
                         f"{', '.join(list(builtins) + sorted(found))}")
    return found[name].load()
